"""python -m benchmarks.pareto: size, speed and accuracy of several classifiers side by side, one run, 1 thread.

    python -m benchmarks.pareto [--models NAME=FP32.onnx ...] [--seed 0] [--photos 600]

For each model (its FP32 ONNX file and the INT8 file beside it, ``*-int8.onnx``):
multiply-accumulates per image and parameters (read off the FP32 graph: BatchNorm
is folded there), INT8 file size, batch-1 p50 latency and batch-256 images/s of
INT8 and FP32 through ONNX Runtime (one thread, IOBinding, as benchmarks.latency
times them; rounds alternate the models so drift hits all alike), MNIST test
accuracy of both files, and single-digit accuracy of the INT8 file on the
camera-like photos of ``benchmarks.realworld`` (the same photos for the same
``--seed``; seed 0 is the evaluation seed: never tune on it). Default models: the
shipped default and the accurate model. A graph that computes next to nothing is
timed among them: what one batch-1 call costs whatever the model.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from benchmarks.machine import cpu_info
from benchmarks.realworld import run_digits, write_files
from benchmarks.timing import ort_runner, time_calls
from export.quantize import variant_path
from export.verify import load_pixels
from runtime import DigitClassifier
from runtime.model import MODELS_DIR
from train.idx import DATA_ENV, load_split, resolve_data_dir
from train.synth_photos import generate_set

DEFAULT_MODELS = {"default": MODELS_DIR / "digits-fp32.onnx", "accurate": MODELS_DIR / "digits-accurate-fp32.onnx"}
BIG_BATCH = 256
CALL = ("call only", "fp32")


def graph_cost(path: Path) -> tuple[int, int]:
    """(multiply-accumulates per image, parameters) of an FP32 classifier graph: every Conv, Gemm and
    MatMul at batch 1, from ONNX shape inference; parameters are the float initializers."""
    model = onnx.load(str(path))
    graph = model.graph
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output, *inferred.input]}
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    macs = 0
    for node in inferred.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w.shape[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = weights[node.input[1]]
            macs += int(w.size)
    params = sum(int(w.size) for w in weights.values() if w.dtype.kind == "f")
    return macs, params


def photo_set(data_dir: Path, seed: int, n: int, directory: Path) -> tuple[list[Path], list]:
    """The single-digit photos of ``benchmarks.realworld --seed SEED``, written as it writes them."""
    images, labels = load_split(data_dir, "test")
    samples = generate_set(images, labels, n, 0, seed=seed)
    return write_files(samples, directory, seed), samples


def call_only_graph() -> bytes:
    """A graph with a classifier's input and output that computes next to nothing (flatten, keep 10 columns):
    its batch-1 time is what a call costs whatever the model, the floor under every model's batch-1 figure."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["flat"]),
         helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["logits"])], "call_only",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor(name, TensorProto.INT64, [1], [value])
         for name, value in (("starts", 0), ("ends", 10), ("axes", 1))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def speeds(models: dict[str, Path], pixels: np.ndarray, rounds: int, seconds: float) -> dict:
    """INT8 and FP32 batch-1 p50 µs and batch-256 images/s per model, and of the call-only graph."""
    blobs = {(name, p): path.read_bytes() for name, fp32 in models.items()
             for p, path in (("fp32", fp32), ("int8", variant_path(fp32, "int8")))}
    blobs[CALL] = call_only_graph()
    return side_by_side(blobs, pixels, rounds, seconds)


def side_by_side(blobs: dict, pixels: np.ndarray, rounds: int, seconds: float) -> dict:
    """Batch-1 p50 µs and batch-256 images/s of each ONNX model (key -> bytes), 1 thread; rounds rotate the order
    so that drift in the machine's speed hits every model alike."""
    runners = {key: ort_runner(str(key), blob, 1) for key, blob in blobs.items()}
    inputs = {key: {b: r.prepare(pixels[:b]) for b in (1, BIG_BATCH)} for key, r in runners.items()}
    lat = {key: [] for key in runners}
    rate = {key: [] for key in runners}
    keys = list(runners)
    for i in range(rounds):
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            r = runners[key]
            lat[key].append(time_calls(r.predict, inputs[key][1], 200, seconds, warmup=20))
            ns = time_calls(r.predict, inputs[key][BIG_BATCH], 3, seconds, warmup=1)
            rate[key].append(BIG_BATCH * len(ns) / (ns.sum() * 1e-9))
    return {key: {"b1_p50_us": float(np.median(np.concatenate(lat[key]))) / 1e3,
                  "b256_images_per_s": float(np.median(rate[key]))} for key in runners}


def test_accuracy(path: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    clf = DigitClassifier(path, threads=1)
    logits = np.concatenate([clf.predict_pixels(pixels[i:i + 1000, 0]) for i in range(0, len(pixels), 1000)])
    return float((logits.argmax(1) == labels).mean())


def measure(models: dict[str, Path], data_dir: Path, seed: int, n_photos: int, rounds: int, seconds: float) -> dict:
    pixels, labels = load_pixels(data_dir, "test")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="edge-digits-pareto-") as tmp:
        paths, samples = photo_set(data_dir, seed, n_photos, Path(tmp))
        for name, fp32 in models.items():
            int8 = variant_path(fp32, "int8")
            macs, params = graph_cost(fp32)
            photos = run_digits(DigitClassifier(int8, threads=1), paths, samples)
            rows[name] = {"fp32": str(fp32), "int8": str(int8), "macs": macs, "parameters": params,
                          "int8_bytes": int8.stat().st_size, "mnist_fp32": test_accuracy(fp32, pixels, labels),
                          "mnist_int8": test_accuracy(int8, pixels, labels), "photo_accuracy": photos["accuracy"]}
            print(f"measured {name}", file=sys.stderr)
    if rounds:
        timed = speeds(models, np.ascontiguousarray(pixels[:BIG_BATCH]), rounds, seconds)
        for name, row in rows.items():
            for p in ("fp32", "int8"):
                row.update({f"{p}_{k}": v for k, v in timed[(name, p)].items()})
    model_name, flags = cpu_info()
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": model_name, "flags": flags,
               "seed": seed, "photos": n_photos, "threads": 1, "models": rows}
    if rounds:
        results["call_only_b1_p50_us"] = timed[CALL]["b1_p50_us"]
    return results


def table(results: dict) -> str:
    lines = [f"{results['date']}, {results['cpu']} ({' '.join(results['flags'])}), 1 thread, ONNX Runtime; "
             f"photos: benchmarks.realworld --seed {results['seed']}, {results['photos']} single digits (INT8 file)",
             "",
             "| model | MACs | params | INT8 size | INT8 b1 p50 | INT8 b256 img/s | FP32 b1 p50 | FP32 b256 img/s "
             "| MNIST FP32 | MNIST INT8 | photo digits |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results["models"].items():
        def speed(key, unit="", r=r):
            return f"{r[key]:,.1f}{unit}" if key in r else "-"
        lines.append(f"| {name} | {r['macs'] / 1e6:.2f} M | {r['parameters']:,} | {r['int8_bytes'] / 1024:.1f} KiB "
                     f"| {speed('int8_b1_p50_us', ' µs')} | {speed('int8_b256_images_per_s')} "
                     f"| {speed('fp32_b1_p50_us', ' µs')} | {speed('fp32_b256_images_per_s')} "
                     f"| {100 * r['mnist_fp32']:.2f}% | {100 * r['mnist_int8']:.2f}% "
                     f"| {100 * r['photo_accuracy']:.2f}% |")
    if "call_only_b1_p50_us" in results:
        lines += ["", f"A call of a graph that computes next to nothing, same input and output: "
                      f"{results['call_only_b1_p50_us']:.1f} µs at batch 1 (part of every b1 figure above)."]
    return "\n".join(lines)


def parse_models(items: list[str] | None) -> dict[str, Path]:
    if not items:
        return dict(DEFAULT_MODELS)
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--models {item!r}: expected NAME=FP32.onnx")
        fp32 = Path(path)
        for p in (fp32, variant_path(fp32, "int8")):
            if not p.is_file():
                raise ValueError(f"{p}: no such file (each model needs its FP32 file and the INT8 file beside it)")
        models[name] = fp32
    return models


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pareto", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", metavar="NAME=FP32.onnx",
                   help="models to compare (default: the shipped default and accurate models)")
    p.add_argument("--seed", type=int, default=0, help="photo set (0: the benchmark's evaluation seed)")
    p.add_argument("--photos", type=int, default=600, help="single-digit photos")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds (each times every model once)")
    p.add_argument("--seconds", type=float, default=0.3, help="least seconds per timing block")
    p.add_argument("--no-timing", action="store_true", help="accuracy only (selection runs on tuning seeds)")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--json-out", help="also write the figures as JSON")
    args = p.parse_args(argv)
    try:
        models = parse_models(args.models)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = measure(models, resolve_data_dir(args.data_dir), args.seed, args.photos,
                      0 if args.no_timing else args.rounds, args.seconds)
    print(table(results))
    print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
