"""Training benchmark: recipes side by side, in one run on this machine.

    python -m benchmarks.train_speed [--recipes reference fast best] [--threshold 0.99]
    python -m benchmarks.train_speed --nproc 1 2      # the fast recipe on 1 and on 2 processes (torchrun, Gloo)

With --nproc, each recipe runs once per number of processes, the cores split
evenly between them (on 2 cores: 1 process x 2 threads, then 2 processes x 1
thread), at the same global batch and number of steps (--batch-size is the
global batch): the figures and final accuracies are directly comparable.

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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.model import usable_cores

from .machine import OtherLoad, cpu_info


def run_recipe(recipe: str, out: Path, eval_interval: int, extra: list[str], nproc: int = 1,
               threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "train", "--recipe", recipe, "--log-test", "--eval-interval", str(eval_interval),
           "--out", str(out), *extra]
    if nproc > 1:
        cmd[3:3] = ["--nproc", str(nproc)]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    print("$", f"OMP_NUM_THREADS={threads}" if threads else "", " ".join(cmd), flush=True)
    load = OtherLoad()
    load.start()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return {"recipe": recipe, "nproc": nproc, "threads": threads, "wall_seconds": wall, "other_load": load.stop(),
            **metrics}


def summarise(run: dict, threshold: float) -> dict:
    s = run["summary"]
    reached = next((p for p in run["eval"] if p["test_accuracy"] >= threshold), None)
    return {
        "recipe": run["recipe"], "processes": run["nproc"], "threads_per_process": run["threads"],
        "images_per_second": s["iterations"] * run["config"]["batch_size"] / s["train_seconds"],
        "arch": run["config"]["arch"], "parameters": s["parameters"],
        "epochs": s["epochs"], "seconds_per_epoch": s["train_seconds"] / s["epochs"],
        "time_to_threshold": reached["train_seconds"] if reached else None,
        "epochs_to_threshold": reached["epoch"] if reached else None,
        "final_test_accuracy": s["test_accuracy"], "val_accuracy": s["val_accuracy"],
        "train_seconds": s["train_seconds"], "wall_seconds": run["wall_seconds"], "other_load": run["other_load"],
    }


def label(r: dict) -> str:
    if r["processes"] == 1 and not r["threads_per_process"]:
        return r["recipe"]
    return f"{r['recipe']}, {r['processes']} proc. x {r['threads_per_process']} thr."


def table(rows: list[dict], threshold: float) -> str:
    base = rows[0]["time_to_threshold"]
    lines = [f"| recipe | arch | params | epochs | s/epoch | images/s | time to {100 * threshold:.1f}% test "
             f"| speed-up vs {label(rows[0])} "
             "| final test acc. (best val. weights) | train s | process wall s | CPU used by other processes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["time_to_threshold"]
        reached = f"{t:.1f} s (epoch {r['epochs_to_threshold']:.2f})" if t is not None else "not reached"
        ratio = f"{base / t:.1f}x" if t and base else "-"
        others = "-" if r["other_load"] is None else f"{100 * r['other_load']:.0f}%"
        lines.append(f"| {label(r)} | {r['arch']} | {r['parameters']:,} | {r['epochs']:.2f} "
                     f"| {r['seconds_per_epoch']:.1f} "
                     f"| {r['images_per_second']:,.0f} | {reached} | {ratio} | {100 * r['final_test_accuracy']:.2f}% "
                     f"| {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {others} |")
    return "\n".join(lines)


def accuracy_gaps(rows: list[dict]) -> list[str]:
    """Each recipe's final test accuracy on N processes against its first run (same global batch and steps)."""
    lines, first = [], {}
    for r in rows:
        if r["recipe"] in first:
            f = first[r["recipe"]]
            gap = 100 * (r["final_test_accuracy"] - f["final_test_accuracy"])
            lines.append(f"{label(r)} vs {label(f)}: test accuracy {gap:+.2f} points "
                         f"({'within' if abs(gap) <= 0.1 else 'OUTSIDE'} 0.1 point)")
        else:
            first[r["recipe"]] = r
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", help="default: reference and fast; fast alone with --nproc")
    p.add_argument("--nproc", type=int, nargs="+",
                   help="run each recipe on each of these numbers of processes, the cores split evenly")
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--out", type=Path, help="keep runs here (default: a temporary directory)")
    p.add_argument("--json-out", type=Path)
    args, extra = p.parse_known_args(argv)  # anything else goes to every `python -m train`
    recipes = args.recipes or (["fast"] if args.nproc else ["reference", "fast"])
    cores = usable_cores()
    # Without --nproc: one process with torch's own thread count, as before.
    worlds = [(n, max(1, cores // n)) for n in args.nproc] if args.nproc else [(1, None)]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        rows = [summarise(run_recipe(r, root / (r if n == 1 and not t else f"{r}-{n}x{t}"), args.eval_interval,
                                     extra, n, t), args.threshold)
                for r in recipes for n, t in worlds]
    model, flags = cpu_info()
    print(f"\n{model}, {cores} usable cores, flags: {' '.join(flags)}")
    print(table(rows, args.threshold))
    for line in accuracy_gaps(rows):
        print(line)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
