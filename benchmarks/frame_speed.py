"""The frame pipeline, side by side with another checkout's, in one run.

    python -m benchmarks.frame_speed --against /path/to/other/checkout [--repeats 40] [--seed 0]

Times, on the same photos and in alternation (so that a busy, shared machine
slows both alike), this checkout's runtime and the one in ``--against``:
a 640x480 JPEG of one digit end to end (read, preprocess, inference), the
same for a 640x480 number photo, a 4000x3000 JPEG of one digit, and the
headless webcam loop on a 640x480 video of single digits. The photos are
the first digit and number of ``benchmarks.synth_photos`` at ``--seed``
(those ``benchmarks.realworld`` times). Prints medians, the speed-up of
this checkout, and the CPU and its flags.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, type=Path, help="another checkout (e.g. a git worktree of main)")
    p.add_argument("--repeats", type=int, default=40, help="timed runs of each photo per checkout (default 40)")
    p.add_argument("--webcam-runs", type=int, default=3, help="runs of the 90-frame webcam video (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    args = p.parse_args(argv)
    impls = {"this": load_runtime(REPO, "runtime_this"), "other": load_runtime(args.against.resolve(), "runtime_other")}
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
    model, flags = cpu_info()
    print(f"CPU: {model}; flags: {' '.join(flags) or 'none of interest'}; OpenCV threads {cv2.getNumThreads()}; "
          f"inference 1 thread; this: {REPO}, other: {args.against}")
    print("\n| measure | this | other | speed-up of this |\n| --- | --- | --- | --- |")
    for name in runs["this"]:
        a, b = (statistics.median(times[k][name]) for k in ("this", "other"))
        if name == "webcam":
            print(f"| webcam loop, headless 640x480, single digits | {a:.0f} FPS | {b:.0f} FPS | {a / b:.2f}x |")
        else:
            print(f"| {name}, end to end (median of {len(times['this'][name])}) | {1000 * a:.2f} ms | "
                  f"{1000 * b:.2f} ms | {b / a:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
