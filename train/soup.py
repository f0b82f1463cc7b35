"""Average the weights of row readers fine-tuned from one start (a "model soup", Wortsman et al. 2022).

    python -m train.soup --out runs/soup/best.pt A/best.pt B/best.pt C/best.pt

Readers fine-tuned from the same checkpoint stay in one basin of the loss,
so their mean is a reader too, and often a better one than each: for the
shipped reader, the start and two fine-tunes of it read more photos than any
of the three (docs/EXPERIMENTS.md). The soup's metrics are measured anew on
the rows ``train --recipe reader`` scores (validation and test rows); its
training time and steps are the ingredients' sums.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import torch

from . import checkpoint
from .config import TrainConfig
from .data import DataError, load_splits
from .idx import DATA_ENV, resolve_data_dir
from .reader import exact, test_rows, validation_rows


def average(ckpts: list[dict]) -> dict[str, torch.Tensor]:
    """The mean of every float tensor (BatchNorm's running statistics too); counters from the first."""
    first = ckpts[0]["state_dict"]
    return {k: torch.stack([c["state_dict"][k] for c in ckpts]).mean(0) if v.is_floating_point() else v
            for k, v in first.items()}


def make_soup(paths: list[str], data_dir: str | None = None) -> dict:
    ckpts = [checkpoint.load(p) for p in paths]
    first = ckpts[0]
    for path, c in zip(paths[1:], ckpts[1:]):
        if (c["arch"], c["arch_config"]) != (first["arch"], first["arch_config"]):
            raise checkpoint.CheckpointError(f"{path}: architecture {c['arch']} {c['arch_config']} differs from "
                                             f"{paths[0]}'s {first['arch']} {first['arch_config']}")
    if first["arch"] != "reader":
        raise checkpoint.CheckpointError(f"{paths[0]}: a {first['arch']!r} checkpoint; soups are made of readers")
    soup = dict(first, state_dict=average(ckpts))
    model = checkpoint.load_model(soup)
    settings = first["train_config"]
    while settings.get("soup_of"):  # a soup of soups: the settings of its first trained reader
        settings = settings["soup_of"][0]
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in settings.items() if k in known})
    cfg.data_dir = data_dir or cfg.data_dir
    device = torch.device("cpu")
    splits = load_splits(resolve_data_dir(cfg.data_dir, cfg.dataset, False), cfg.dataset, cfg.val_size, cfg.seed)
    metrics = {"val_accuracy": exact(model, validation_rows(splits, cfg.seed), cfg, device),
               **{name: exact(model, rows, cfg, device) for name, rows in test_rows(splits).items()},
               "iterations": sum(c["metrics"]["iterations"] for c in ckpts),
               "epochs": round(sum(c["metrics"].get("epochs", 0) for c in ckpts), 3),
               "train_seconds": round(sum(c["metrics"]["train_seconds"] for c in ckpts), 2),
               "parameters": first["metrics"]["parameters"]}
    metrics["test_accuracy"] = metrics["test_row_accuracy"]
    soup["metrics"] = metrics
    # The soup's own settings are its ingredients': each one's, under soup_of (the model card lists them).
    soup["train_config"] = {"recipe": first["train_config"].get("recipe"),
                            "soup_of": [dict(c["train_config"], checkpoint=p) for p, c in zip(paths, ckpts)]}
    return soup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="reader checkpoints fine-tuned from one start")
    p.add_argument("--out", required=True, help="the soup's checkpoint")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    args = p.parse_args(argv)
    try:
        soup = make_soup(args.checkpoints, args.data_dir)
    except (checkpoint.CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    checkpoint.save(soup, args.out)
    m = soup["metrics"]
    print(f"wrote {args.out}: mean of {len(args.checkpoints)} readers; validation {m['val_accuracy']:.2%}, "
          f"test rows {m['test_row_accuracy']:.2%}, clean 5-digit rows {m['clean_5_digit_row_accuracy']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
