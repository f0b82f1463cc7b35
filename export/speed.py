"""python -m export.speed: PyTorch eager, ONNX FP32 and ONNX INT8 timed side by side in one process.

Batch 1 on 1 thread (median per-image latency) and batch 256 on 2 threads
(images per second). Engines are measured in interleaved rounds so that a
burst of load from other processes hits all of them alike; latency is the
median over rounds, throughput the best round (other load only ever slows
a round down). A quick check of the export's choices, not the project's
benchmark suite (benchmarks/).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from train.checkpoint import CheckpointError, load, load_model
from train.idx import DataError

from .data import load_pixels, resolve_data_dir
from .errors import ExportError
from .onnx_model import INPUT_NAME, wrap

Runner = Callable[[np.ndarray], object]


def ort_runner(path: str | Path, threads: int) -> Runner:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's C++ exceptions
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
    return lambda x: session.run(None, {INPUT_NAME: x})


def torch_runner(module: torch.nn.Module) -> Runner:
    def run(x: np.ndarray):
        with torch.inference_mode():
            return module(torch.from_numpy(x))
    return run


def latency_us(run: Runner, images: np.ndarray, count: int = 300) -> float:
    """Median latency of one image, each call on a different real image."""
    for i in range(20):
        run(images[i:i + 1])
    times = []
    for i in range(count):
        x = images[i % len(images):i % len(images) + 1]
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def throughput(run: Runner, batch: np.ndarray, repeats: int = 8) -> float:
    run(batch)
    best = min(timed(run, batch) for _ in range(repeats))
    return len(batch) / best


def timed(run: Runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    run(x)
    return time.perf_counter() - start


def measure(checkpoint: str, models: dict[str, str], data_dir: str | None, rounds: int = 5,
            batch_size: int = 256, batch_threads: int = 2) -> dict:
    ckpt = load(checkpoint)
    module = wrap(ckpt, load_model(ckpt, checkpoint))
    pixels, _ = load_pixels(resolve_data_dir(data_dir), "test")
    images, batch = pixels[:1000], pixels[:batch_size]
    single = {"pytorch": torch_runner(module), **{k: ort_runner(p, 1) for k, p in models.items()}}
    multi = {"pytorch": torch_runner(module), **{k: ort_runner(p, batch_threads) for k, p in models.items()}}
    lat = {k: [] for k in single}
    thr = {k: [] for k in single}
    threads = torch.get_num_threads()
    try:
        for _ in range(rounds):
            torch.set_num_threads(1)  # torch's thread count is global; ORT's is per session
            for name in single:
                lat[name].append(latency_us(single[name], images))
            torch.set_num_threads(batch_threads)
            for name in multi:
                thr[name].append(throughput(multi[name], batch))
    finally:
        torch.set_num_threads(threads)
    return {"batch1_threads1_p50_us": {k: statistics.median(v) for k, v in lat.items()},
            f"batch{batch_size}_threads{batch_threads}_images_per_s": {k: max(v) for k, v in thr.items()},
            "rounds": rounds}


def markdown(result: dict) -> str:
    lat = result["batch1_threads1_p50_us"]
    thr_key = next(k for k in result if k.endswith("_images_per_s"))
    thr = result[thr_key]
    batch, threads = (int("".join(c for c in part if c.isdigit())) for part in thr_key.split("_")[:2])
    lines = [f"| engine | batch 1, 1 thread: p50 | vs PyTorch | batch {batch}, {threads} threads | vs ONNX FP32 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name in lat:
        vs_fp32 = f"{thr[name] / thr['fp32']:.2f}x" if "fp32" in thr else "-"
        lines.append(f"| {name} | {lat[name]:.1f} µs | {lat['pytorch'] / lat[name]:.2f}x | "
                     f"{thr[name]:,.0f} img/s | {vs_fp32} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the checkpoint the models were exported from (PyTorch eager baseline)")
    p.add_argument("models", nargs="+", metavar="NAME=MODEL.onnx", help="e.g. fp32=runs/x/digits-fp32.onnx")
    p.add_argument("--data-dir")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (Path(m).stem, m) for m in args.models)
    try:
        result = measure(args.checkpoint, models, args.data_dir, args.rounds)
    except (CheckpointError, DataError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(result))
    if args.json:
        from .files import write_text
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
