"""The training loop: in-memory batches, periodic validation, early stopping, interrupt and resume."""
from __future__ import annotations

import copy
import json
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, plots
from .config import TrainConfig
from .data import NOT_A_DIGIT, Splits, load_photo_crops, load_splits, random_affine, resolve_data_dir, to_input
from .files import atomic_output, clean_stale_temps
from .models import build_model, count_parameters
from .pieces import make_cut_pieces, make_outliers

LOG_INTERVAL = 10  # iterations between recorded training-loss points
POOL = 30_000  # outliers and cut pieces made once per run; augmentation varies them further


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a resumable state."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


@contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so a step is never cut in half."""
    requested = {"signal": None}

    def handler(signum, _frame):
        requested["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@torch.no_grad()
def predict(model, images, cfg: TrainConfig, device, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    preds = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size], cfg.mean, cfg.std, channels_last=True)
        with autocast(device):
            preds.append(model(x).argmax(1))
    return torch.cat(preds)


def accuracy(model, images, labels, cfg, device) -> float:
    return (predict(model, images, cfg, device) == labels).float().mean().item()


def autocast(device: torch.device):
    # bf16 autocast on CUDA needs no loss scaling; the CPU path stays in float32 for exact resumes.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def make_optimizer(model, cfg: TrainConfig, total_steps: int):
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25)
    elif cfg.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    return opt, sched


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train per ``cfg`` and write checkpoint, metrics and plots to ``cfg.out_dir``. Returns the summary."""
    out = Path(cfg.out_dir)
    resume_path = out / "resume.pt"
    state = None
    clean_stale_temps(out, OUTPUTS)  # of a run killed while writing
    if resume:
        state = load_resume_state(resume_path)
        cfg = TrainConfig(**state["config"])
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    data_dir = resolve_data_dir(cfg.data_dir, cfg.dataset, cfg.download)
    # The whole dataset lives on the training device: batches are index gathers, no loader workers.
    splits = load_splits(data_dir, cfg.dataset, cfg.val_size, cfg.seed).to(device)
    if cfg.train_subset:
        splits.train_x, splits.train_y = splits.train_x[:cfg.train_subset], splits.train_y[:cfg.train_subset]

    model = build_model(cfg.arch, num_classes=len(splits.classes), **cfg.arch_config)
    if cfg.init and state is None:
        init_from(model, cfg)
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU alike
    n = len(splits.train_x)
    steps_per_epoch = -(-n // cfg.batch_size)
    opt, sched = make_optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order and augmentation, on CPU for reproducibility

    progress = dict(steps_per_epoch=steps_per_epoch, epoch=0, step=0, iteration=0, train_seconds=0.0, perm=None,
                    best_val=-1.0, best_iteration=0, best_state=None, evals_since_best=0,
                    history={"train": [], "eval": []})
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise checkpoint.CheckpointError(f"{resume_path}: resume state does not fit its configuration "
                                             f"({str(e).strip().splitlines()[0][:200]})") from None
        progress.update(state["progress"])
        print(f"resuming from {resume_path} at iteration {progress['iteration']}")

    print(f"{cfg.recipe} recipe: {cfg.arch} ({count_parameters(model):,} parameters) on {device}, "
          f"{n:,} train / {len(splits.val_x):,} val images, {cfg.epochs} epochs of {steps_per_epoch} steps")
    pools = make_pools(cfg, splits, device)
    with stop_requests() as stop:
        stopped_early = run_epochs(cfg, model, opt, sched, gen, splits, pools, device, progress, stop,
                                   steps_per_epoch)
        if stop["signal"]:
            save_resume_state(resume_path, cfg, model, opt, sched, gen, progress)
            raise Interrupted(f"{stop['signal']} at iteration {progress['iteration']}: state saved to "
                              f"{resume_path}; continue with --resume --out {out}")
    return finish(cfg, model, splits, device, progress, stopped_early, out, resume_path)


def init_from(model, cfg: TrainConfig) -> None:
    """Start from the weights of ``cfg.init`` (fine-tuning); its architecture must be this run's."""
    ckpt = checkpoint.load(cfg.init)
    if (ckpt["arch"], ckpt["arch_config"]) != (cfg.arch, cfg.arch_config):
        raise ValueError(f"{cfg.init}: --init checkpoint is {ckpt['arch']} {ckpt['arch_config']}, "
                         f"this run trains {cfg.arch} {cfg.arch_config}")
    model.load_state_dict(ckpt["state_dict"])


def make_pools(cfg: TrainConfig, splits: Splits, device) -> dict:
    """Outliers and cut pieces (train/pieces.py) as (images, labels; outliers
    NOT_A_DIGIT), made once from the training split only, from the run's
    seed: a resumed run makes the same pools; and the photo crops, if given."""
    size = min(POOL, len(splits.train_x))
    images, labels = splits.train_x.cpu(), splits.train_y.cpu()
    pools = {}
    if cfg.outliers:
        outliers = make_outliers(images, size, cfg.seed)
        pools["outliers"] = (outliers.to(device), torch.full((len(outliers),), NOT_A_DIGIT, device=device))
    if cfg.cut_pieces:
        pools["cut_pieces"] = tuple(t.to(device) for t in make_cut_pieces(images, labels, size, cfg.seed + 1))
    if bool(cfg.photo_share) != bool(cfg.photo_crops):
        raise ValueError("--photo-crops and --photo-share go together (files, and their share of a batch)")
    if cfg.photo_share:
        files = [load_photo_crops(path, len(splits.classes)) for path in cfg.photo_crops]
        pools["photo_crops"] = tuple(torch.cat(parts).to(device) for parts in zip(*files))
    return pools


def make_batch(cfg: TrainConfig, splits: Splits, pools: dict, idx: torch.Tensor,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits at ``idx``, then cut pieces, photo crops and outliers;
    outliers (and photo crops that are not one digit) are labelled NOT_A_DIGIT."""
    images, labels = [splits.train_x[idx]], [splits.train_y[idx]]
    for name, share in (("cut_pieces", cfg.cut_pieces), ("photo_crops", cfg.photo_share), ("outliers", cfg.outliers)):
        if name in pools:
            pool_images, pool_labels = pools[name]
            pick = torch.randint(len(pool_images), (round(share * len(idx)),), generator=gen).to(idx.device)
            images.append(pool_images[pick])
            labels.append(pool_labels[pick])
    x = to_input(torch.cat(images), cfg.mean, cfg.std, channels_last=True)
    return (random_affine(x, gen) if cfg.augment else x), torch.cat(labels)


def batch_loss(cfg: TrainConfig, logits: torch.Tensor, y: torch.Tensor):
    """Cross-entropy on the digits plus, for the rows labelled NOT_A_DIGIT,
    cross-entropy to the uniform distribution (outlier exposure); also how
    many digits there were and how many were right. Masks, not boolean
    indexing: no host sync per step on a GPU."""
    digit = (y != NOT_A_DIGIT).float()
    other = 1.0 - digit
    n = digit.sum()
    per_row = F.cross_entropy(logits, y.clamp(min=0), label_smoothing=cfg.label_smoothing, reduction="none")
    loss = (per_row * digit).sum() / n.clamp(min=1)
    flat = -F.log_softmax(logits, 1).mean(1)
    loss = loss + cfg.outlier_weight * (flat * other).sum() / other.sum().clamp(min=1)
    return loss, n, ((logits.argmax(1) == y).float() * digit).sum()


def run_epochs(cfg, model, opt, sched, gen, splits: Splits, pools: dict, device, progress, stop,
               steps_per_epoch) -> bool:
    """The optimisation loop proper. Returns True if early stopping ended it."""
    n = len(splits.train_x)
    total = cfg.epochs * steps_per_epoch
    bar = tqdm(total=total, initial=progress["iteration"], unit="it", dynamic_ncols=True, leave=False,
               disable=None)  # None: no bar when output is not a terminal (CI logs)
    running = torch.zeros(3, device=device)  # loss sum, correct, digits seen since the last log point
    tick = time.perf_counter()
    try:
        while progress["epoch"] < cfg.epochs:
            if progress["perm"] is None:
                progress["perm"] = torch.randperm(n, generator=gen)
            while progress["step"] < steps_per_epoch:
                idx = progress["perm"][progress["step"] * cfg.batch_size:(progress["step"] + 1) * cfg.batch_size]
                idx = idx.to(device, non_blocking=True)
                x, y = make_batch(cfg, splits, pools, idx, gen)
                model.train()
                with autocast(device):
                    logits = model(x).float()
                    loss, digits, correct = batch_loss(cfg, logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += torch.stack([loss.detach() * digits, correct, digits])
                progress["step"] += 1
                progress["iteration"] += 1
                it = progress["iteration"]
                end_of_epoch = progress["step"] == steps_per_epoch
                if it % LOG_INTERVAL == 0 or end_of_epoch:
                    loss_sum, correct, seen = running.tolist()
                    progress["history"]["train"].append(
                        {"iteration": it, "loss": loss_sum / seen, "accuracy": correct / seen})
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                    val=f"{max(progress['best_val'], 0):.4f}")
                    running.zero_()
                bar.update(1)
                if it % cfg.eval_interval == 0 or end_of_epoch:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    progress["train_seconds"] += time.perf_counter() - tick
                    improved = evaluate(cfg, model, splits, device, progress)
                    tick = time.perf_counter()
                    if cfg.patience and not improved and progress["evals_since_best"] >= cfg.patience:
                        return True
                if stop["signal"]:
                    return False
            progress["epoch"] += 1
            progress["step"] = 0
            progress["perm"] = None
        return False
    finally:
        bar.close()


def evaluate(cfg, model, splits: Splits, device, progress) -> bool:
    """Validation accuracy steers model selection; test accuracy is only recorded when asked."""
    val = accuracy(model, splits.val_x, splits.val_y, cfg, device)
    point = {"iteration": progress["iteration"], "epoch": round(progress["iteration"] / progress["steps_per_epoch"], 3),
             "train_seconds": round(progress["train_seconds"], 3), "val_accuracy": val}
    if cfg.log_test:
        point["test_accuracy"] = accuracy(model, splits.test_x, splits.test_y, cfg, device)
    progress["history"]["eval"].append(point)
    if val > progress["best_val"]:
        progress.update(best_val=val, best_iteration=progress["iteration"], evals_since_best=0,
                        best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return True
    progress["evals_since_best"] += 1
    return False


# Files a run writes into its output directory (each through atomic_output).
OUTPUTS = ("best.pt", "resume.pt", "metrics.json", "curves.png", "confusion.png")
RESUME_KEYS = ("config", "model", "optimizer", "scheduler", "generator", "torch_rng", "progress")


def load_resume_state(path: Path) -> dict:
    """The state ``save_resume_state`` wrote, checked: a best.pt copied over
    resume.pt (or any other file) is named, not a KeyError."""
    state = checkpoint.load_file(path)
    if state.get("format") == checkpoint.FORMAT:
        raise checkpoint.CheckpointError(f"{path}: is a finished checkpoint (best.pt), not a resume state; "
                                         "--resume continues an interrupted run")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise checkpoint.CheckpointError(f"{path}: not a resume state (lacks {', '.join(missing)})")
    if not isinstance(state["config"], dict) or not isinstance(state["progress"], dict):
        raise checkpoint.CheckpointError(f"{path}: not a resume state (config or progress is not a mapping)")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(state["config"]) - known)
    if unknown:
        raise checkpoint.CheckpointError(f"{path}: resume state from another version (unknown settings: "
                                         f"{', '.join(unknown[:5])})")
    return state


def save_resume_state(path, cfg, model, opt, sched, gen, progress) -> None:
    checkpoint.save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "generator": gen.get_state(),
                     "torch_rng": torch.get_rng_state(), "progress": progress}, path)


def finish(cfg, model, splits: Splits, device, progress, stopped_early, out: Path, resume_path: Path) -> dict:
    """Restore the best validation weights, evaluate the test set once, write every artifact."""
    model.load_state_dict(progress["best_state"])
    preds = predict(model, splits.test_x, cfg, device).cpu()
    test_y = splits.test_y.cpu()
    test_acc = (preds == test_y).float().mean().item()
    summary = {"val_accuracy": progress["best_val"], "test_accuracy": test_acc,
               "best_iteration": progress["best_iteration"], "iterations": progress["iteration"],
               "epochs": round(progress["iteration"] / progress["steps_per_epoch"], 3),
               "train_seconds": round(progress["train_seconds"], 2), "stopped_early": stopped_early,
               "parameters": count_parameters(model)}
    model_cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    ckpt = checkpoint.make_checkpoint(model_cpu, cfg.arch, cfg.arch_config, mean=cfg.mean, std=cfg.std,
                                      classes=splits.classes, dataset=cfg.dataset,
                                      train_config=asdict(cfg), metrics=summary)
    checkpoint.save(ckpt, out / "best.pt")
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "summary": summary, **progress["history"]}, indent=1))
    plots.curves(progress["history"], out / "curves.png", title=f"{cfg.recipe} recipe ({cfg.arch})")
    plots.confusion(test_y.numpy(), preds.numpy(), splits.classes, out / "confusion.png")
    resume_path.unlink(missing_ok=True)
    return summary
