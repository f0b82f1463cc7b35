"""python -m benchmarks.int8_formats [MODEL-fp32.onnx]: which INT8 format pays on this CPU, side by side in one run.

Quantizes one FP32 classifier (default: the shipped default model) with every
preset of export.quantize.PRESETS (QDQ vs QOperator, U8S8 vs S8S8,
per-channel vs per-tensor, 7-bit vs 8-bit weights), each with the first
convolution kept float and quantized, then times FP32 and every INT8 variant
through ONNX Runtime (1 thread, IOBinding; rounds rotate the order): batch-1
p50 latency and batch-256 images/s, with MNIST test accuracy and argmax
agreement with FP32. The CPU's flags are printed beside the figures: the
preset export.quantize chooses for them (preset_for) is marked.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks.machine import cpu_info
from benchmarks.pareto import BIG_BATCH, side_by_side
from export.quantize import PRESETS, calibration_pixels, cpu_flags, preset_for, quantize_int8
from export.verify import load_pixels, onnx_logits
from runtime.model import MODELS_DIR
from train.idx import DATA_ENV, resolve_data_dir


def variants(fp32: str, data_dir) -> dict[str, bytes]:
    calibration = calibration_pixels(data_dir, 2000)
    out = {"fp32": open(fp32, "rb").read()}
    for preset in PRESETS:
        for float_first in (True, False):
            model = quantize_int8(fp32, calibration, preset=preset, float_first=float_first)
            out[f"{preset}{'' if float_first else ' +conv1'}"] = model.SerializeToString()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_formats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=str(MODELS_DIR / "digits-fp32.onnx"), help="FP32 classifier")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.3, help="least seconds per timing block")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    data_dir = resolve_data_dir(args.data_dir)
    models = variants(args.model, data_dir)
    pixels, labels = load_pixels(data_dir, "test")
    reference = onnx_logits(args.model, pixels, threads=1).argmax(1)
    timed = side_by_side(models, np.ascontiguousarray(pixels[:BIG_BATCH]), args.rounds, args.seconds)
    name, flags = cpu_info()
    chosen = preset_for(cpu_flags())
    print(f"{args.model} on {name} ({' '.join(flags)}), 1 thread, ONNX Runtime; {time.strftime('%Y-%m-%d %H:%M')} UTC")
    print(f"export.quantize chooses for this CPU: {chosen} (first convolution float)\n")
    print("| format | b1 p50 | b1 vs FP32 | b256 images/s | b256 vs FP32 | MNIST test | same answer as FP32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = timed["fp32"]
    for k, blob in models.items():
        predicted = onnx_logits(blob_model(blob), pixels, threads=1).argmax(1)
        t = timed[k]
        mark = " (chosen)" if k == chosen else ""
        b1, b256 = t["b1_p50_us"], t["b256_images_per_s"]
        print(f"| {k}{mark} | {b1:.1f} µs | {base['b1_p50_us'] / b1:.2f}x | {b256:,.0f} "
              f"| {b256 / base['b256_images_per_s']:.2f}x | {(predicted == labels).mean():.2%} "
              f"| {(predicted == reference).mean():.2%} |")
    print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


def blob_model(blob: bytes):
    import onnx

    return onnx.load_from_string(blob)


if __name__ == "__main__":
    sys.exit(main())
