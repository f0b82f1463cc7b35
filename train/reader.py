"""Training the row reader (``python -m train --recipe reader``): synthetic rows, CTC loss, exact-row accuracy.

The reader (train.models.RowReader) reads a whole row of digits at once; its
training rows are made on the fly from the training split (train/rows.py),
optionally mixed with rows the runtime itself cut out of synthetic photos
(``--photo-rows``, docs/FORMATS.md). Validation rows come from the held-out
part of the training split, test rows from the MNIST test set only; both are
made once per run from fixed seeds, so every evaluation sees the same rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, plots
from .config import TrainConfig
from .data import DataError, load_splits
from .files import atomic_output, clean_stale_temps
from .idx import resolve_data_dir
from .models import RowReader, build_model, count_parameters
from .rows import ROW_HEIGHT, RowBatch, RowMaker
from .trainer import OUTPUTS, Interrupted, autocast, make_optimizer, pick_device, resumed_config, stop_requests

DIGITS_PER_ROW = 4.6  # mean of train.rows.DIGIT_COUNTS: an "epoch" shows each training digit about once
EVAL_ROWS = 2000
CLEAN_ROW_DIGITS = 5
TEST_ROWS_SEED = 12345  # one set of test rows for every reader, whatever its training seed
BLANK = 10  # index of the CTC blank: after the ten digits


@dataclass
class ReaderState:
    """Where a reader run stands; saved in resume.pt on interruption."""

    step: int = 0
    train_seconds: float = 0.0
    best_val: float = -1.0
    best_step: int = 0
    best_state: dict | None = None
    history: dict = field(default_factory=lambda: {"train": [], "eval": []})


def ctc_loss(logits: torch.Tensor, batch: RowBatch) -> torch.Tensor:
    """Mean over rows of the CTC loss per target digit (a row with no digit counts as one)."""
    log_probs = F.log_softmax(logits.float(), 2).transpose(0, 1)  # [T, B, C]
    steps = output_lengths(batch.widths, logits.shape[1], output_stride(batch.images.shape[3], logits.shape[1]))
    loss = F.ctc_loss(log_probs, batch.targets, steps, batch.lengths, blank=BLANK, reduction="none",
                      zero_infinity=True)
    return (loss / batch.lengths.clamp(min=1)).mean()


def output_stride(width: int, steps: int) -> int:
    """Input columns per output step, from a batch's width and the steps the reader gave for it."""
    return width // steps


def output_lengths(widths: torch.Tensor, steps: int, stride: int) -> torch.Tensor:
    """Output steps that cover each row's ``widths`` columns (the rest read the batch's padding)."""
    return torch.clamp(torch.div(widths + stride - 1, stride, rounding_mode="floor"), max=steps)


def greedy_decode(logits: torch.Tensor, widths: torch.Tensor, stride: int) -> list[str]:
    """Best path: the likeliest class per step, repeats merged, blanks dropped."""
    best = logits.argmax(2).cpu()
    out = []
    for row, n in zip(best, output_lengths(widths, logits.shape[1], stride).tolist()):
        path = row[:n].tolist()
        out.append("".join(str(c) for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1])))
    return out


@torch.no_grad()
def read_rows(model, batches: list[RowBatch], cfg: TrainConfig, device) -> list[str]:
    model.eval()
    texts = []
    for b in batches:
        with autocast(device):
            texts += greedy_decode(model(normalise(b.images, cfg)), b.widths, model.stride)
    return texts


def exact(model, batches: list[RowBatch], cfg, device) -> float:
    truth = [t for b in batches for t in b.texts()]
    return float(np.mean([a == b for a, b in zip(read_rows(model, batches, cfg, device), truth)]))


def normalise(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return ((images - cfg.mean) / cfg.std).contiguous(memory_format=torch.channels_last)


def fixed_rows(maker: RowMaker, rows: int, seed: int, batch: int = 250, **kwargs) -> list[RowBatch]:
    """``rows`` rows in batches of ``batch``, the same for a given seed (every evaluation sees the same rows)."""
    gen = torch.Generator().manual_seed(seed)
    return [maker.batch(min(batch, rows - i), gen, **kwargs) for i in range(0, rows, batch)]


class PhotoRows:
    """Rows the runtime cut out of synthetic photos (docs/FORMATS.md, "Photo rows"), mixed into batches."""

    def __init__(self, paths: list[str], device):
        parts = [load_photo_rows(p) for p in paths]
        width = max(p[0].shape[2] for p in parts)
        padded = [F.pad(torch.from_numpy(im), (0, width - im.shape[2])) for im, _, _ in parts]
        self.images = torch.cat(padded).to(device)
        self.widths = torch.from_numpy(np.concatenate([w for _, w, _ in parts])).long().to(device)
        self.texts = [t for _, _, texts in parts for t in texts]

    def sample(self, count: int, gen: torch.Generator) -> RowBatch:
        pick = torch.randint(len(self.texts), (count,), generator=gen)
        widths = self.widths[pick.to(self.widths.device)]
        images = self.images[pick.to(self.images.device)][:, :, :int(widths.max())].float().div(255).unsqueeze(1)
        texts = [self.texts[i] for i in pick.tolist()]
        targets = torch.tensor([int(c) for t in texts for c in t], dtype=torch.int64, device=images.device)
        lengths = torch.tensor([len(t) for t in texts], dtype=torch.int64, device=images.device)
        return RowBatch(images, widths, targets, lengths)


def load_photo_rows(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, widths, texts = z["images"], z["widths"], [str(t) for t in z["texts"]]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a photo-rows file ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != ROW_HEIGHT or len(widths) != len(images) \
            or len(texts) != len(images) or not all(t.isdigit() or t == "" for t in texts):
        raise DataError(f"{path}: expected images uint8 [N, {ROW_HEIGHT}, W], N widths and N digit strings")
    return images, widths, texts


def join(a: RowBatch, b: RowBatch) -> RowBatch:
    width = max(a.images.shape[3], b.images.shape[3])
    width += -width % RowReader.WIDTH_MULTIPLE
    pad = lambda x: F.pad(x, (0, width - x.shape[3]))  # noqa: E731
    return RowBatch(torch.cat([pad(a.images), pad(b.images)]), torch.cat([a.widths, b.widths]),
                    torch.cat([a.targets, b.targets]), torch.cat([a.lengths, b.lengths]))


def train_reader(cfg: TrainConfig, resume: bool = False, given: dict | None = None) -> dict:
    out = Path(cfg.out_dir)
    clean_stale_temps(out, OUTPUTS)  # of a run killed while writing
    resume_path = out / "resume.pt"
    saved = checkpoint.load_file(resume_path) if resume else None
    if saved is not None:
        if not all(k in saved for k in ("config", "model", "optimizer", "scheduler", "generator", "state")):
            raise checkpoint.CheckpointError(f"{resume_path}: not a row reader's resume state")
        cfg = resumed_config(saved["config"], given or {}, cfg, resume_path)  # changed settings are refused
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    splits = load_splits(resolve_data_dir(cfg.data_dir, cfg.dataset, cfg.download), cfg.dataset, cfg.val_size,
                         cfg.seed, cfg.styles).to(device)
    if cfg.train_subset:
        splits.train_x, splits.train_y = splits.train_x[:cfg.train_subset], splits.train_y[:cfg.train_subset]
    maker = RowMaker(splits.train_x, splits.train_y, bend=cfg.bend)
    val = validation_rows(splits, cfg.seed)
    photo = PhotoRows(cfg.photo_rows, device) if cfg.photo_rows else None

    model = build_model(cfg.arch, **cfg.arch_config)
    if cfg.init and saved is None:
        init_from(model, cfg.init)
    model = model.to(device, memory_format=torch.channels_last)
    steps_per_epoch = max(1, round(len(splits.train_x) / (cfg.batch_size * DIGITS_PER_ROW)))
    total = cfg.epochs * steps_per_epoch
    opt, sched = make_optimizer(model, cfg, total)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = ReaderState()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["generator"])
        state = ReaderState(**saved["state"])
        print(f"resuming from {resume_path} at step {state.step}")
    print(f"reader recipe: {count_parameters(model):,} parameters on {device}, {len(splits.train_x):,} training "
          f"digits, {total} steps of {cfg.batch_size} rows" + (f" ({cfg.photo_share:.0%} photo rows)" if photo else ""))

    with stop_requests() as stop:
        run_steps(cfg, model, opt, sched, gen, maker, photo, val, device, state, total, stop)
        if stop["signal"]:
            checkpoint.save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "generator": gen.get_state(),
                             "state": asdict(state)}, resume_path)
            raise Interrupted(f"{stop['signal']} at step {state.step}: state saved to {resume_path}; "
                              f"continue with --resume --out {out}")
    return finish(cfg, model, splits, device, state, steps_per_epoch, out, resume_path)


def init_from(model: torch.nn.Module, path: str) -> None:
    """Start from a reader checkpoint's weights: every tensor of the same name and shape (a reader
    with another output stride keeps the backbone and learns its own head)."""
    theirs = checkpoint.load(path)["state_dict"]
    ours = model.state_dict()
    taken = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    model.load_state_dict({**ours, **taken})
    left = sorted(set(ours) - set(taken))
    print(f"init from {path}: {len(taken)} of {len(ours)} tensors" + (f" (new: {', '.join(left)})" if left else ""))


def run_steps(cfg, model, opt, sched, gen, maker, photo, val, device, state: ReaderState, total: int, stop) -> None:
    n_photo = round(cfg.photo_share * cfg.batch_size) if photo else 0
    bar = tqdm(total=total, initial=state.step, unit="it", dynamic_ncols=True, leave=False, disable=None)
    tick = time.perf_counter()
    running = []
    try:
        while state.step < total and not stop["signal"]:
            batch = maker.batch(cfg.batch_size - n_photo, gen)
            if n_photo:
                batch = join(batch, photo.sample(n_photo, gen))
            model.train()
            with autocast(device):
                loss = ctc_loss(model(normalise(batch.images, cfg)), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            state.step += 1
            running.append(loss.detach())
            if state.step % 10 == 0:
                state.history["train"].append({"iteration": state.step, "loss": torch.stack(running).mean().item()})
                bar.set_postfix(loss=f"{state.history['train'][-1]['loss']:.3f}", val=f"{max(state.best_val, 0):.3f}")
                running = []
            bar.update(1)
            if state.step % cfg.eval_interval == 0 or state.step == total:
                state.train_seconds += time.perf_counter() - tick
                evaluate(cfg, model, val, device, state)
                tick = time.perf_counter()
    finally:
        bar.close()


def evaluate(cfg, model, val: list[RowBatch], device, state: ReaderState) -> None:
    accuracy = exact(model, val, cfg, device)
    state.history["eval"].append({"iteration": state.step, "train_seconds": round(state.train_seconds, 1),
                                  "val_accuracy": accuracy})
    tqdm.write(f"step {state.step}: validation exact rows {accuracy:.2%} ({state.train_seconds:.0f} s of training)")
    if accuracy > state.best_val:
        state.best_val, state.best_step = accuracy, state.step
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def validation_rows(splits, seed: int) -> list[RowBatch]:
    """The rows a run selects its best step on (held-out training digits), the same for a given seed."""
    return fixed_rows(RowMaker(splits.val_x, splits.val_y), min(EVAL_ROWS, 4 * len(splits.val_x)), seed + 1)


def test_rows(splits, seed: int = TEST_ROWS_SEED) -> dict[str, list[RowBatch]]:
    """The test sets every reader is scored on (MNIST test digits only)."""
    maker = RowMaker(splits.test_x, splits.test_y)
    return {"test_row_accuracy": fixed_rows(maker, EVAL_ROWS, seed),
            "clean_5_digit_row_accuracy": fixed_rows(maker, EVAL_ROWS, seed + 1, effects=False,
                                                     count=CLEAN_ROW_DIGITS)}


def finish(cfg, model, splits, device, state: ReaderState, steps_per_epoch: int, out: Path, resume_path: Path) -> dict:
    model.load_state_dict(state.best_state)
    summary = {"val_accuracy": state.best_val, "best_iteration": state.best_step, "iterations": state.step,
               "epochs": round(state.step / steps_per_epoch, 3), "train_seconds": round(state.train_seconds, 2),
               "parameters": count_parameters(model)}
    summary.update({name: exact(model, rows, cfg, device) for name, rows in test_rows(splits).items()})
    summary["test_accuracy"] = summary["test_row_accuracy"]
    model_cpu = model.to("cpu", memory_format=torch.contiguous_format)
    ckpt = checkpoint.make_checkpoint(model_cpu, cfg.arch, cfg.arch_config, mean=cfg.mean, std=cfg.std,
                                      classes=splits.classes, dataset=cfg.dataset, train_config=asdict(cfg),
                                      metrics=summary, input_spec=reader_input(model_cpu.stride))
    checkpoint.save(ckpt, out / "best.pt")
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "summary": summary, **state.history}, indent=1))
    plots.curves(state.history, out / "curves.png", title="reader recipe (row accuracy)")
    resume_path.unlink(missing_ok=True)
    return summary


def reader_input(stride: int) -> dict:
    """The checkpoint's ``input`` entry for a reader (docs/FORMATS.md)."""
    return {"shape": [1, ROW_HEIGHT, -1], "range": [0.0, 1.0], "polarity": "light-on-dark",
            "task": "row-reader", "stride": stride, "blank": BLANK}
