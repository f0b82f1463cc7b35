"""python -m benchmarks.latency: one trained model in every inference format, timed on this machine.

    python -m benchmarks.latency [--quick] [--model-dir DIR]
    python -m benchmarks.latency --checkpoint best.pt --fp32 m-fp32.onnx --int8 m-int8.onnx

Formats: PyTorch eager, PyTorch compiled (TorchScript trace+freeze+optimize_for_inference,
or torch.compile when it is faster; full mode tries both), ONNX Runtime FP32 and INT8 on the
CPU; with a GPU also PyTorch eager and ONNX Runtime FP32/FP16 on CUDA. Every format takes the
same raw [0, 1] pixels: the torch formats run the checkpoint's model behind its normalisation.

What is timed is what a user's code runs: the model or session is built beforehand, the input
already sits in memory, and the call returns numpy logits (`model(x).numpy()` for torch; for
ONNX Runtime `run_with_iobinding` on input and output arrays bound once, see ort_runner). Each
call is timed alone with perf_counter_ns, after warm-up calls. The run is split into rounds; each
round times every format at every thread count once, in an order rotated from round to round,
so drift in the machine's speed hits every format alike. Latency percentiles pool the calls of
all rounds; the spread shown is the range of the per-round medians. The machine's float32 peak
(best large matrix product) is measured in the same rounds, on the same thread counts.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from runtime.model import CLASSIFIER_FILES, MODELS_DIR
from train.checkpoint import CheckpointError, load, load_model, sha256
from train.idx import DATA_ENV, DataError, load_split, resolve_data_dir

from . import machine

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR, SHIPPED = MODELS_DIR, CLASSIFIER_FILES  # one table, runtime's (export.pipeline ships by it)
DEFAULT_OUT_DIR = REPO / "benchmarks" / "results"
STARTED = time.perf_counter()


@dataclass(frozen=True)
class Settings:
    rounds: int                # each round times every (format, threads) once
    latency_calls: int         # batch-1 calls per round: at least this many...
    latency_seconds: float     # ...and for at least this long
    throughput_calls: int      # calls per batch size per round: at least this many...
    throughput_seconds: float  # ...and for at least this long
    warmup_calls: int          # untimed batch-1 calls before each block (caches, thread pools, lazy init)
    accuracy_images: int       # test images for accuracy; 0 = the whole test set
    try_compile: bool          # torch.compile costs ~1 min of compilation on 2 cores: full mode only
    peak_seconds: float        # per thread count per round, for the float32 peak


MODES = {
    "full": Settings(rounds=7, latency_calls=300, latency_seconds=0.5, throughput_calls=3, throughput_seconds=0.3,
                     warmup_calls=20, accuracy_images=0, try_compile=True, peak_seconds=0.3),
    "quick": Settings(rounds=3, latency_calls=100, latency_seconds=0.1, throughput_calls=1, throughput_seconds=0.1,
                      warmup_calls=10, accuracy_images=0, try_compile=False, peak_seconds=0.2),
    # For the test suite: shows the machinery works, says nothing about speed.
    "tiny": Settings(rounds=2, latency_calls=10, latency_seconds=0.0, throughput_calls=1, throughput_seconds=0.0,
                     warmup_calls=2, accuracy_images=500, try_compile=False, peak_seconds=0.02),
}
BATCH_SIZES = (64, 256, 1024)
FLOOR_BATCH = 256
ACCURACY_BATCH = 256  # eager PyTorch is 2-3x slower per image at 1000 than at 256 (activations leave the caches)
PAUSE_BETWEEN_BLOCKS_S = 0.02  # lets the previous block's spinning pool threads (OpenMP, ORT) go idle
BUSY_WARNING = 0.05  # share of the CPUs used by other processes above which the report warns

# The floors of issue 5. Speed-ups are "how many times faster"; the accuracy drop is in points.
FLOOR_SPEEDUP_INT8_LATENCY = 6.0
FLOOR_SPEEDUP_INT8_VS_FP32 = 1.5
FLOOR_SPEEDUP_ORT_VS_EAGER = 2.0
FLOOR_MAX_ACCURACY_DROP_POINTS = 0.15


# What the investigation of a missed floor found (issue 5, AMD EPYC Zen 3: AVX2, no VNNI). Printed
# under the floors that a run misses, next to the per-node profile this run measured.
FINDINGS = {
    "int8_latency": (
        "INT8 batch-1 latency: the reference, PyTorch eager, runs batch 1 through _slow_conv2d_forward (im2col) "
        "and max_pool2d_with_indices (~0.7 ms), and without VNNI INT8 gains at most ~2x over FP32 per conv. "
        "A quantized first conv (1 input channel) costs ~25 µs more than a float one: QLinearConv makes it an "
        "im2col GEMM with K = 9, which the U8S8 kernel runs ~3x slower than FP32's NCHWc conv (see 'conv 1' "
        "in the profile below; the shipped model keeps it float)."),
    "int8_vs_fp32": (
        "INT8 vs FP32 throughput: without VNNI (no AVX512-VNNI/AVX-VNNI) ORT's U8S8 kernels multiply through "
        "vpmaddubsw + vpmaddwd, ~2x the float32 FMA rate at best; conv 2 and 3 reach ~1.8x over FP32 (profile "
        "below). What INT8 adds costs the rest: the float-to-uint8 boundary after the float first conv "
        "(ReorderOutput, QuantizeLinear, Transpose to NHWC: 'other ops', ~1.7 ms per 256 images) runs on one "
        "thread, so with 2 threads it weighs twice as much (quiet machine: 1.58x at 1 thread, 1.48x at 2). "
        "A quantized first conv is worse (~1.4x at 1 thread): its K = 9 GEMM is slow in INT8."),
    "ort_vs_eager": (
        "ORT FP32 vs eager: eager PyTorch spends much of a large batch in max_pool2d_with_indices and in "
        "unfused BatchNorm/ReLU passes over memory (torch.profiler); ORT fuses them into NCHWc convs."),
    "accuracy": "Accuracy: a format below the floor has a numerics problem (quantization ranges, FP16 overflow).",
}


# ------------------------------------------------------------------ models


class Normalised(nn.Module):
    """The checkpoint's model behind its normalisation: takes raw [0, 1] pixels, like the ONNX files."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, float(mean), float(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


@dataclass
class ModelFiles:
    """The files compared, each read once: every session, size and check uses these bytes, so that
    a file replaced while the benchmark runs (a new model being shipped) cannot mix two models."""
    checkpoint: Path
    checkpoint_sha256: str
    checkpoint_size: int
    onnx: dict[str, Path]    # precision -> file (only those that exist)
    blobs: dict[str, bytes]  # precision -> its bytes
    notes: list[str] = field(default_factory=list)


def newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def onnx_metadata(blob: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}


def default_checkpoint(blobs: dict[str, bytes]) -> Path | None:
    """The runs/*/best.pt the ONNX files were made from (by their checkpoint_sha256), else the newest one."""
    candidates = sorted(REPO.glob("runs/*/best.pt"))
    wanted = {onnx_metadata(b).get("checkpoint_sha256") for b in blobs.values()} - {None}
    matching = [p for p in candidates if wanted and sha256(p) in wanted]
    return newest(matching) or newest(candidates)


def glob_variant(directory: Path, precision: str) -> Path | None:
    return newest(sorted(directory.glob(f"*{precision}*.onnx")))


def onnx_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    """Flags first, then --model-dir (DIR/*fp32*.onnx, ...), then the shipped runtime/models/."""
    found: dict[str, Path | None] = {}
    for precision, path in {"fp32": args.fp32, "int8": args.int8, "fp16": args.fp16}.items():
        if path:
            found[precision] = Path(path)
        elif args.model_dir:
            found[precision] = glob_variant(Path(args.model_dir), precision)
        else:
            found[precision] = SHIPPED_DIR / SHIPPED[precision]
    return found


def resolve_models(args: argparse.Namespace) -> ModelFiles:
    found = onnx_paths(args)
    notes = [f"no {p.upper()} ONNX model ({path or 'nothing matched in ' + str(args.model_dir)}): format skipped"
             for p, path in found.items() if not (path and path.is_file()) and p != "fp16"]
    onnx_files = {p: path for p, path in found.items() if path and path.is_file()}
    blobs = {p: path.read_bytes() for p, path in onnx_files.items()}
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    elif args.model_dir:
        checkpoint = Path(args.model_dir) / "best.pt"
    else:
        checkpoint = default_checkpoint(blobs)
    if checkpoint is None:
        raise CheckpointError("no checkpoint found in runs/*/best.pt: pass --checkpoint or --model-dir")
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such file")
    digest = sha256(checkpoint)
    notes += same_model_warnings(checkpoint, digest, onnx_files, blobs)
    return ModelFiles(checkpoint, digest, checkpoint.stat().st_size, onnx_files, blobs, notes)


def same_model_warnings(checkpoint: Path, digest: str, paths: dict[str, Path], blobs: dict[str, bytes]) -> list[str]:
    """The comparison only means something if every file holds the same trained weights."""
    return [f"WARNING: {paths[p]} was not made from {checkpoint} (checkpoint_sha256 differs): not the same model"
            for p, blob in blobs.items() if onnx_metadata(blob).get("checkpoint_sha256") not in (None, digest)]


def layer_macs(model: nn.Module, example: torch.Tensor) -> list[dict]:
    """Multiply-accumulates per image of each Conv2d and Linear layer, read off a forward pass with hooks."""
    layers = []

    def conv(m: nn.Conv2d, inputs, out):
        layers.append({"layer": f"conv {m.in_channels}->{m.out_channels} ch, {out.shape[-2]}x{out.shape[-1]}",
                       "macs": out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)})

    def linear(m: nn.Linear, inputs, out):
        layers.append({"layer": f"linear {m.in_features}->{m.out_features}", "macs": out[0].numel() * m.in_features})

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(example[:1])
    for h in hooks:
        h.remove()
    return layers


# ------------------------------------------------------------------ formats


@dataclass
class Runner:
    """One format at one thread count: `predict(prepare(x))` is the call a user's code makes."""
    key: str
    threads: int
    predict: Callable[[Any], np.ndarray]
    prepare: Callable[[np.ndarray], Any]     # numpy pixels -> the input object, built before timing
    activate: Callable[[], None] = lambda: None  # process-wide settings (torch's thread count) for this block


@dataclass
class Format:
    key: str
    name: str
    file: Path
    size: int
    device: str = "cpu"
    detail: str = ""
    runners: dict[int, Runner] = field(default_factory=dict)  # threads -> runner


def torch_runner(key: str, module: Callable, threads: int, device: str = "cpu") -> Runner:
    def predict(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if device == "cpu":
                return module(x).numpy()
            return module(x.to(device)).cpu().numpy()  # host -> device -> host: what a user pays

    return Runner(key, threads, predict, prepare=torch.from_numpy, activate=lambda: torch.set_num_threads(threads))


def ort_options(threads: int, optimized_path: Path | None = None) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one chain of ops: nothing to run in parallel
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    # Pool threads spin between ops instead of sleeping: lower latency, the usual choice when
    # inference owns the cores (ORT's default; stated so the setting is on record).
    o.add_session_config_entry("session.intra_op.allow_spinning", "1")
    o.log_severity_level = 3
    if optimized_path:
        o.optimized_model_filepath = str(optimized_path)
    return o


def ort_runner(key: str, model: bytes, threads: int, provider: str = "CPUExecutionProvider") -> Runner:
    """ONNX Runtime through IOBinding: input and output arrays bound once, as a latency-minded user does
    (each new frame is written into the bound input array). Plain `session.run` costs 5-8 µs more per
    call here, as it builds the feed dict and allocates the output every time."""
    session = ort.InferenceSession(model, ort_options(threads), providers=[provider])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    classes = out.shape[-1]

    def prepare(x: np.ndarray) -> tuple:
        x = np.ascontiguousarray(x)
        logits = np.empty((len(x), classes), np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(inp.name, x)
        binding.bind_output(out.name, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        return binding, logits, x  # x kept alive: the binding points into it

    def predict(prepared: tuple) -> np.ndarray:
        binding, logits, _ = prepared
        session.run_with_iobinding(binding)
        return logits

    return Runner(key, threads, predict, prepare)


def torchscript(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace, freeze (weights become constants, BatchNorm folds into conv) and let oneDNN take the convs."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example)))


def inductor(module: nn.Module, examples: list[torch.Tensor]) -> Callable:
    """torch.compile (Inductor, C++ kernels), compiled here for every batch size the benchmark uses."""
    import torch._inductor.config as inductor_config

    # Inductor bakes torch.get_num_threads() into its C++ kernels unless told to read it at run time:
    # without this the "1 thread" runs would use the thread count of the compile.
    inductor_config.cpp.dynamic_threads = True
    inductor_config.freezing = True  # weights as constants: BN folding, pre-packed oneDNN conv weights
    compiled = torch.compile(module)
    with torch.inference_mode():
        for x in examples:
            compiled(x)
    return compiled


def quick_score(module: Callable, x1: torch.Tensor, x256: torch.Tensor, threads: int) -> dict:
    """Batch-1 1-thread p50 and batch-256 all-threads time of a candidate: enough to rank two of them."""
    torch.set_num_threads(1)
    r1 = torch_runner("trial", module, 1)
    lat = np.median(time_calls(r1.predict, x1, 200, 0.2, 20))
    torch.set_num_threads(threads)
    big = np.median(time_calls(r1.predict, x256, 3, 0.2, 1))
    return {"batch1_p50_us": lat / 1e3, "batch256_ms": big / 1e6}


def choose_compiled(module: nn.Module, pixels: np.ndarray, settings: Settings,
                    threads: int) -> tuple[str, Callable, dict]:
    """Build every compiled path that works, time each briefly, keep the faster. Returns (label, module, report)."""
    x1, x256 = torch.from_numpy(pixels[:1]), torch.from_numpy(pixels[:FLOOR_BATCH])
    builders = {"TorchScript trace+freeze+optimize_for_inference": lambda: torchscript(module, x1)}
    if settings.try_compile:
        shapes = [x1] + [torch.from_numpy(pixels[:b]) for b in (*BATCH_SIZES, ACCURACY_BATCH)]
        builders["torch.compile (Inductor, freezing)"] = lambda: inductor(module, shapes)
    built, report = {}, {}
    for label, build in builders.items():
        start = time.perf_counter()
        try:
            built[label] = build()
        except Exception as e:  # a compiler failure of any kind means: this path does not work here
            report[label] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
            continue
        report[label] = {"build_seconds": round(time.perf_counter() - start, 1)}
    if not built:
        raise RuntimeError(f"no compiled PyTorch path works: {report}")
    if len(built) > 1:
        for label, m in built.items():
            report[label].update(quick_score(m, x1, x256, threads))
    best = min(built, key=lambda k: math.sqrt(report[k].get("batch1_p50_us", 1) * report[k].get("batch256_ms", 1)))
    report[best]["chosen"] = True
    return best, built[best], report


def build_formats(files: ModelFiles, module: nn.Module, pixels: np.ndarray, thread_counts: list[int],
                  settings: Settings, notes: list[str]) -> tuple[list[Format], dict]:
    eager = Format("torch_eager", "PyTorch eager", files.checkpoint, files.checkpoint_size)
    label, compiled, compile_report = choose_compiled(module, pixels, settings, max(thread_counts))
    short = "TorchScript" if label.startswith("TorchScript") else "torch.compile"
    fast = Format("torch_compiled", f"PyTorch {short}", files.checkpoint, files.checkpoint_size, detail=label)
    for t in thread_counts:
        eager.runners[t] = torch_runner(eager.key, module, t)
        fast.runners[t] = torch_runner(fast.key, compiled, t)
    formats = [eager, fast]
    for precision in ("fp32", "int8"):
        if precision in files.onnx:
            f = Format(f"ort_{precision}", f"ORT {precision.upper()}", files.onnx[precision],
                       size=len(files.blobs[precision]))
            f.runners = {t: ort_runner(f.key, files.blobs[precision], t) for t in thread_counts}
            formats.append(f)
    formats += cuda_formats(files, module, max(thread_counts), notes)
    return formats, compile_report


def cuda_formats(files: ModelFiles, module: nn.Module, threads: int, notes: list[str]) -> list[Format]:
    """With a GPU: PyTorch eager and ORT FP32/FP16 on CUDA, run once (the host thread count hardly matters)."""
    found = []
    if torch.cuda.is_available():
        f = Format("torch_eager_cuda", "PyTorch eager CUDA", files.checkpoint, files.checkpoint_size, device="cuda")
        f.runners[threads] = torch_runner(f.key, copy.deepcopy(module).cuda(), threads, device="cuda")
        found.append(f)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        for precision in ("fp32", "fp16"):
            if precision in files.onnx:
                f = Format(f"ort_{precision}_cuda", f"ORT {precision.upper()} CUDA", files.onnx[precision],
                           size=len(files.blobs[precision]), device="cuda")
                f.runners[threads] = ort_runner(f.key, files.blobs[precision], threads, "CUDAExecutionProvider")
                found.append(f)
    else:
        notes.append("FP16: measured on CUDA only (ONNX Runtime's CPU kernels have no fast FP16 path); "
                     "no CUDAExecutionProvider here, so no FP16 row")
    return found


# ------------------------------------------------------------------ timing


def time_calls(predict: Callable, x: Any, min_calls: int, min_seconds: float, warmup: int) -> np.ndarray:
    """Nanoseconds of each call, after `warmup` untimed calls; at least min_calls and min_seconds."""
    for _ in range(warmup):
        predict(x)
    times = []
    deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
    while len(times) < min_calls or time.perf_counter_ns() < deadline:
        start = time.perf_counter_ns()
        predict(x)
        times.append(time.perf_counter_ns() - start)
    return np.array(times, dtype=np.int64)


@dataclass
class Samples:
    """Everything measured for one runner over all rounds."""
    latency_ns: list[np.ndarray] = field(default_factory=list)               # one array per round
    images_per_s: dict[int, list[float]] = field(default_factory=dict)        # batch -> one value per round


def time_block(runner: Runner, inputs: dict[int, Any], samples: Samples, settings: Settings, first_round: bool) -> None:
    """One round of one runner: batch-1 latency, then throughput at each batch size.

    Big batches are warmed up in the first round only: the warm-up is there for one-time work
    (lazy initialisation, first allocations); at batch 1024 a warm-up call per round would
    double the cost of the slowest format for nothing.
    """
    runner.activate()
    samples.latency_ns.append(time_calls(runner.predict, inputs[1], settings.latency_calls,
                                         settings.latency_seconds, settings.warmup_calls))
    for batch in BATCH_SIZES:
        ns = time_calls(runner.predict, inputs[batch], settings.throughput_calls, settings.throughput_seconds,
                        warmup=int(first_round))
        samples.images_per_s.setdefault(batch, []).append(batch * len(ns) / (ns.sum() * 1e-9))


def run_rounds(formats: list[Format], pixels: np.ndarray, thread_counts: list[int],
               settings: Settings) -> tuple[dict[tuple[str, int], Samples], dict[int, float]]:
    """All rounds; returns samples per (format key, threads) and the best peak FLOP/s per thread count."""
    runners = [r for f in formats for r in f.runners.values()]
    inputs = {id(r): {b: r.prepare(np.ascontiguousarray(pixels[:b])) for b in (1, *BATCH_SIZES)} for r in runners}
    samples = {(r.key, r.threads): Samples() for r in runners}
    peaks = {t: 0.0 for t in thread_counts}
    for i in range(settings.rounds):
        start = time.perf_counter()
        for t in thread_counts:
            peaks[t] = max(peaks[t], machine.peak_flops(t, settings.peak_seconds))
        shift = i % len(runners)
        for r in runners[shift:] + runners[:shift]:
            time.sleep(PAUSE_BETWEEN_BLOCKS_S)
            time_block(r, inputs[id(r)], samples[(r.key, r.threads)], settings, first_round=i == 0)
        progress(f"round {i + 1}/{settings.rounds} took {time.perf_counter() - start:.1f} s")
    return samples, peaks


def accuracy(fmt: Format, pixels: np.ndarray, labels: np.ndarray) -> float:
    runner = fmt.runners[max(fmt.runners)]
    runner.activate()
    predicted = np.concatenate([runner.predict(runner.prepare(np.ascontiguousarray(pixels[i:i + ACCURACY_BATCH])))
                                for i in range(0, len(pixels), ACCURACY_BATCH)]).argmax(1)
    return float((predicted == labels).mean())


# ------------------------------------------------------------------ figures


def percentiles(ns: np.ndarray) -> dict:
    us = ns / 1e3
    return {"p50": float(np.percentile(us, 50)), "p90": float(np.percentile(us, 90)),
            "p99": float(np.percentile(us, 99)), "mean": float(us.mean()), "calls": int(len(us))}


def summarise(samples: Samples, macs: int, peak_flops: float | None) -> dict:
    lat = percentiles(np.concatenate(samples.latency_ns))
    round_p50 = [float(np.median(r)) / 1e3 for r in samples.latency_ns]
    lat["p50_per_round_min_max"] = [min(round_p50), max(round_p50)]
    peak_macs = peak_flops / 2 if peak_flops else None
    out = {"latency_us": lat, "throughput": {}}
    for batch, values in [(1, [1e6 / v for v in round_p50]), *samples.images_per_s.items()]:
        med = float(np.median(values))
        out["throughput"][str(batch)] = {
            "images_per_s": med, "per_round_min_max": [min(values), max(values)],
            "mac_per_s": med * macs, "peak_share": med * macs / peak_macs if peak_macs else None}
    return out


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def lookup(results: dict, key: str, threads: str, batch: int) -> float | None:
    """Batch-1 p50 in µs (batch 1) or images/s at `batch`, of one format at one thread count; None if absent."""
    for f in results["formats"]:
        if f["key"] == key and threads in f["timings"]:
            timing = f["timings"][threads]
            return timing["latency_us"]["p50"] if batch == 1 else timing["throughput"][str(batch)]["images_per_s"]
    return None


def check(id: str, name: str, value: float | None, floor: float, lower_is_better: bool = False) -> dict:
    met = None if value is None else (value <= floor + 1e-9 if lower_is_better else value >= floor)
    return {"id": id, "name": name, "value": value, "floor": floor, "lower_is_better": lower_is_better, "met": met}


def floor_checks(results: dict) -> list[dict]:
    """The four floors of issue 5 (the throughput ones at every thread count measured)."""
    threads = sorted({t for f in results["formats"] for t in f["timings"]}, key=int)
    eager_p50, int8_p50 = (lookup(results, k, "1", 1) for k in ("torch_eager", "ort_int8"))
    checks = [check("int8_latency", "ORT INT8 vs PyTorch eager, batch-1 latency p50, 1 thread",
                    ratio(eager_p50, int8_p50), FLOOR_SPEEDUP_INT8_LATENCY)]
    b = FLOOR_BATCH
    for t in threads:
        checks.append(check("int8_vs_fp32", f"ORT INT8 vs ORT FP32, batch-{b} throughput, {t} thread(s)",
                            ratio(lookup(results, "ort_int8", t, b), lookup(results, "ort_fp32", t, b)),
                            FLOOR_SPEEDUP_INT8_VS_FP32))
    for t in threads:
        checks.append(check("ort_vs_eager", f"ORT FP32 vs PyTorch eager, batch-{b} throughput, {t} thread(s)",
                            ratio(lookup(results, "ort_fp32", t, b), lookup(results, "torch_eager", t, b)),
                            FLOOR_SPEEDUP_ORT_VS_EAGER))
    accuracy = {f["key"]: f["accuracy"] for f in results["formats"]}
    drop = max(100 * (accuracy["torch_eager"] - a) for a in accuracy.values())
    checks.append(check("accuracy", "largest accuracy drop vs PyTorch FP32 (points)", drop,
                        FLOOR_MAX_ACCURACY_DROP_POINTS, lower_is_better=True))
    return checks


# ------------------------------------------------------------------ output


def share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def fmt_us(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_rate(entry: dict) -> str:
    lo, hi = entry["per_round_min_max"]
    half_range = (hi - lo) / 2 / entry["images_per_s"]
    return f"{entry['images_per_s']:,.0f} ±{half_range:.0%}"


def model_table(results: dict) -> str:
    base = next(f["accuracy"] for f in results["formats"] if f["key"] == "torch_eager")
    n = results["accuracy_images"]
    lines = [f"| format | file | size | params | MACs/image | test accuracy ({n:,} images) | vs PyTorch FP32 |",
             "|---|---|---|---|---|---|---|"]
    for f in results["formats"]:
        lines.append(f"| {f['name']} | {Path(f['file']).name} | {f['file_bytes'] / 1024:.0f} KiB | {f['parameters']:,} "
                     f"| {f['macs_per_image'] / 1e6:.2f} M | {100 * f['accuracy']:.2f}% "
                     f"| {100 * (f['accuracy'] - base):+.2f} pt |")
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    head = " | ".join(f"img/s b{b}" for b in BATCH_SIZES)
    lines = [f"| format | threads | b1 p50 µs (round range) | b1 p90 µs | b1 p99 µs | {head} "
             f"| GMAC/s b{FLOOR_BATCH} | % of fp32 peak b1 / b{FLOOR_BATCH} |",
             "|---|---|---|---|---|" + "---|" * len(BATCH_SIZES) + "---|---|"]
    for f in results["formats"]:
        for t, s in f["timings"].items():
            lat, thr = s["latency_us"], s["throughput"]
            lo, hi = lat["p50_per_round_min_max"]
            shares = [thr[str(b)]["peak_share"] for b in (1, FLOOR_BATCH)]
            peak_text = " / ".join(f"{100 * x:.1f}%" if x is not None else "n/a" for x in shares)
            lines.append(f"| {f['name']} | {t} | {fmt_us(lat['p50'])} ({fmt_us(lo)}–{fmt_us(hi)}) "
                         f"| {fmt_us(lat['p90'])} "
                         f"| {fmt_us(lat['p99'])} | " + " | ".join(fmt_rate(thr[str(b)]) for b in BATCH_SIZES)
                         + f" | {thr[str(FLOOR_BATCH)]['mac_per_s'] / 1e9:.1f} | {peak_text} |")
    return "\n".join(lines)


def floor_lines(checks: list[dict]) -> list[str]:
    lines = []
    for c in checks:
        verdict = {True: "met", False: "NOT met", None: "n/a (format missing)"}[c["met"]]
        unit, sign = ("", "≤") if c["lower_is_better"] else ("x", "≥")
        value = "n/a" if c["value"] is None else f"{c['value']:.2f}{unit}"
        lines.append(f"- {c['name']}: {value} (floor {sign} {c['floor']:g}{unit}): {verdict}")
    missed = dict.fromkeys(c["id"] for c in checks if c["met"] is False)
    return lines + [f"- why (investigated on AMD EPYC Zen 3, AVX2, no VNNI): {FINDINGS[i]}" for i in missed]


def header_lines(results: dict) -> list[str]:
    m, ckpt = results["machine"], results["checkpoint"]
    trials = "; ".join(f"{label}: " + (r["error"] if "error" in r else ", ".join(
        f"{k} {v:g}" for k, v in r.items() if k != "chosen")) for label, r in results["compiled"]["candidates"].items())
    return [
        f"## Inference latency and throughput ({results['mode']} mode)",
        f"Machine: {m['cpu']}, {m['cores']} cores ({' '.join(m['cpu_flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"Load: average {m['load_average_1_5_15min']} before, {results['load_average_after']} after; other processes "
        f"used {share(results['other_processes_cpu_share'])} of the CPUs while timing",
        f"Model: {ckpt['path']} ({results['arch']}, sha256 {ckpt['sha256'][:12]}); ONNX: "
        + ", ".join(f"{p} {o['path']} (sha256 {o['sha256'][:12]})" for p, o in results["onnx"].items()),
        f"Compiled PyTorch path: {results['compiled']['chosen']} (tried: {trials})",
    ]


def report(results: dict) -> str:
    peaks = ", ".join(f"{t} thread(s) {p['gflops']:.1f} GFLOP/s" for t, p in results["peak"].items())
    ops = "; ".join(f"{p.upper()}: " + ", ".join(f"{op} x{n}" for op, n in counts.items())
                    for p, counts in results["ort_ops_after_optimisation"].items())
    parts = [
        *header_lines(results), "", model_table(results), "", speed_table(results), "",
        f"Measured float32 peak (best square matmul, n in {machine.PEAK_SIZES}, torch): {peaks}. "
        "% of peak = MACs/image × images/s ÷ (FLOP/s ÷ 2); INT8 rows too are against this float32 peak.",
        f"{results['rounds']} rounds, formats in rotated order; latency percentiles pool all rounds; "
        "± is half the range of the per-round throughputs.",
        "", "Floors:", *floor_lines(results["floors"]),
    ]
    if results["ort_profile_us"]:
        parts += ["", profile_table(results)]
    parts += ["", f"ORT graphs as run (ORT_ENABLE_ALL): {ops}"]
    if results["notes"]:
        parts += ["", "Notes:", *(f"- {n}" for n in results["notes"])]
    return "\n".join(parts)


def profile_table(results: dict) -> str:
    """ORT's per-node times, FP32 beside INT8, with each conv's share of the model's MACs."""
    prof = results["ort_profile_us"]
    columns = [(b, p) for b in prof for p in prof[b]]
    convs = [layer for layer in results["layers"] if layer["layer"].startswith("conv")]
    total = sum(layer["macs"] for layer in results["layers"])
    groups = list(dict.fromkeys(g for b, p in columns for g in prof[b][p]))
    lines = ["| ORT node group (1 thread, µs per call, ORT profiler) | share of MACs | "
             + " | ".join(f"{p.upper()} b{b}" for b, p in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for g in sorted(groups, key=lambda g: (not g.startswith("conv"), g)):
        i = int(g.split()[1]) - 1 if g.startswith("conv") else None
        label = f"{g}: {convs[i]['layer']}" if i is not None and i < len(convs) else g
        mac_share = f"{convs[i]['macs'] / total:.1%}" if i is not None and i < len(convs) else ""
        cells = " | ".join(f"{prof[b][p].get(g, 0):,.0f}" for b, p in columns)
        lines.append(f"| {label} | {mac_share} | {cells} |")
    lines.append("| sum | | " + " | ".join(f"{sum(prof[b][p].values()):,.0f}" for b, p in columns) + " |")
    return "\n".join(lines)


def plot_latency(ax, results: dict) -> None:
    labels, p50, p90, colours = [], [], [], []
    for i, f in enumerate(results["formats"]):
        for t, s in f["timings"].items():
            labels.append(f"{f['name']}, {t} thr")
            p50.append(s["latency_us"]["p50"])
            p90.append(s["latency_us"]["p90"])
            colours.append(f"C{i}")
    y = np.arange(len(labels))
    ax.barh(y, p50, color=colours)
    ax.errorbar(p50, y, xerr=[np.zeros(len(y)), np.subtract(p90, p50)], fmt="none", ecolor="black", capsize=3)
    for yi, v in zip(y, p50):
        ax.text(v, yi, f" {fmt_us(v)}", va="bottom", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")  # formats differ by 10x; a few slow outliers would flatten a linear axis
    ax.set_xlabel("batch-1 latency, µs (bar: p50, whisker: to p90)")


def plot_throughput(ax, results: dict) -> None:
    for i, f in enumerate(results["formats"]):
        for t, s in f["timings"].items():
            rates = [s["throughput"][str(b)]["images_per_s"] for b in BATCH_SIZES]
            ax.plot(BATCH_SIZES, rates, marker="o", color=f"C{i}", linestyle="--" if t == "1" else "-",
                    label=f"{f['name']}, {t} thr")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.legend(fontsize=8)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    plot_latency(left, results)
    plot_throughput(right, results)
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['cores']} cores ({results['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ diagnostics


def ort_op_counts(model: bytes) -> dict[str, int]:
    """Op types in the graph ONNX Runtime actually runs (after ORT_ENABLE_ALL), e.g. whether QDQ became QLinearConv."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(model, ort_options(1, optimized), providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized)).graph
    # The domain tells ORT's own kernels apart, e.g. com.microsoft.nchwc:Conv (blocked-layout AVX2 conv).
    return dict(Counter(f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in graph.node))


def ort_node_times(model: bytes, x: np.ndarray, calls: int) -> dict[str, float]:
    """Median µs per call of each node group on 1 thread, from ONNX Runtime's own profiler.

    Convolutions are numbered in execution order (conv 1 is the one on the 28x28 input) so
    that the FP32 and INT8 graphs line up; everything else is summed into two groups.
    """
    with tempfile.TemporaryDirectory() as tmp:
        options = ort_options(1)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for _ in range(calls):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, tuple[str, list[float]]] = {}  # in execution order
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes.setdefault(e["name"], (e["args"]["op_name"], []))[1].append(e["dur"])
    groups: dict[str, float] = {}
    for op, durations in nodes.values():
        if op in ("Conv", "QLinearConv", "ConvInteger"):
            group = f"conv {sum(g.startswith('conv') for g in groups) + 1}"
        else:
            group = "max-pools" if "MaxPool" in op else "other ops"
        groups[group] = groups.get(group, 0.0) + float(np.median(durations[1:] or durations))  # 1st call: warm-up
    return groups


def ort_profiles(files: ModelFiles, pixels: np.ndarray, settings: Settings) -> dict[str, dict[str, dict]]:
    """Where the time goes inside the FP32 and INT8 sessions, at batch 1 and at the floors' batch size."""
    calls = {1: 200, FLOOR_BATCH: 6} if settings.latency_calls > 10 else {1: 3, FLOOR_BATCH: 2}
    return {str(b): {p: ort_node_times(files.blobs[p], np.ascontiguousarray(pixels[:b]), n)
                     for p in ("fp32", "int8") if p in files.blobs}
            for b, n in calls.items()}


# ------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="take DIR/best.pt, DIR/*fp32*.onnx, DIR/*int8*.onnx (and *fp16*)")
    p.add_argument("--checkpoint",
                   help="best.pt (default: the runs/*/best.pt the ONNX files came from, else the newest)")
    p.add_argument("--fp32", help=f"FP32 ONNX model (default: runtime/models/{SHIPPED['fp32']})")
    p.add_argument("--int8", help=f"INT8 ONNX model (default: runtime/models/{SHIPPED['int8']})")
    p.add_argument("--fp16", help=f"FP16 ONNX model, timed on CUDA only (default: runtime/models/{SHIPPED['fp16']})")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts to time (default: 1 and all usable cores)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="under a minute: fewer calls")
    mode.add_argument("--tiny", action="store_const", const="tiny", dest="mode",
                      help="seconds: checks the machinery only (tests), figures are meaningless")
    p.add_argument("--rounds", type=int, help="override the mode's number of rounds")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where latency.json and latency.png go")
    p.add_argument("--json-out", type=Path, help="JSON path (default: OUT_DIR/latency.json)")
    p.add_argument("--png-out", type=Path, help="chart path (default: OUT_DIR/latency.png)")
    args = p.parse_args(argv)
    args.mode = args.mode or "full"
    return args


def settings_for(args: argparse.Namespace) -> Settings:
    s = MODES[args.mode]
    return Settings(**{**asdict(s), "rounds": args.rounds}) if args.rounds else s


def load_test_set(data_dir: str | None, limit: int) -> tuple[np.ndarray, np.ndarray, bool]:
    images, labels = load_split(resolve_data_dir(data_dir), "test")
    subset = 0 < limit < len(images)
    if subset:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / np.float32(255.0))[:, None], labels.astype(np.int64), subset


def benchmark_inputs(pixels: np.ndarray) -> np.ndarray:
    """Real test digits for timing, repeated if the test set is smaller than the largest batch."""
    need = max(BATCH_SIZES)
    return np.ascontiguousarray(np.resize(pixels, (need, *pixels.shape[1:])) if len(pixels) < need else pixels[:need])


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def timed_rounds(formats: list[Format], pixels: np.ndarray, thread_counts: list[int], settings: Settings,
                 notes: list[str]) -> tuple[dict, dict, float | None]:
    """run_rounds, watching how much CPU other processes take meanwhile."""
    other_load = machine.OtherLoad()
    other_load.start()
    samples, peaks = run_rounds(formats, pixels, thread_counts, settings)
    others = other_load.stop()
    if others is not None and others > BUSY_WARNING:
        notes.insert(0, f"WARNING: other processes used {others:.0%} of the CPUs while timing: "
                        "the figures are slower and noisier than this machine is")
    return samples, peaks, others


def format_entry(f: Format, samples: dict, peaks: dict, macs: int, params: int, acc: float) -> dict:
    return {"key": f.key, "name": f.name, "device": f.device, "detail": f.detail, "file": str(f.file),
            "file_bytes": f.size, "parameters": params, "macs_per_image": macs, "accuracy": acc,
            "timings": {str(t): summarise(samples[(f.key, t)], macs, peaks[t] if f.device == "cpu" else None)
                        for t in f.runners}}


def run(args: argparse.Namespace) -> dict:
    settings = settings_for(args)
    thread_counts = sorted(set(args.threads or [1, machine.usable_cores()]))
    files = resolve_models(args)
    notes = list(files.notes)
    ckpt = load(files.checkpoint)
    model = load_model(ckpt, files.checkpoint)
    module = Normalised(model, ckpt["normalization"]["mean"], ckpt["normalization"]["std"]).eval()
    pixels, labels, subset = load_test_set(args.data_dir, settings.accuracy_images)
    timing_pixels = benchmark_inputs(pixels)
    load_before = machine.load_average()

    progress(f"building formats ({args.mode} mode)")
    formats, compile_report = build_formats(files, module, timing_pixels, thread_counts, settings, notes)
    layers = layer_macs(model, torch.from_numpy(timing_pixels[:1]))
    macs = sum(layer["macs"] for layer in layers)
    params = sum(p.numel() for p in model.parameters())
    progress(f"accuracy on {len(labels):,} test images")
    acc = {f.key: accuracy(f, pixels, labels) for f in formats}
    progress("timing")
    samples, peaks, others = timed_rounds(formats, timing_pixels, thread_counts, settings, notes)
    progress("done")
    if subset:
        notes.append(f"accuracy on the first {len(labels):,} test images only (not the whole test set)")
    if any(f.device == "cuda" for f in formats):
        notes.append("CUDA rows: input copied from host memory and logits back each call; % of peak is CPU-only")
    return {
        "schema": "edge-digits-latency/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode, "settings": asdict(settings), "rounds": settings.rounds,
        "machine": {**machine.describe(), "load_average_1_5_15min": load_before},
        "load_average_after": machine.load_average(), "other_processes_cpu_share": others,
        "checkpoint": {"path": str(files.checkpoint), "sha256": files.checkpoint_sha256}, "arch": ckpt["arch"],
        "onnx": {p: {"path": str(path), "sha256": hashlib.sha256(files.blobs[p]).hexdigest()}
                 for p, path in files.onnx.items()},
        "accuracy_images": len(labels), "accuracy_subset": subset,
        "peak": {str(t): {"gflops": peaks[t] / 1e9, "gmac_per_s": peaks[t] / 2e9} for t in thread_counts},
        "compiled": {"chosen": next(f.detail for f in formats if f.key == "torch_compiled"),
                     "candidates": compile_report},
        "formats": [format_entry(f, samples, peaks, macs, params, acc[f.key]) for f in formats],
        "layers": layers,
        "ort_ops_after_optimisation": {p: ort_op_counts(blob) for p, blob in files.blobs.items() if p != "fp16"},
        "ort_profile_us": ort_profiles(files, timing_pixels, settings),
        "notes": notes,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["floors"] = floor_checks(results)
    json_out = args.json_out or args.out_dir / "latency.json"
    png_out = args.png_out or args.out_dir / "latency.png"
    for path in (json_out, png_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=1))
    plot(results, png_out)
    print(report(results))
    print(f"\nwrote {json_out} and {png_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
