"""The frame pipeline, side by side with another checkout's, in one run.

    python -m benchmarks.frame_speed --against /path/to/other/checkout [/another ...] [--repeats 40] [--seed 0]

Times, on the same photos and in alternation (so that a busy, shared machine
slows all alike), this checkout's runtime and the ones in ``--against``:
a 640x480 JPEG of one digit end to end (read, preprocess, inference), the
same for a 640x480 number photo, a 4000x3000 JPEG of one digit, and the
headless webcam loop on a 640x480 video of single digits. The photos are
the first digit and number of ``benchmarks.synth_photos`` at ``--seed``
(those ``benchmarks.realworld`` times). Prints medians, the speed-up of
this checkout over each other one, the CPU and its flags, and the machine's load.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import cv2

from benchmarks.machine import cpu_info
from train.idx import DATA_ENV, load_split, resolve_data_dir
from train.synth_photos import generate_set

REPO = Path(__file__).resolve().parents[1]


def load_runtime(checkout: Path, name: str) -> ModuleType:
    """The ``runtime`` package of ``checkout``, imported under ``name`` (so two can live in one process)."""
    init = checkout / "runtime" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"{checkout}: no runtime/__init__.py there")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    importlib.import_module(f"{name}.webcam")
    return module


def write_inputs(directory: Path, seed: int, data_dir: str | None) -> dict[str, Path]:
    images, labels = load_split(resolve_data_dir(data_dir), "test")
    samples = generate_set(images, labels, 9, 1, seed=seed)
    digits, number = samples[:9], samples[9]

    def jpeg(name: str, image, size) -> Path:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if size[0] <= image.shape[1] else cv2.INTER_CUBIC)
        path = directory / name
        _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        path.write_bytes(buf.tobytes())
        return path

    video = directory / "webcam640x480.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(90):
        writer.write(cv2.resize(digits[i // 10].image, (640, 480), interpolation=cv2.INTER_AREA))
    writer.release()
    return {"digit 640x480 JPEG": jpeg("digit640.jpg", digits[0].image, (640, 480)),
            "number 640x480 JPEG": jpeg("number640.jpg", number.image, (640, 480)),
            "digit 4000x3000 JPEG": jpeg("digit4000.jpg", digits[0].image, (4000, 3000)),
            "webcam": video}


def measures(runtime: ModuleType, inputs: dict[str, Path]) -> dict:
    """name -> a function timing one run of it (seconds, or frames per second for the webcam)."""
    clf = runtime.DigitClassifier(threads=1)

    def digit(path):
        return lambda: clf.predictions([clf.preprocess(path)])

    def timed(f):
        def run():
            t = time.perf_counter()
            f()
            return time.perf_counter() - t
        return run

    out = {name: timed(digit(path)) for name, path in inputs.items() if name.startswith("digit")}
    out["number 640x480 JPEG"] = timed(lambda: clf.read_numbers([inputs["number 640x480 JPEG"]]))
    out["webcam"] = lambda: runtime.webcam.run(clf, str(inputs["webcam"]), display=False)["fps"]
    return out


def _commit(checkout: Path) -> str:
    """The checkout's commit, marked "+changes" when its tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + (" +changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, type=Path, nargs="+",
                   help="other checkouts (e.g. git worktrees of main and of an older commit)")
    p.add_argument("--repeats", type=int, default=40, help="timed runs of each photo per checkout (default 40)")
    p.add_argument("--webcam-runs", type=int, default=3, help="runs of the 90-frame webcam video (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    args = p.parse_args(argv)
    others = [a.resolve() for a in args.against]
    impls = {"this": load_runtime(REPO, "runtime_this")}
    impls.update({f"other {i + 1}": load_runtime(path, f"runtime_other{i}") for i, path in enumerate(others)})
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="edge-digits-frames-") as tmp:
        inputs = write_inputs(Path(tmp), args.seed, args.data_dir)
        runs = {k: measures(m, inputs) for k, m in impls.items()}
        times = {k: {name: [] for name in runs[k]} for k in impls}
        for name in runs["this"]:
            count = args.webcam_runs if name == "webcam" else args.repeats
            for k in impls:  # warm up: first call loads lazily (the reader) and fills caches
                runs[k][name]()
            for _ in range(count):
                for k in impls:
                    times[k][name].append(runs[k][name]())
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model, flags = cpu_info()
    print(f"CPU: {model}; flags: {' '.join(flags) or 'none of interest'}; {os.cpu_count()} CPUs; OpenCV threads "
          f"{cv2.getNumThreads()}; inference 1 thread; started {started}; 1-minute load average "
          f"{load_before:.2f} before, {load_after:.2f} after")
    print(f"this: {REPO} ({_commit(REPO)})")
    for i, path in enumerate(others):
        print(f"other {i + 1}: {path} ({_commit(path)})")
    names = [k for k in impls if k != "this"]
    print("\n| measure | this | " + " | ".join(names) + " | " + " | ".join(f"this vs {k}" for k in names) + " |")
    print("| --- " * (2 + 2 * len(names)) + "|")
    for name in runs["this"]:
        med = {k: statistics.median(times[k][name]) for k in impls}
        if name == "webcam":
            cells = [f"{med[k]:.0f} FPS" for k in impls] + [f"{med['this'] / med[k]:.2f}x" for k in names]
            label = "webcam loop, headless 640x480, single digits"
        else:
            cells = [f"{1000 * med[k]:.2f} ms" for k in impls] + [f"{med[k] / med['this']:.2f}x" for k in names]
            label = f"{name}, end to end (median of {len(times['this'][name])})"
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
