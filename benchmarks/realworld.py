"""Real-world benchmark of the runtime: camera-like photos, not MNIST crops.

    python -m benchmarks.realworld [--n 600] [--numbers 200] [--seed 0] [--model M]
                                   [--checkpoint best.pt] [--json-out results.json]

1. Builds a seeded set of synthetic photos from MNIST *test* digits
   (train/synth_photos.py) and writes them as real encoded files
   (mostly JPEG, some PNG incl. 16-bit and RGBA, WebP, BMP, TIFF) so that
   decoding is part of what is measured.
2. Runs the runtime's full path on them (read file, preprocess, one batched
   inference per batch; numbers: segment and read) and reports single-digit
   accuracy and whole-number exact match, beside the naive tutorial
   preprocessing (grey, resize to 28x28, invert if light).
3. Clean 28x28 MNIST test images through the full preprocessing path vs the
   model fed directly.
4. Timing: end-to-end per image for a 640x480 JPEG; webcam loop FPS
   (headless, generated 640x480 video).
5. Cold start and peak memory of ``python -m runtime classify one.jpg``, beside
   the same classification through torch from a checkpoint (``--checkpoint``;
   skipped with a message when not given).

Figures are printed as Markdown tables; ``--json-out`` writes them as JSON.
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from benchmarks.machine import cpu_info
from runtime import DigitClassifier, RuntimeInputError, preprocess_digit, read_image
from runtime.model import default_threads
from train.idx import DATA_ENV, load_split, resolve_data_dir
from train.synth_photos import Sample, generate_set

REPO = Path(__file__).resolve().parents[1]
SMALL_GROUP = "small (5-12% of a frame >= 800px)"
TIGHT_GROUP = "tight crops (0-10% margins)"
FLOORS = {"single_digit_accuracy": 0.97, "number_exact_match": 0.96, "touching": 0.93, "tiny (<200px)": 0.80,
          "overlapping 10-20%": 0.90, "clean_rows": 0.99}

TORCH_SCRIPT = r"""
import resource, sys, time
t0 = time.perf_counter()
import torch
from train.models import build_model
from runtime import preprocess_digit, read_image
torch.set_num_threads(int(sys.argv[3]))
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = build_model(ckpt["arch"], **ckpt["arch_config"])
model.load_state_dict(ckpt["state_dict"])
model.eval()
norm = ckpt["normalization"]
pixels = preprocess_digit(read_image(sys.argv[2])).pixels
x = (torch.from_numpy(pixels)[None, None] - norm["mean"]) / norm["std"]
with torch.no_grad():
    probs = torch.softmax(model(x), 1)[0]
print(ckpt["classes"][int(probs.argmax())], float(probs.max()))
"""


# ------------------------------------------------------------ the photo set


def write_files(samples: list[Sample], directory: Path, seed: int) -> list[Path]:
    """Encode every sample to a file; the format mix exercises the decoder."""
    rng = np.random.default_rng([seed, 99])
    paths = []
    for i, s in enumerate(samples):
        u = rng.random()
        image = s.image
        if u < 0.70:
            ext, data = ".jpg", _encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        elif u < 0.80:
            ext, data = ".png", _encode(".png", image)
        elif u < 0.85:
            ext, data = ".png", _encode(".png", image.astype(np.uint16) * 257)  # 16-bit
        elif u < 0.90:
            rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
            ext, data = ".png", _encode(".png", rgba)
        elif u < 0.95:
            ext, data = ".webp", _encode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 90])
        elif u < 0.98:
            ext, data = ".bmp", _encode(".bmp", image)
        else:
            ext, data = ".tiff", _encode(".tiff", image)
        path = directory / f"{i:05d}_{s.kind}{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _encode(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise RuntimeError(f"cannot encode {ext}")
    return buf.tobytes()


# ------------------------------------------------------------ accuracy


def run_digits(clf: DigitClassifier, paths: list[Path], samples: list[Sample], batch: int = 64) -> dict:
    """The runtime's full path, the CLI's own loop (DigitClassifier.classify): read, preprocess, batched
    inference, the reject rule. A photo answered "no digit found" (no ink, or below the minimum
    confidence) counts as wrong."""
    correct, failures, per_group = 0, 0, defaultdict(lambda: [0, 0])
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        outcomes = clf.classify(paths[i:i + batch])
        for s, outcome in zip(samples[i:i + batch], outcomes):
            ok = outcome.ok and outcome.result.label == s.label
            if not _apart(s):  # the small and tight sets are conditions of their own, outside the main figure
                failures += not outcome.ok
                correct += ok
            for group in _groups(s):
                per_group[group][0] += ok
                per_group[group][1] += 1
    seconds = time.perf_counter() - start
    n = sum(not _apart(s) for s in samples)
    return {"accuracy": correct / max(1, n), "n": n, "no_digit_found": failures,
            "seconds": seconds, "by_condition": {k: round(v[0] / v[1], 4) for k, v in sorted(per_group.items())},
            "by_condition_n": {k: v[1] for k, v in sorted(per_group.items())}}


def run_numbers(clf: DigitClassifier, paths: list[Path], samples: list[Sample]) -> dict:
    """The runtime's number path, the CLI's own loop (``classify --number``): read, find the rows, read them."""
    correct, failures, per_group = 0, 0, defaultdict(lambda: [0, 0])
    digits_right = digits_total = 0
    start = time.perf_counter()
    for path, s in zip(paths, samples):
        outcome, = clf.classify([path], number=True)
        reading = outcome.result.number if outcome.ok else ""
        ok = reading == s.label
        for group in [*_kind(s), *_groups(s)]:
            per_group[group][0] += ok
            per_group[group][1] += 1
        if _apart(s):  # a condition of its own, outside the figures of all sets
            continue
        failures += reading == ""
        correct += ok
        if len(reading) == len(s.label):
            digits_right += sum(a == b for a, b in zip(reading, s.label))
        digits_total += len(s.label)
    seconds = time.perf_counter() - start
    standard = per_group.get("standard rows", [0, 0])
    n = sum(not _apart(s) for s in samples)
    return {"exact_match": standard[0] / max(1, standard[1]), "n": standard[1],
            "all_sets_exact_match": correct / max(1, n),
            "all_sets_n": n, "no_digit_found": failures,
            "digits_right_when_count_right": digits_right / max(1, digits_total), "seconds": seconds,
            "by_condition": {k: round(v[0] / v[1], 4) for k, v in sorted(per_group.items())},
            "by_condition_n": {k: v[1] for k, v in sorted(per_group.items())}}


def _kind(s: Sample) -> list[str]:
    """The number's set: the standard rows (and whether two of their digits touch), the rows whose digits
    overlap by 10-20% of their width, the rows on ruled paper, or the small or tight ones."""
    if _apart(s):
        return []  # _groups names it
    if s.meta.get("overlapping"):
        return ["overlapping 10-20%"]
    if s.meta.get("ruled"):
        return ["ruled paper"]
    return ["standard rows", "touching" if any(g < 0 for g in s.meta.get("gaps", [])) else "separate"]


def run_clean_rows(clf: DigitClassifier, images: np.ndarray, labels: np.ndarray, rows: int = 1000,
                   count: int = 5) -> dict:
    """Rows of ``count`` clean MNIST test digits side by side (their 28x28 frames, no photo effects)
    through the whole number path."""
    rng = np.random.default_rng(5)
    picks = rng.integers(len(images), size=(rows, count))
    right = 0
    for ks in picks:
        row = np.pad(np.hstack([images[k] for k in ks]), 8)
        try:
            reading = clf.read_number(row).number
        except RuntimeInputError:
            reading = ""
        right += reading == "".join(str(int(labels[k])) for k in ks)
    return {"exact_match": right / rows, "n": rows, "digits_per_row": count}


def _apart(s: Sample) -> bool:
    """Whether ``s`` belongs to a set reported as a condition of its own (small or tight), outside the main figures."""
    return bool(s.meta.get("small") or s.meta.get("tight"))


def _groups(s: Sample) -> list[str]:
    if s.meta.get("small"):
        return [SMALL_GROUP]
    if s.meta.get("tight"):
        return [TIGHT_GROUP]
    w, h = s.meta["size"]
    size = "tiny (<200px)" if max(w, h) < 200 else "large (>=1000px)" if max(w, h) >= 1000 else "medium"
    return [f"pen:{s.meta['pen']}", "chalkboard" if s.meta["chalk"] else "paper", size]


def naive_tutorial(image: np.ndarray) -> np.ndarray:
    """What the tutorial did: grey, resize to 28x28, invert if light."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return 1.0 - small if small.mean() > 0.5 else small


def run_naive(clf: DigitClassifier, paths: list[Path], samples: list[Sample]) -> float:
    if not paths:
        return float("nan")
    pixels = np.stack([naive_tutorial(read_image(p)) for p in paths])
    preds = clf.predict_pixels(pixels).argmax(1)
    return float(np.mean([clf.info.classes[k] == s.label for k, s in zip(preds, samples)]))


def run_clean_mnist(clf: DigitClassifier, images: np.ndarray, labels: np.ndarray) -> dict:
    via_runtime = clf.predict_pixels(np.stack([preprocess_digit(im, clf.input_size).pixels for im in images]))
    feed = images[:, None].astype(np.float32) / 255
    direct = np.concatenate([clf.session.run([clf.info.output_name], {clf.info.input_name: feed[i:i + 1000]})[0]
                             for i in range(0, len(feed), 1000)])
    acc_runtime = float((via_runtime.argmax(1) == labels).mean())
    acc_direct = float((direct.argmax(1) == labels).mean())
    # Not a pass-through: the same digits as 4x enlarged dark-on-light "scans"
    # with noise go through the whole photo pipeline.
    rng = np.random.default_rng(0)
    sub = slice(0, 2000)
    scans = [np.clip(255 - cv2.resize(im, (112, 112), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 4, (112, 112)),
                     0, 255).astype(np.uint8) for im in images[sub]]
    rebuilt = clf.predict_pixels(np.stack([preprocess_digit(s, clf.input_size).pixels for s in scans])).argmax(1)
    return {"runtime_accuracy": acc_runtime, "model_direct_accuracy": acc_direct,
            "difference_points": round(100 * (acc_runtime - acc_direct), 3),
            "same_argmax": float((via_runtime.argmax(1) == direct.argmax(1)).mean()),
            "enlarged_scans_accuracy": float((rebuilt == labels[sub]).mean()), "n": int(len(images))}


# ------------------------------------------------------------ speed and memory


def time_end_to_end(clf: DigitClassifier, sample: Sample, directory: Path, repeats: int = 60) -> dict:
    """Median per stage for one 640x480 JPEG of ``sample``: a digit, or a number (rows, then the reader)."""
    image = cv2.resize(sample.image, (640, 480), interpolation=cv2.INTER_AREA)
    path = directory / f"{sample.kind}640x480.jpg"
    path.write_bytes(_encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90]))
    if sample.kind == "number":
        prepare, infer = clf.reader.rows, lambda rows: clf.reader.read_rows([rows])
    else:
        prepare, infer = (lambda im: preprocess_digit(im, clf.input_size)), lambda crop: clf.predictions([crop])
    stages = defaultdict(list)
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = read_image(path, grey=True)
        t1 = time.perf_counter()
        prepared = prepare(img)
        t2 = time.perf_counter()
        infer(prepared)
        t3 = time.perf_counter()
        stages["decode"].append(t1 - t0)
        stages["preprocess"].append(t2 - t1)
        stages["inference"].append(t3 - t2)
        stages["total"].append(t3 - t0)
    return {k: round(1000 * statistics.median(v), 2) for k, v in stages.items()}


def webcam_fps(clf: DigitClassifier, digits: list[Sample], numbers: list[Sample], directory: Path,
               frames: int = 90) -> dict:
    """Headless webcam loop on 640x480 videos: of digits in digit mode, of numbers in number mode."""
    from runtime.webcam import run

    fps = {}
    for mode, samples in (("digit", digits), ("number", numbers)):
        path = directory / f"webcam640x480_{mode}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
        for i in range(frames):
            writer.write(cv2.resize(samples[(i // 10) % len(samples)].image, (640, 480), interpolation=cv2.INTER_AREA))
        writer.release()
        fps[f"{mode}_fps"] = round(run(clf, str(path), number=mode == "number", display=False)["fps"], 1)
    return {**fps, "frames": frames}


LAUNCHER = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "rc": p.returncode, "stdout": p.stdout.strip()[-200:], "stderr": p.stderr.strip()[-300:]}))
"""


def measure_process(cmd: list[str]) -> dict:
    """Wall time and peak RSS of one command.

    Started from a small launcher process: on Linux a child's ru_maxrss
    starts from its parent's at fork/exec, so measuring straight from this
    benchmark (which holds the photo set in memory) would report this
    process's size instead."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=REPO, capture_output=True, text=True)
    r = json.loads(out.stdout)
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return {"wall_s": r["wall_s"], "peak_rss_mb": r["maxrss"] * scale / 2**20, "rc": r["rc"],
            "stdout": r["stdout"], "stderr": r["stderr"]}


def cold_start(model: str | None, checkpoint: str | None, image: Path, threads: int, repeats: int = 3) -> dict:
    """A fresh process classifying one photo, and one that only imports the runtime's libraries (its floor).
    The runtime's bytecode is compiled first, as an installed package has it: a checkout run with
    PYTHONDONTWRITEBYTECODE (as CI and this project's machines are) would otherwise time compiling its
    sources, about 35 ms."""
    compileall.compile_dir(str(REPO / "runtime"), quiet=1)
    cmd = [sys.executable, "-m", "runtime", "classify", str(image), "--threads", str(threads)]
    if model:
        cmd += ["--model", model]
    runs = [measure_process(cmd) for _ in range(repeats)]
    result = {"onnxruntime": _summarise(runs),
              "libraries": _summarise([measure_process([sys.executable, "-c", "import numpy, cv2, onnxruntime"])
                                       for _ in range(repeats)])}
    if checkpoint:
        tcmd = [sys.executable, "-c", TORCH_SCRIPT, checkpoint, str(image), str(threads)]  # run in REPO: imports
        result["torch"] = _summarise([measure_process(tcmd) for _ in range(repeats)])
    else:
        result["torch"] = None
    return result


def _summarise(runs: list[dict]) -> dict:
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
            "ok": all(r["rc"] == 0 for r in runs), "output": runs[-1]["stdout"] or runs[-1]["stderr"]}


# ------------------------------------------------------------ report


def markdown(results: dict) -> str:
    n, c, e = results["numbers"], results["clean_rows"], results["number_end_to_end_ms"]
    lines = [
        f"Models: `{results['model']['path']}` ({results['model']['precision']}), reader "
        f"`{results['model']['reader']}` ({results['model']['reader_precision']}, "
        f"{results['model']['reader_phases']} phases); {results['threads']} threads; "
        f"{results['machine']}",
        "",
        "| measure | value | floor |",
        "| --- | --- | --- |",
        f"| whole-number exact match, standard rows of 3-6 digits (n={n['n']}) | {100 * n['exact_match']:.2f}% | "
        f"{100 * FLOORS['number_exact_match']:.0f}% |",
        f"| whole-number exact match, all sets (+ overlapping, ruled paper; n={n['all_sets_n']}) | "
        f"{100 * n['all_sets_exact_match']:.2f}% | |",
        f"| clean rows of {c['digits_per_row']} MNIST test digits (n={c['n']}) | {100 * c['exact_match']:.2f}% | "
        f"{100 * FLOORS['clean_rows']:.0f}% |",
        f"| 640x480 number photo end to end (decode / rows / reader) | {e['total']:.1f} ms ({e['decode']:.1f} / "
        f"{e['preprocess']:.1f} / {e['inference']:.2f}) | |",
    ]
    if "digits" in results:
        d, cm, e1, w, cs = (results[k] for k in ("digits", "clean_mnist", "end_to_end_ms", "webcam", "cold_start"))
        lines += [
            f"| single-digit accuracy, synthetic photos (n={d['n']}) | {100 * d['accuracy']:.2f}% | "
            f"{100 * FLOORS['single_digit_accuracy']:.0f}% |",
            f"| naive tutorial preprocessing, same photos | {100 * results['naive_accuracy']:.2f}% | |",
            f"| clean MNIST test through the runtime (n={cm['n']}) | {100 * cm['runtime_accuracy']:.2f}% | "
            f"model direct {100 * cm['model_direct_accuracy']:.2f}% (diff {cm['difference_points']:+.3f} pts) |",
            f"| MNIST as 4x enlarged noisy scans, full pipeline | {100 * cm['enlarged_scans_accuracy']:.2f}% | |",
            f"| 640x480 digit photo end to end (decode / preprocess / inference) | {e1['total']:.1f} ms "
            f"({e1['decode']:.1f} / {e1['preprocess']:.1f} / {e1['inference']:.2f}) | |",
            f"| webcam loop, headless 640x480 (digit / number mode) | {w['digit_fps']:.1f} / "
            f"{w['number_fps']:.1f} FPS | |",
            f"| cold start `python -m runtime classify one.jpg` | {cs['onnxruntime']['wall_s']:.2f} s, "
            f"peak RSS {cs['onnxruntime']['peak_rss_mb']:.0f} MB (importing numpy, OpenCV and ONNX Runtime alone: "
            f"{cs['libraries']['wall_s']:.2f} s, {cs['libraries']['peak_rss_mb']:.0f} MB) | |",
        ]
        if cs["torch"]:
            lines.append(f"| same through torch (checkpoint) | {cs['torch']['wall_s']:.2f} s, "
                         f"peak RSS {cs['torch']['peak_rss_mb']:.0f} MB | |")
    lines += ["", "Breakdown (accuracy by condition):", "", "| condition | single digits | numbers | floor |",
              "| --- | --- | --- | --- |"]
    d = results.get("digits", {"by_condition": {}, "by_condition_n": {}})
    for k in sorted(set(d["by_condition"]) | set(n["by_condition"])):
        a, b = d["by_condition"].get(k), n["by_condition"].get(k)
        fa = f"{100 * a:.1f}% (n={d['by_condition_n'][k]})" if a is not None else ""
        fb = f"{100 * b:.1f}% (n={n['by_condition_n'][k]})" if b is not None else ""
        floor = f"{100 * FLOORS[k]:.0f}% (numbers)" if k in FLOORS else ""
        lines.append(f"| {k} | {fa} | {fb} | {floor} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600, help="single-digit photos (default 600)")
    p.add_argument("--numbers", type=int, default=None, help="number photos (default n/3)")
    p.add_argument("--overlapping", type=int, default=None,
                   help="number photos whose digits overlap by 10-20%% of their width (default numbers/2)")
    p.add_argument("--ruled", type=int, default=None, help="number photos on ruled paper (default numbers/4)")
    p.add_argument("--small", type=int, default=None,
                   help="digit photos and number photos with the writing 5-12%% of a big frame's height (default "
                        "numbers/4 of each)")
    p.add_argument("--tight", type=int, default=None,
                   help="digit photos and number photos cut to the writing with 0-10%% margins (default numbers/4 of "
                        "each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped INT8 model)")
    p.add_argument("--reader", default=None, help="row-reader ONNX model (default: the shipped reader)")
    p.add_argument("--checkpoint", default=None, help="torch checkpoint for the cold-start comparison")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--json-out", default=None, help="write all figures to this JSON file")
    p.add_argument("--keep", default=None, help="keep the generated photo files in this directory")
    p.add_argument("--numbers-only", action="store_true", help="only the number figures (rows, timing)")
    args = p.parse_args(argv)
    n_numbers = args.numbers if args.numbers is not None else max(1, args.n // 3)
    n_overlapping = args.overlapping if args.overlapping is not None else n_numbers // 2
    n_ruled = args.ruled if args.ruled is not None else n_numbers // 4
    n_small = args.small if args.small is not None else n_numbers // 4
    n_tight = args.tight if args.tight is not None else n_numbers // 4
    n_digits = 0 if args.numbers_only else args.n

    clf = DigitClassifier(args.model, threads=args.threads, reader=args.reader)
    threads = args.threads or default_threads()
    images, labels = load_split(resolve_data_dir(args.data_dir), "test")

    t = time.perf_counter()
    samples = generate_set(images, labels, n_digits, n_numbers, seed=args.seed, n_overlapping=n_overlapping,
                           n_ruled=n_ruled, n_small=n_small, n_tight=n_tight)
    print(f"generated {len(samples)} photos in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    digit_samples = [s for s in samples if s.kind == "digit"]
    number_samples = [s for s in samples if s.kind == "number"]

    with tempfile.TemporaryDirectory(prefix="edge-digits-bench-") as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        paths = write_files(samples, directory, args.seed)
        digit_paths = [p for p, s in zip(paths, samples) if s.kind == "digit"]
        number_paths = [p for p, s in zip(paths, samples) if s.kind == "number"]
        standard = [i for i, s in enumerate(digit_samples) if not _apart(s)]
        results = {
            "model": {"path": str(clf.info.path), "precision": clf.info.precision,
                      "test_accuracy": clf.info.metadata.get("test_accuracy", "?"), "providers": clf.providers,
                      "reader": str(clf.reader.info.path), "reader_precision": clf.reader.info.precision,
                      "reader_phases": clf.reader.phases},
            "threads": threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                       f"{cpu_info()[0]}, CPU flags: {' '.join(cpu_info()[1]) or 'none of interest'}",
            "seed": args.seed,
        }
        results["numbers"] = run_numbers(clf, number_paths, number_samples)
        results["clean_rows"] = run_clean_rows(clf, images, labels)
        results["number_end_to_end_ms"] = time_end_to_end(clf, number_samples[0], directory)
        if not args.numbers_only:
            results["digits"] = run_digits(clf, digit_paths, digit_samples)
            results["naive_accuracy"] = run_naive(clf, [digit_paths[i] for i in standard],
                                                  [digit_samples[i] for i in standard])
            results["clean_mnist"] = run_clean_mnist(clf, images, labels)
            results["end_to_end_ms"] = time_end_to_end(clf, digit_samples[0], directory)
            results["webcam"] = webcam_fps(clf, digit_samples[:9], number_samples[:9], directory)
            results["cold_start"] = cold_start(args.model, args.checkpoint, directory / "digit640x480.jpg", threads)
    by = results["numbers"]["by_condition"]
    results["floors_met"] = {
        "number_exact_match": results["numbers"]["exact_match"] >= FLOORS["number_exact_match"],
        **{k: by.get(k, 0.0) >= FLOORS[k] for k in ("touching", "tiny (<200px)", "overlapping 10-20%")},
        "clean_rows": results["clean_rows"]["exact_match"] >= FLOORS["clean_rows"],
    }
    if not args.numbers_only:
        met = results["digits"]["accuracy"] >= FLOORS["single_digit_accuracy"]
        results["floors_met"]["single_digit_accuracy"] = met
        results["floors_met"]["clean_mnist_within_0.1_points"] = abs(results["clean_mnist"]["difference_points"]) <= 0.1
    print(markdown(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
