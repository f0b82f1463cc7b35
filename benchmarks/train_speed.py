"""Training benchmark: recipes side by side, in one run on this machine.

    python -m benchmarks.train_speed [--recipes reference fast best] [--threshold 0.99]

Each recipe trains in its own `python -m train` process with --log-test, so the
test accuracy is recorded every --eval-interval iterations (reporting only: it
never steers training). "Time to X%" is the training time (optimisation steps,
evaluation excluded, for every recipe alike) at the first evaluation at or
above the threshold; its resolution is one evaluation interval.

Run it on a quiet machine: the share of CPU time other processes took during
each recipe is printed beside its figures (two CPU-bound processes on 2 cores
slow small-batch training several-fold, the small model more than the big).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .machine import OtherLoad


def run_recipe(recipe: str, out: Path, eval_interval: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "train", "--recipe", recipe, "--log-test", "--eval-interval", str(eval_interval),
           "--out", str(out), *extra]
    print("$", " ".join(cmd), flush=True)
    load = OtherLoad()
    load.start()
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return {"recipe": recipe, "wall_seconds": wall, "other_load": load.stop(), **metrics}


def summarise(run: dict, threshold: float) -> dict:
    s = run["summary"]
    reached = next((p for p in run["eval"] if p["test_accuracy"] >= threshold), None)
    return {
        "recipe": run["recipe"], "arch": run["config"]["arch"], "parameters": s["parameters"],
        "epochs": s["epochs"], "seconds_per_epoch": s["train_seconds"] / s["epochs"],
        "time_to_threshold": reached["train_seconds"] if reached else None,
        "epochs_to_threshold": reached["epoch"] if reached else None,
        "final_test_accuracy": s["test_accuracy"], "val_accuracy": s["val_accuracy"],
        "train_seconds": s["train_seconds"], "wall_seconds": run["wall_seconds"], "other_load": run["other_load"],
    }


def table(rows: list[dict], threshold: float) -> str:
    base = rows[0]["time_to_threshold"]
    lines = [f"| recipe | arch | params | epochs | s/epoch | time to {100 * threshold:.1f}% test | speed-up vs {rows[0]['recipe']} "
             "| final test acc. (best val. weights) | train s | process wall s | CPU used by other processes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["time_to_threshold"]
        reached = f"{t:.1f} s (epoch {r['epochs_to_threshold']:.2f})" if t is not None else "not reached"
        ratio = f"{base / t:.1f}x" if t and base else "-"
        others = "-" if r["other_load"] is None else f"{100 * r['other_load']:.0f}%"
        lines.append(f"| {r['recipe']} | {r['arch']} | {r['parameters']:,} | {r['epochs']:.2f} | {r['seconds_per_epoch']:.1f} "
                     f"| {reached} | {ratio} | {100 * r['final_test_accuracy']:.2f}% | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {others} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["reference", "fast"])
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--out", type=Path, help="keep runs here (default: a temporary directory)")
    p.add_argument("--json-out", type=Path)
    args, extra = p.parse_known_args(argv)  # anything else goes to every `python -m train`
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        rows = [summarise(run_recipe(r, root / r, args.eval_interval, extra), args.threshold) for r in args.recipes]
    print()
    print(table(rows, args.threshold))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
