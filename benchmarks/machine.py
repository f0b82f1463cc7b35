"""The machine behind a benchmark's figures: CPU, cores, load, library versions, and its measured float32 peak."""
from __future__ import annotations

import importlib
import os
import platform
import time

import torch

from runtime.model import usable_cores

# CPU features that decide which kernels run: FMA/AVX2 for float, VNNI/AMX for int8 dot products.
FLAGS_OF_INTEREST = ("fma", "avx2", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
LIBRARIES = ("numpy", "torch", "onnxruntime", "onnx")
# Square float32 matrix sizes for the peak: 512 fits the caches (best on 1 core), 1024 splits
# better over several threads; the best of both is taken.
PEAK_SIZES = (512, 1024)
PEAK_SECONDS = 0.3


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the flags of interest, from /proc/cpuinfo where there is one."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    present = set(value.split())
                    flags = [f for f in FLAGS_OF_INTEREST if f in present]
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            found[name] = "not installed"
    return found


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of the machine's CPU time that OTHER processes used between start() and stop().

    Timings on a machine where something else runs are not the machine's: this says how much
    else ran, measured rather than guessed from the load average.
    """

    def start(self) -> None:
        self.busy, self.own, self.wall = busy_cpu_seconds(), self.own_seconds(), time.perf_counter()

    @staticmethod
    def own_seconds() -> float:
        # Finished child processes count as our own work (train_speed runs each recipe as one).
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> float | None:
        busy = busy_cpu_seconds()
        if busy is None or self.busy is None:
            return None
        others = (busy - self.busy) - (self.own_seconds() - self.own)
        # /proc/stat counts every core, so the share is of the whole machine, whatever our affinity.
        return max(0.0, others / ((time.perf_counter() - self.wall) * (os.cpu_count() or 1)))


def describe() -> dict:
    model, flags = cpu_info()
    return {"cpu": model, "cpu_flags": flags, "cores": usable_cores(), "platform": platform.platform(),
            "versions": versions(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1_5_15min": load_average()}


def peak_flops(threads: int, seconds: float = PEAK_SECONDS) -> float:
    return max(matmul_flops(threads, n, seconds / len(PEAK_SIZES)) for n in PEAK_SIZES)


def matmul_flops(threads: int, n: int, seconds: float = PEAK_SECONDS) -> float:
    """Best float32 FLOP/s of an n x n matrix product on `threads` threads (torch's BLAS, i.e. MKL/oneDNN).

    The best of several products, not the mean: a peak is what the machine can do
    when nothing disturbs it, and disturbances only ever slow a product down.
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: thread pool, BLAS dispatch, pages of `out`
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        start = time.perf_counter_ns()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter_ns() - start)
    return 2 * n ** 3 / (best * 1e-9)
