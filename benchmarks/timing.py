"""Timing the formats: each a Runner (the call a user's code makes), timed alone with perf_counter_ns.

Used by benchmarks.latency (the command line and its model files) and benchmarks.latency_report
(what the figures say). What is timed is what a user's code runs: the model or session is built
beforehand, the input already sits in memory, and the call returns numpy logits
(`model(x).numpy()` for torch; for ONNX Runtime `run_with_iobinding` on input and output arrays
bound once, see ort_runner). Each call is timed alone, after warm-up calls. The run is split into
rounds; each round times every format at every thread count once, in an order rotated from round
to round, so drift in the machine's speed hits every format alike; the peaks (benchmarks.peak)
are measured in the same rounds, on the same thread counts.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

if TYPE_CHECKING:
    from .peak import Peaks


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
    peak_seconds: float        # per peak kind per thread count per round (benchmarks.peak)


BATCH_SIZES = (64, 256, 1024)
FLOOR_BATCH = 256  # the batch size of the throughput floors and the profile
ACCURACY_BATCH = 256  # eager PyTorch is 2-3x slower per image at 1000 than at 256 (activations leave the caches)
PAUSE_BETWEEN_BLOCKS_S = 0.02  # lets the previous block's spinning pool threads (OpenMP, ORT) go idle


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
    peak: str | None = None  # the benchmarks.peak kind its share of peak is taken against (None: not measured)
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
    dtype = np.int32 if out.type == "tensor(int32)" else np.float32  # int32: the INT8 peak's MatMulInteger

    def prepare(x: np.ndarray) -> tuple:
        x = np.ascontiguousarray(x)
        logits = np.empty((len(x), classes), dtype)
        binding = session.io_binding()
        binding.bind_cpu_input(inp.name, x)
        binding.bind_output(out.name, "cpu", 0, dtype, list(logits.shape), logits.ctypes.data)
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


def run_rounds(formats: list[Format], pixels: np.ndarray, peaks: Peaks, settings: Settings,
               progress: Callable[[str], None]) -> dict[tuple[str, int], Samples]:
    """All rounds; returns samples per (format key, threads). `peaks` is measured once per round, first."""
    runners = [r for f in formats for r in f.runners.values()]
    inputs = {id(r): {b: r.prepare(np.ascontiguousarray(pixels[:b])) for b in (1, *BATCH_SIZES)} for r in runners}
    samples = {(r.key, r.threads): Samples() for r in runners}
    for i in range(settings.rounds):
        start = time.perf_counter()
        peaks.measure(settings.peak_seconds)
        shift = i % len(runners)
        for r in runners[shift:] + runners[:shift]:
            time.sleep(PAUSE_BETWEEN_BLOCKS_S)
            time_block(r, inputs[id(r)], samples[(r.key, r.threads)], settings, first_round=i == 0)
        progress(f"round {i + 1}/{settings.rounds} took {time.perf_counter() - start:.1f} s")
    return samples


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


def summarise(samples: Samples, macs: int, peak_ops: float | None) -> dict:
    """Latency percentiles and throughput per batch size; the share of `peak_ops` (operations per second
    of the format's own peak kind, a multiply-add counting 2) that its MACs per second reach."""
    lat = percentiles(np.concatenate(samples.latency_ns))
    round_p50 = [float(np.median(r)) / 1e3 for r in samples.latency_ns]
    lat["p50_per_round_min_max"] = [min(round_p50), max(round_p50)]
    peak_macs = peak_ops / 2 if peak_ops else None
    out = {"latency_us": lat, "throughput": {}}
    for batch, values in [(1, [1e6 / v for v in round_p50]), *samples.images_per_s.items()]:
        med = float(np.median(values))
        out["throughput"][str(batch)] = {
            "images_per_s": med, "per_round_min_max": [min(values), max(values)],
            "mac_per_s": med * macs, "peak_share": med * macs / peak_macs if peak_macs else None}
    return out


# ------------------------------------------------------------------ where the time goes inside ORT


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


def ort_profiles(blobs: dict[str, bytes], pixels: np.ndarray, settings: Settings) -> dict[str, dict[str, dict]]:
    """Where the time goes inside the FP32 and INT8 sessions, at batch 1 and at the floors' batch size."""
    calls = {1: 200, FLOOR_BATCH: 6} if settings.latency_calls > 10 else {1: 3, FLOOR_BATCH: 2}
    return {str(b): {p: ort_node_times(blobs[p], np.ascontiguousarray(pixels[:b]), n)
                     for p in ("fp32", "int8") if p in blobs}
            for b, n in calls.items()}

