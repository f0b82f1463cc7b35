"""One prepared check of every GPU path, for the day a CUDA machine is at hand.

    python -m benchmarks.gpu_check --data-dir DIR [--json-out benchmarks/results/gpu_check.json]

On a machine with CUDA (a few minutes on an H200-class GPU; --budget bounds it):

1. train: the default recipe on the GPU (train/ uses bf16 autocast and channels-last there)
   with --log-test: time to 99.0% test accuracy, final accuracy, images/s;
2. with 2 or more GPUs, the same on 2 processes (torchrun's machinery, NCCL), with and
   without --sync-bn;
3. export: the checkpoint to ONNX FP32 (export.to_onnx, checked on the CPU) and FP16
   (export.quantize.convert_fp16);
4. parity on all 10,000 test images against PyTorch float32 on the CPU (the reference of every
   export report): ONNX Runtime's CUDA provider on FP32 and FP16, PyTorch CUDA float32 and bf16;
5. latency (batch 1: median and 99th percentile) and throughput (batch 1,000) of the same four,
   input from host memory and logits back to it each call, as the runtime does.

Everything goes to one JSON file. A step that fails is recorded with its error and the
others still run; the exit status is 1 if any failed. Without CUDA it says so and exits 0
(writing a JSON file only when --json-out is given). --smoke runs every step on the CPU,
tiny and quick: what the test suite does to keep this script working until the GPU run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from train.idx import DataError, resolve_data_dir

from .machine import describe

THRESHOLD = 0.99
DEFAULT_JSON = Path(__file__).parent / "results" / "gpu_check.json"
MIN_STEP_SECONDS = 20
SMOKE_TRAIN = ["--train-subset", "2000", "--val-size", "500", "--eval-interval", "10"]


class Budget:
    """Seconds left of --budget; every subprocess gets at most what is left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def step(results: dict, name: str, fn, *args, budget: Budget | None = None, **kwargs):
    """Run one step, recording its result or its error (the other steps still run)."""
    print(f"== {name}", flush=True)
    if budget is not None and budget.left() < MIN_STEP_SECONDS:
        results[name] = {"error": f"not run: under {MIN_STEP_SECONDS} s of --budget left"}
        print(f"   SKIPPED: {results[name]['error']}", flush=True)
        return results[name]
    start = time.perf_counter()
    try:
        results[name] = fn(*args, **kwargs)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    except Exception as e:  # noqa: BLE001  a check reports every failure and goes on
        results[name] = {"error": f"{type(e).__name__}: {str(e).strip()[-1500:]}"}
        print(f"   FAILED: {results[name]['error']}", flush=True)
    return results[name]


def train_run(out: Path, data_dir: str, device: str, budget: Budget, nproc: int = 1, sync_bn: bool = False,
              smoke: bool = False) -> dict:
    cmd = [sys.executable, "-m", "train", "--recipe", "fast", "--device", device, "--log-test",
           "--eval-interval", "50", "--data-dir", data_dir, "--no-download", "--out", str(out),
           *(["--nproc", str(nproc)] if nproc > 1 else []), *(["--sync-bn"] if sync_bn else []),
           *(SMOKE_TRAIN if smoke else [])]
    print("  $", " ".join(cmd), flush=True)
    start = time.perf_counter()
    # Its own session: on a timeout the launcher and the processes it started go together.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=max(1.0, budget.left()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {log[-1500:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    reached = next((p for p in metrics["eval"] if p["test_accuracy"] >= THRESHOLD), None)
    return {"processes": nproc, "sync_bn": sync_bn, "autocast": "bf16" if device == "cuda" else "none (float32)",
            "time_to_99_seconds": reached["train_seconds"] if reached else None,
            "epochs_to_99": reached["epoch"] if reached else None,
            "train_seconds": s["train_seconds"], "process_wall_seconds": round(wall, 2),
            "images_per_second": round(s["iterations"] * metrics["config"]["batch_size"] / s["train_seconds"]),
            "test_accuracy": s["test_accuracy"], "val_accuracy": s["val_accuracy"], "iterations": s["iterations"],
            "checkpoint": str(out / "best.pt")}


def export_models(checkpoint: Path, out: Path, data_dir: str) -> dict:
    import onnx

    from export.quantize import convert_fp16
    from export.to_onnx import export_checkpoint

    fp32 = export_checkpoint(checkpoint, out / "digits-fp32.onnx", data_dir)
    fp16_path = out / "digits-fp16.onnx"
    onnx.save(convert_fp16(onnx.load(fp32.path)), fp16_path)
    return {"fp32": str(fp32.path), "fp16": str(fp16_path), "fp32_size": fp32.size,
            "fp16_size": fp16_path.stat().st_size,
            "fp32_cpu_parity": fp32.parity.as_dict(), "export_seconds": round(fp32.seconds, 2)}


# ------------------------------------------------------------------ the four GPU engines


def ort_engine(path: str, provider: str):
    import onnxruntime as ort

    from export.verify import INPUT_NAME, OUTPUT_NAME

    if provider not in ort.get_available_providers():
        raise RuntimeError(f"this onnxruntime ({ort.__version__}) has no {provider} "
                           "(install onnxruntime-gpu in place of onnxruntime)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=[provider])
    if session.get_providers()[0] != provider:  # ORT falls back to the CPU silently when CUDA libraries are missing
        raise RuntimeError(f"{provider} requested, ONNX Runtime runs on {session.get_providers()}")
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def torch_engine(module, device: str, bf16: bool):
    module = module.to(device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def predict(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).to(device, non_blocking=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            return module(t).float().cpu().numpy()

    return predict


def engines(files: dict, module, device: str, provider: str) -> dict:
    import copy
    return {f"ort_fp32_{provider}": lambda: ort_engine(files["fp32"], provider),
            f"ort_fp16_{provider}": lambda: ort_engine(files["fp16"], provider),
            f"torch_fp32_{device}": lambda: torch_engine(copy.deepcopy(module), device, bf16=False),
            f"torch_bf16_{device}": lambda: torch_engine(copy.deepcopy(module), device, bf16=True)}


def parity_and_speed(name: str, make, reference: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
                     smoke: bool) -> dict:
    from export.verify import compare

    predict = make()
    logits = np.concatenate([predict(pixels[i:i + 1000]) for i in range(0, len(pixels), 1000)])
    row = {"engine": name, "parity": compare(reference, logits, labels).as_dict()}
    one, batch = pixels[:1].copy(), pixels[:1000].copy()
    row["latency_ms"] = timings(predict, one, calls=20 if smoke else 300, warmup=5 if smoke else 50)
    t = timings(predict, batch, calls=3 if smoke else 30, warmup=1 if smoke else 5)
    row["throughput_images_per_second"] = round(len(batch) / (t["median"] / 1e3))
    return row


def timings(predict, x: np.ndarray, calls: int, warmup: int) -> dict:
    for _ in range(warmup):
        predict(x)
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        predict(x)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return {"median": round(float(np.median(times)), 4), "p99": round(float(np.percentile(times, 99)), 4),
            "calls": calls}


def inference(files: dict, checkpoint: str, data_dir: str, device: str, provider: str, smoke: bool) -> dict:
    from export.to_onnx import torch_logits, wrap
    from export.verify import load_pixels
    from train.checkpoint import load, load_model

    ckpt = load(checkpoint)
    module = wrap(ckpt, load_model(ckpt, checkpoint))
    pixels, labels = load_pixels(data_dir, "test")
    if smoke:
        pixels, labels = pixels[:2000], labels[:2000]
    reference = torch_logits(module, pixels)  # float32 on the CPU
    rows = {}
    for name, make in engines(files, module, device, provider).items():
        step(rows, name, parity_and_speed, name, make, reference, pixels, labels, smoke)
    return {"images": len(labels), "reference": "PyTorch float32 on the CPU", "engines": rows}


# ------------------------------------------------------------------ report


def table(results: dict) -> str:
    lines = ["| engine | test acc. | agreement with PyTorch CPU | max abs(logit diff) | batch-1 median / p99 ms "
             "| batch-1000 images/s |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.get("inference", {}).get("engines", {}).items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:120]} | | | | |")
            continue
        p, lat = r["parity"], r["latency_ms"]
        lines.append(f"| {name} | {100 * p['accuracy']:.2f}% | {100 * p['agreement']:.2f}% | {p['max_abs_diff']:.2g} "
                     f"| {lat['median']:.3f} / {lat['p99']:.3f} | {r['throughput_images_per_second']:,} |")
    train_lines = ["| training | processes | time to 99.0% | train s | images/s | test acc. |",
                   "|---|---:|---:|---:|---:|---:|"]
    for key in ("train", "train_2proc_nccl", "train_2proc_nccl_syncbn"):
        r = results.get(key)
        if not r:
            continue
        if "error" in r:
            train_lines.append(f"| {key} | failed: {r['error'][:120]} | | | | |")
            continue
        t = r["time_to_99_seconds"]
        reached = f"{t:.1f} s" if t is not None else "not reached"
        train_lines.append(f"| {key} ({r['autocast']}) | {r['processes']} | {reached} | {r['train_seconds']:.1f} "
                           f"| {r['images_per_second']:,} | {100 * r['test_accuracy']:.2f}% |")
    return "\n".join(train_lines + [""] + lines)


def failures(results: dict) -> list[str]:
    found = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    found += [k for k, v in results.get("inference", {}).get("engines", {}).items() if "error" in v]
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="the four MNIST IDX files (default: $EDGE_DIGITS_DATA, then ./data/MNIST/raw)")
    p.add_argument("--out", type=Path, help="keep checkpoints and ONNX files here (default: a temporary directory)")
    p.add_argument("--json-out", type=Path, help=f"results file (default on a GPU: {DEFAULT_JSON})")
    p.add_argument("--budget", type=float, default=480, help="seconds the whole check may take")
    p.add_argument("--smoke", action="store_true", help="every step on the CPU, tiny (for the test suite)")
    args = p.parse_args(argv)

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): GPU check skipped, nothing measured")
        if args.json_out:
            args.json_out.write_text(json.dumps({"skipped": "no CUDA device", "machine": describe()}, indent=1))
        return 0
    try:
        args.data_dir = str(resolve_data_dir(args.data_dir))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    device, provider = ("cpu", "CPUExecutionProvider") if args.smoke else ("cuda", "CUDAExecutionProvider")
    budget = Budget(args.budget)
    results = {"machine": describe(), "smoke": args.smoke, "threshold": THRESHOLD,
               "gpus": torch.cuda.device_count() if device == "cuda" else 0,
               "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if device == "cuda" else []}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        trained = step(results, "train", train_run, root / "train", args.data_dir, device, budget, smoke=args.smoke)
        if "checkpoint" in trained:
            files = step(results, "export", export_models, Path(trained["checkpoint"]), root, args.data_dir,
                         budget=budget)
            if "error" not in files:
                step(results, "inference", inference, files, trained["checkpoint"], args.data_dir, device, provider,
                     args.smoke, budget=budget)
        if results["gpus"] >= 2:  # last: the single-GPU figures come first if the budget runs short
            for key, sync in (("train_2proc_nccl", False), ("train_2proc_nccl_syncbn", True)):
                step(results, key, train_run, root / key, args.data_dir, device, budget, nproc=2, sync_bn=sync,
                     budget=budget)
    results["seconds_left_of_budget"] = round(budget.left(), 1)
    print()
    print(table(results))
    json_out = args.json_out or (None if args.smoke else DEFAULT_JSON)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {json_out}")
    failed = failures(results)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
