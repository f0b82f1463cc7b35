"""python -m train: train a digit CNN and write checkpoint, metrics and plots."""
from __future__ import annotations

import argparse
import os
import sys

from . import distributed
from .checkpoint import CheckpointError
from .config import DEFAULT_RECIPE, RECIPES, TrainConfig
from .files import sigterm_as_interrupt
from .idx import DATASETS, DataError
from .models import ARCHS
from .reader import train_reader
from .styles import STYLES_HELP
from .trainer import Interrupted, pick_device, train


def parse_args(argv=None) -> argparse.Namespace:
    return parser().parse_args(argv)


def given_on_command_line(argv: list[str]) -> dict:
    """The settings the command line names itself (not the defaults): what --resume must not silently drop."""
    p = parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return {k: v for k, v in vars(p.parse_args(argv)).items() if k not in ("resume", "nproc", "out_dir")}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, default=DEFAULT_RECIPE,
                   help="preset of all settings below; flags override it")
    p.add_argument("--arch", choices=ARCHS, help="architecture")
    p.add_argument("--widths", type=int, nargs=3, metavar="C", help="edge architecture: channels of its three stages")
    p.add_argument("--depth", type=int, help="edge architecture: convolutions in stages 2 and 3")
    p.add_argument("--stride", type=int, choices=[2, 4], help="reader: input columns per output step")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="(peak) learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["constant", "onecycle"])
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random per-image affine jitter")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--outliers", type=float,
                   help="images that are not one digit (touching digits, parts of digits) per digit in a batch, "
                        "trained toward a flat distribution")
    p.add_argument("--outlier-weight", type=float, help="weight of the outlier loss")
    p.add_argument("--cut-pieces", type=float,
                   help="digits cut out of touching pairs (as the runtime cuts numbers) per digit in a batch")
    p.add_argument("--photo-crops", metavar="NPZ", nargs="+",
                   help="files of labelled model inputs cut out of photos by the runtime (python -m train.photo_crops)")
    p.add_argument("--photo-share", type=float, help="photo crops per digit in a batch")
    p.add_argument("--photo-rows", metavar="NPZ", nargs="+",
                   help="reader: files of rows cut out of photos by the runtime (python -m train.photo_rows); "
                        "their share of a batch is --photo-share")
    p.add_argument("--bend", type=float, help="reader: share of training digits bent by a smooth random field")
    p.add_argument("--styles", type=float, help=STYLES_HELP)
    p.add_argument("--init", metavar="CHECKPOINT", help="start from this checkpoint's weights (same architecture)")
    p.add_argument("--teacher", metavar="ONNX",
                   help="distil this classifier ONNX file (e.g. runtime/models/digits-accurate-fp32.onnx): its "
                        "soft targets on every batch")
    p.add_argument("--distill", type=float, help="weight of the distillation loss (the label loss gets 1 - it)")
    p.add_argument("--temperature", type=float, help="distillation temperature")
    p.add_argument("--head", type=int, help="edge architecture: channels of a conv after the last pooling (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-dir",
                   help="directory with the four IDX files (default: $EDGE_DIGITS_DATA, then ./data/MNIST/raw)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download with torchvision when the files are absent")
    p.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N images only (0 = all)")
    p.add_argument("--eval-interval", type=int,
                   help="iterations between validation runs (default: the recipe's, else 100)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many evaluations without validation improvement (0 = off)")
    p.add_argument("--log-test", action="store_true",
                   help="also record test accuracy at each evaluation (reporting only, never steers)")
    p.add_argument("--out", dest="out_dir", default="runs/latest", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with its own settings (--device may change; "
                        "any other flag that differs is refused)")
    p.add_argument("--nproc", type=int, default=1,
                   help="training processes on this machine (started by torchrun's machinery); --batch-size "
                        "stays the global batch. Under torchrun itself leave it at 1")
    p.add_argument("--sync-bn", action="store_true",
                   help="several CUDA processes: BatchNorm statistics over the global batch (SyncBatchNorm)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    arch_keys = ("widths", "depth", "stride", "head")
    overrides = {k: v for k, v in vars(args).items() if k not in ("recipe", "resume", *arch_keys)}
    cfg = TrainConfig.from_recipe(args.recipe, **overrides)
    for key in arch_keys:
        if getattr(args, key) is not None:
            cfg.arch_config = {**cfg.arch_config, key: getattr(args, key)}
    return cfg


def without_nproc(argv: list[str]) -> list[str]:
    """The command line each started process gets: this one without --nproc."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.nproc != 1:
        if args.nproc < 1 or "WORLD_SIZE" in os.environ:
            print(f"error: --nproc {args.nproc}: give 1 or more, and leave it out under torchrun", file=sys.stderr)
            return 1
        try:  # before any process starts: torchrun would report a failed rank, not why
            distributed.check_gpus(args.nproc, pick_device(args.device))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return distributed.launch(args.nproc, without_nproc(argv))
    world = distributed.from_env()  # this process's rank under torchrun
    try:
        cfg = config_from_args(args)
        if cfg.arch == "reader" and world.distributed:
            raise ValueError("the row reader trains on one process (no torchrun, no --nproc)")
        with sigterm_as_interrupt():  # while writing results too: no temporary file left behind
            trainer = train_reader if cfg.arch == "reader" else train
            summary = trainer(cfg, resume=args.resume, given=given_on_command_line(argv))
    except Interrupted as e:
        if world.main:
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside the training loop (loading data, writing results)
        print("interrupted: no partial file written", file=sys.stderr)
        return 130
    except (DataError, CheckpointError, ValueError) as e:
        if world.main or not getattr(e, "shared", False):  # an error all ranks share is told once
            print(f"error{f' (rank {world.rank})' if world.distributed else ''}: {e}", file=sys.stderr)
        return 1
    if not world.main:
        return 0
    print(f"\ndone in {summary['train_seconds']:.1f} s of training ({summary['epochs']:.2f} epochs, "
          f"{summary['parameters']:,} parameters)")
    print(f"  best validation accuracy {100 * summary['val_accuracy']:.2f}% at iteration {summary['best_iteration']}")
    print(f"  test accuracy            {100 * summary['test_accuracy']:.2f}%")
    if "clean_5_digit_row_accuracy" in summary:
        print(f"  clean 5-digit test rows  {100 * summary['clean_5_digit_row_accuracy']:.2f}%")
    confusion = "" if cfg.arch == "reader" else ", confusion.png"
    print(f"  wrote best.pt, metrics.json, curves.png{confusion} to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
