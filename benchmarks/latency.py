"""python -m benchmarks.latency: one trained model in every inference format, timed on this machine.

    python -m benchmarks.latency [--quick] [--model-dir DIR]
    python -m benchmarks.latency --checkpoint best.pt --fp32 m-fp32.onnx --int8 m-int8.onnx

Formats: PyTorch eager, PyTorch compiled (TorchScript trace+freeze+optimize_for_inference,
or torch.compile when it is faster; full mode tries both), ONNX Runtime FP32 and INT8 on the
CPU; with a GPU also PyTorch eager and ONNX Runtime FP32/FP16 on CUDA. Every format takes the
same raw [0, 1] pixels: the torch formats run the checkpoint's model behind its normalisation.

How each call is timed, in rounds that rotate the formats: benchmarks.timing. Each row's share of
peak is against the peak of its own library and number type, measured in the same rounds on the
same thread counts: benchmarks.peak. Floors, tables, findings and the chart: benchmarks.latency_report.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.pipeline import CLASSIFIER_CHECKPOINT, SHIPPED_CHECKPOINTS
from export.to_onnx import wrap
from runtime.model import CLASSIFIER_FILES, MODELS_DIR
from train.checkpoint import CheckpointError, load, load_model, sha256
from train.idx import DATA_ENV, DataError, load_split, resolve_data_dir

from . import machine
from .latency_report import floor_checks, plot, report
from .peak import Peaks
from .timing import (
    BATCH_SIZES,
    Format,
    Settings,
    accuracy,
    choose_compiled,
    ort_op_counts,
    ort_profiles,
    ort_runner,
    run_rounds,
    summarise,
    torch_runner,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR, SHIPPED = MODELS_DIR, CLASSIFIER_FILES  # one table, runtime's (export.pipeline ships by it)
DEFAULT_OUT_DIR = REPO / "benchmarks" / "results"
RUNS_DIR = REPO / "runs"  # training runs: RUNS_DIR/*/best.pt
STARTED = time.perf_counter()

MODES = {
    "full": Settings(rounds=7, latency_calls=300, latency_seconds=0.5, throughput_calls=3, throughput_seconds=0.3,
                     warmup_calls=20, accuracy_images=0, try_compile=True, peak_seconds=0.3),
    "quick": Settings(rounds=3, latency_calls=100, latency_seconds=0.1, throughput_calls=1, throughput_seconds=0.1,
                      warmup_calls=10, accuracy_images=0, try_compile=False, peak_seconds=0.2),
    # For the test suite: shows the machinery works, says nothing about speed.
    "tiny": Settings(rounds=2, latency_calls=10, latency_seconds=0.0, throughput_calls=1, throughput_seconds=0.0,
                     warmup_calls=2, accuracy_images=500, try_compile=False, peak_seconds=0.02),
}
BUSY_WARNING = 0.05  # share of the CPUs used by other processes above which the report warns


# ------------------------------------------------------------------ models


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


def made_from(checkpoint: Path, digest: str) -> set[str]:
    """The checkpoint_sha256 an ONNX file made from this checkpoint carries: its own, or for a checkpoint
    rebuilt from an exported file (export.recover) the one that file was made from."""
    return {digest, load(checkpoint).get("recovered_from", {}).get("checkpoint_sha256")} - {None}


def default_checkpoint(blobs: dict[str, bytes]) -> Path | None:
    """The shipped checkpoint or runs/*/best.pt the ONNX files were made from (by their checkpoint_sha256);
    else the shipped classifier's checkpoint, else the newest runs/*/best.pt."""
    shipped = sorted({p for p in SHIPPED_CHECKPOINTS.values() if p.is_file() and load(p)["arch"] != "reader"})
    candidates = [*shipped, *sorted(RUNS_DIR.glob("*/best.pt"))]
    wanted = {onnx_metadata(b).get("checkpoint_sha256") for b in blobs.values()} - {None}
    matching = [p for p in candidates if wanted & made_from(p, sha256(p))]
    fallback = CLASSIFIER_CHECKPOINT if CLASSIFIER_CHECKPOINT.is_file() else newest(candidates)
    return matching[0] if matching else fallback


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
        raise CheckpointError(f"no checkpoint: neither {CLASSIFIER_CHECKPOINT} nor runs/*/best.pt; "
                              "pass --checkpoint or --model-dir")
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such file")
    digest = sha256(checkpoint)
    notes += same_model_warnings(checkpoint, digest, onnx_files, blobs)
    return ModelFiles(checkpoint, digest, checkpoint.stat().st_size, onnx_files, blobs, notes)


def same_model_warnings(checkpoint: Path, digest: str, paths: dict[str, Path], blobs: dict[str, bytes]) -> list[str]:
    """The comparison only means something if every file holds the same trained weights."""
    sources = made_from(checkpoint, digest)
    return [f"WARNING: {paths[p]} was not made from {checkpoint} (checkpoint_sha256 differs): not the same model"
            for p, blob in blobs.items() if onnx_metadata(blob).get("checkpoint_sha256") not in (None, *sources)]


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


def build_formats(files: ModelFiles, module: nn.Module, pixels: np.ndarray, thread_counts: list[int],
                  settings: Settings, notes: list[str]) -> tuple[list[Format], dict]:
    eager = Format("torch_eager", "PyTorch eager", files.checkpoint, files.checkpoint_size, peak="torch_fp32")
    label, compiled, compile_report = choose_compiled(module, pixels, settings, max(thread_counts))
    short = "TorchScript" if label.startswith("TorchScript") else "torch.compile"
    fast = Format("torch_compiled", f"PyTorch {short}", files.checkpoint, files.checkpoint_size, detail=label,
                  peak="torch_fp32")
    for t in thread_counts:
        eager.runners[t] = torch_runner(eager.key, module, t)
        fast.runners[t] = torch_runner(fast.key, compiled, t)
    formats = [eager, fast]
    for precision in ("fp32", "int8"):
        if precision in files.onnx:
            f = Format(f"ort_{precision}", f"ORT {precision.upper()}", files.onnx[precision],
                       size=len(files.blobs[precision]), peak=f"ort_{precision}")
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


# ------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="take DIR/best.pt, DIR/*fp32*.onnx, DIR/*int8*.onnx (and *fp16*)")
    p.add_argument("--checkpoint",
                   help=f"best.pt (default: the checkpoint the ONNX files came from, among "
                        f"{CLASSIFIER_CHECKPOINT.relative_to(REPO)} and runs/*/best.pt)")
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


def timed_rounds(formats: list[Format], pixels: np.ndarray, peaks: Peaks, settings: Settings,
                 notes: list[str]) -> tuple[dict, float | None]:
    """run_rounds, watching how much CPU other processes take meanwhile."""
    other_load = machine.OtherLoad()
    other_load.start()
    samples = run_rounds(formats, pixels, peaks, settings, progress)
    others = other_load.stop()
    if others is not None and others > BUSY_WARNING:
        notes.insert(0, f"WARNING: other processes used {others:.0%} of the CPUs while timing: "
                        "the figures are slower and noisier than this machine is")
    return samples, others


def format_entry(f: Format, samples: dict, peaks: Peaks, macs: int, params: int, acc: float) -> dict:
    return {"key": f.key, "name": f.name, "device": f.device, "detail": f.detail, "file": str(f.file),
            "file_bytes": f.size, "parameters": params, "macs_per_image": macs, "accuracy": acc, "peak": f.peak,
            "timings": {str(t): summarise(samples[(f.key, t)], macs, peaks.rate(f.peak, t)) for t in f.runners}}


def above_peak_warnings(entries: list[dict]) -> list[str]:
    """A row faster than its peak means the peak was under-measured (a disturbed run, too little work): say so."""
    return [f"WARNING: {e['name']}, {t} thread(s), batch {b} reached {s['peak_share']:.0%} of the measured "
            f"{e['peak']} peak: that peak was under-measured, so no share is shown for the row"
            for e in entries for t, timing in e["timings"].items()
            for b, s in timing["throughput"].items() if (s["peak_share"] or 0) > 1]


def run(args: argparse.Namespace) -> dict:
    settings = settings_for(args)
    thread_counts = sorted(set(args.threads or [1, machine.usable_cores()]))
    files = resolve_models(args)
    notes = list(files.notes)
    ckpt = load(files.checkpoint)
    model = load_model(ckpt, files.checkpoint)
    module = wrap(ckpt, model, files.checkpoint)  # the ONNX files' graph: raw [0, 1] pixels in
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
    peaks = Peaks(thread_counts)
    samples, others = timed_rounds(formats, timing_pixels, peaks, settings, notes)
    progress("done")
    if subset:
        notes.append(f"accuracy on the first {len(labels):,} test images only (not the whole test set)")
    if any(f.device == "cuda" for f in formats):
        notes.append("CUDA rows: input copied from host memory and logits back each call; % of peak is CPU-only")
    entries = [format_entry(f, samples, peaks, macs, params, acc[f.key]) for f in formats]
    notes += above_peak_warnings(entries)
    return {
        "schema": "edge-digits-latency/2",  # 2: peaks per library and number type
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode, "settings": asdict(settings), "rounds": settings.rounds,
        "machine": {**machine.describe(), "load_average_1_5_15min": load_before},
        "load_average_after": machine.load_average(), "other_processes_cpu_share": others,
        "checkpoint": {"path": str(files.checkpoint), "sha256": files.checkpoint_sha256}, "arch": ckpt["arch"],
        "onnx": {p: {"path": str(path), "sha256": hashlib.sha256(files.blobs[p]).hexdigest()}
                 for p, path in files.onnx.items()},
        "accuracy_images": len(labels), "accuracy_subset": subset,
        "peak": peaks.as_dict(),
        "compiled": {"chosen": next(f.detail for f in formats if f.key == "torch_compiled"),
                     "candidates": compile_report},
        "formats": entries,
        "layers": layers,
        "ort_ops_after_optimisation": {p: ort_op_counts(blob) for p, blob in files.blobs.items() if p != "fp16"},
        "ort_profile_us": ort_profiles(files.blobs, timing_pixels, settings),
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
