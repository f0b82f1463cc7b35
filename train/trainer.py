"""The training loop: in-memory batches, periodic validation, early stopping, interrupt and resume,
on one process or several (torchrun; see train/distributed.py)."""
from __future__ import annotations

import copy
import json
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, distributed, plots
from .config import TrainConfig
from .data import NOT_A_DIGIT, Splits, load_photo_crops, load_splits, random_affine, to_input
from .distill import Teacher, distillation_loss
from .files import atomic_output, clean_stale_temps
from .idx import resolve_data_dir
from .models import build_model, count_parameters
from .pieces import make_cut_pieces, make_outliers

LOG_INTERVAL = 10  # iterations between recorded training-loss points
POOL = 30_000  # outliers and cut pieces made once per run; augmentation varies them further


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a resumable state."""


@dataclass
class Progress:
    """Where a run stands: saved in resume.pt on interruption (as a plain dict), restored by --resume."""

    steps_per_epoch: int
    epoch: int = 0
    step: int = 0                        # within the epoch
    iteration: int = 0                   # over the run
    train_seconds: float = 0.0
    perm: torch.Tensor | None = None     # this epoch's batch order
    best_val: float = -1.0
    best_iteration: int = 0
    best_state: dict | None = None       # weights at the best validation accuracy, on the CPU
    evals_since_best: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "eval": []})

    def as_state(self) -> dict:
        return dict(vars(self))  # shallow: tensors are saved as they are, not copied


@dataclass
class Loop:
    """What the optimisation loop works with, built once per run (or per resume)."""

    model: torch.nn.Module
    net: torch.nn.Module                 # what a step calls: DDP around ``model`` on several processes
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator                 # batch order (the same on every process) and, alone, augmentation
    batch_gen: torch.Generator           # this process's augmentation and pool picks
    splits: Splits
    pools: dict
    device: torch.device
    world: distributed.World
    stop: dict                           # {"signal": name or None}, set by stop_requests()
    teacher: Teacher | None = None       # distillation: soft targets of an ONNX model for every batch


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


def train(cfg: TrainConfig, resume: bool = False, given: dict | None = None) -> dict:
    """Train per ``cfg`` and write checkpoint, metrics and plots to ``cfg.out_dir``. Returns the summary.

    ``resume``: continue the interrupted run in ``cfg.out_dir`` with its saved settings; ``given`` are the
    settings the command line named explicitly, refused when they differ from the saved ones (only
    RESUME_MAY_CHANGE may). Under torchrun every process calls this; rank 0 alone evaluates and writes
    files, and every process returns its summary."""
    world = distributed.from_env()
    # The device comes from this call's --device, also on --resume: a run may continue elsewhere.
    device = distributed.device_for(world, pick_device(cfg.device))
    # Signals are caught from the start: a launcher's SIGTERM that reaches one
    # process while another is still loading data must not kill it outright.
    with stop_requests() as stop, distributed.process_group(world, device):
        return train_on(world, device, cfg, resume, given or {}, stop)


def train_on(world: distributed.World, device: torch.device, cfg: TrainConfig, resume: bool, given: dict,
             stop: dict) -> dict:
    say = print if world.main else (lambda *args, **kwargs: None)
    out = Path(cfg.out_dir)
    resume_path = out / "resume.pt"
    state = None
    clean_stale_temps(out, OUTPUTS)  # of a run killed while writing
    if resume:
        state = load_resume_state(resume_path, world)
        cfg = resumed_config(state["config"], given, cfg, resume_path)
    torch.manual_seed(cfg.seed)
    # cudnn.benchmark stays off: autotuning each new batch shape (the first, the last of an epoch, the evaluation
    # batches) cost more than it saved for models this small (fast recipe on an H200: 6.0 s an epoch with it, 4.0
    # without; docs/EXPERIMENTS.md).

    # The whole dataset lives on the training device: batches are index gathers, no loader workers.
    # Rank 0 first: it alone may download.
    splits = distributed.main_first(lambda: load_splits(resolve_data_dir(cfg.data_dir, cfg.dataset, cfg.download),
                                                        cfg.dataset, cfg.val_size, cfg.seed, cfg.styles),
                                    world).to(device)
    if cfg.train_subset:
        splits.train_x, splits.train_y = splits.train_x[:cfg.train_subset], splits.train_y[:cfg.train_subset]

    model = build_model(cfg.arch, num_classes=len(splits.classes), **cfg.arch_config)
    if cfg.init and state is None:
        init_from(model, cfg)
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU alike
    n = len(splits.train_x)
    steps_per_epoch = distributed.steps_per_epoch(n, cfg.batch_size, world)
    opt, sched = make_optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order and augmentation, on CPU for reproducibility
    # Several processes: `gen` draws the batch order, the same on all; each
    # draws its augmentation, pool picks and dropout from its own streams.
    batch_gen = gen
    if world.distributed:
        batch_gen = torch.Generator().manual_seed(cfg.seed + 1000 * (world.rank + 1))
        torch.manual_seed(cfg.seed + 1000 * (world.rank + 1))  # after building the model: same initial weights

    progress = Progress(steps_per_epoch)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            ranks = state.get("ranks", [])
            if world.distributed and len(ranks) == world.size:  # same world size: every stream continues exactly
                batch_gen.set_state(ranks[world.rank]["generator"])
                torch.set_rng_state(ranks[world.rank]["torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise checkpoint.CheckpointError(f"{resume_path}: resume state does not fit its configuration "
                                             f"({str(e).strip().splitlines()[0][:200]})") from None
        if state["progress"]["steps_per_epoch"] != steps_per_epoch:
            raise ValueError(f"{resume_path}: {state['progress']['steps_per_epoch']} steps per epoch, here "
                             f"{steps_per_epoch} (a last small batch splits differently over {world.size} "
                             "processes): resume with the number of processes of the interrupted run")
        try:
            progress = Progress(**state["progress"])
        except TypeError as e:
            raise checkpoint.CheckpointError(f"{resume_path}: resume state from another version ({e})") from None
        say(f"resuming from {resume_path} at iteration {progress.iteration} on {device}")
    net = distributed.wrap(model, world, device, cfg.sync_bn)

    on = f"{device}" if not world.distributed else \
        f"{world.size} processes on {device.type} (global batch {cfg.batch_size}, ~{cfg.batch_size // world.size} each)"
    say(f"{cfg.recipe} recipe: {cfg.arch} ({count_parameters(model):,} parameters) on {on}, "
        f"{n:,} train / {len(splits.val_x):,} val images, {cfg.epochs} epochs of {steps_per_epoch} steps")
    loop = Loop(model, net, opt, sched, gen, batch_gen, splits, make_pools(cfg, splits, device), device, world, stop,
                make_teacher(cfg))
    stopped_early = run_epochs(cfg, loop, progress)
    # Every process decides alike: the loop returned at the same step everywhere, and a
    # signal after its last step (during the test evaluation, say) lets the run finish.
    if stop["signal"] and not stopped_early and progress.iteration < cfg.epochs * steps_per_epoch:
        save_resume_state(resume_path, cfg, loop, progress)
        distributed.barrier(world)  # nobody exits before the state is on disk
        raise Interrupted(f"{stop['signal']} at iteration {progress.iteration}: state saved to "
                          f"{resume_path}; continue with --resume --out {out}")
    summary = finish(cfg, loop, progress, stopped_early, out, resume_path) if world.main else None
    return distributed.from_main(summary, world)


# Settings a resumed run may take from the command line: where it runs, not what it computes.
RESUME_MAY_CHANGE = ("device",)


def resumed_config(saved: dict, given: dict, cfg: TrainConfig, path: Path) -> TrainConfig:
    """The interrupted run's settings, with the command line's device. Any other setting the command
    line names with a different value is refused, not silently dropped: the run would not be the one
    that was interrupted."""
    saved_cfg = TrainConfig(**saved)
    differ = []
    for key, value in given.items():
        if key in ("widths", "depth", "head"):
            before = saved_cfg.arch_config.get(key)
        elif key in saved and key not in RESUME_MAY_CHANGE and key != "out_dir":
            before = saved[key]
        else:
            continue
        if value != before:
            differ.append(f"--{key.replace('_', '-')} {value} (the run has {before})")
    if differ:
        raise ValueError(f"{path}: --resume continues the interrupted run with its own settings; the command line "
                         f"changes {'; '.join(differ)}: leave those flags out, or start a new run with another --out")
    return TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in RESUME_MAY_CHANGE}})


def load_resume_state(path: Path, world: distributed.World) -> dict:
    """The saved state, read by rank 0 and sent to the others (on several
    machines only rank 0's has the file); an unreadable file fails every rank."""
    if not world.distributed:
        return checked_resume_state(checkpoint.load_file(path), path)
    state, error = None, None
    if world.main:
        try:
            state = checked_resume_state(checkpoint.load_file(path), path)
        except checkpoint.CheckpointError as e:
            error = str(e)
    state, error = distributed.from_main((state, error), world)
    if error:
        e = checkpoint.CheckpointError(error)
        e.shared = True  # reported by rank 0
        raise e
    return state


def init_from(model, cfg: TrainConfig) -> None:
    """Start from the weights of ``cfg.init`` (fine-tuning); its architecture must be this run's."""
    ckpt = checkpoint.load(cfg.init)
    if (ckpt["arch"], ckpt["arch_config"]) != (cfg.arch, cfg.arch_config):
        raise ValueError(f"{cfg.init}: --init checkpoint is {ckpt['arch']} {ckpt['arch_config']}, "
                         f"this run trains {cfg.arch} {cfg.arch_config}")
    model.load_state_dict(ckpt["state_dict"])


def make_teacher(cfg: TrainConfig) -> Teacher | None:
    if bool(cfg.teacher) != bool(cfg.distill):
        raise ValueError("--teacher and --distill go together (an ONNX model, and the weight of its soft targets)")
    if not 0 < cfg.distill <= 1 and cfg.distill:
        raise ValueError(f"--distill {cfg.distill}: a weight in (0, 1]")
    return Teacher(cfg.teacher, cfg.mean, cfg.std) if cfg.teacher else None


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


def batch_loss(cfg: TrainConfig, logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None = None):
    """Cross-entropy on the digits plus, for the rows labelled NOT_A_DIGIT,
    cross-entropy to the uniform distribution (outlier exposure); also how
    many digits there were and how many were right. Masks, not boolean
    indexing: no host sync per step on a GPU. With ``teacher`` logits, a
    weight ``cfg.distill`` of the loss goes to matching them on the rows it
    reads right and on the outliers (it learnt their flat answer too): a
    digit the teacher misreads, such as a crossed 7 (--styles) taken for a 9,
    is left to its label."""
    digit = (y != NOT_A_DIGIT).float()
    other = 1.0 - digit
    n = digit.sum()
    per_row = F.cross_entropy(logits, y.clamp(min=0), label_smoothing=cfg.label_smoothing, reduction="none")
    loss = (per_row * digit).sum() / n.clamp(min=1)
    flat = -F.log_softmax(logits, 1).mean(1)
    loss = loss + cfg.outlier_weight * (flat * other).sum() / other.sum().clamp(min=1)
    if teacher is not None:
        trusted = torch.maximum((teacher.argmax(1) == y).float(), other)
        loss = (1 - cfg.distill) * loss + cfg.distill * distillation_loss(logits, teacher, cfg.temperature, trusted)
    return loss, n, ((logits.argmax(1) == y).float() * digit).sum()


def run_epochs(cfg: TrainConfig, loop: Loop, progress: Progress) -> bool:
    """The optimisation loop proper. Returns True if early stopping ended it.

    A step calls ``loop.net``; ``loop.model`` is evaluated, by rank 0 only. Several processes agree
    on stopping (signal, early stop) every LOG_INTERVAL steps and at evaluations."""
    model, net, opt, sched, gen, splits, device, world, stop = (loop.model, loop.net, loop.opt, loop.sched, loop.gen,
                                                                 loop.splits, loop.device, loop.world, loop.stop)
    steps_per_epoch = progress.steps_per_epoch
    n = len(splits.train_x)
    total = cfg.epochs * steps_per_epoch
    bar = tqdm(total=total, initial=progress.iteration, unit="it", dynamic_ncols=True, leave=False,
               disable=None if world.main else True)  # None: no bar when output is not a terminal (CI logs)
    running = torch.zeros(3, device=device)  # loss sum, correct, digits seen since the last log point
    tick = time.perf_counter()
    try:
        while progress.epoch < cfg.epochs:
            if progress.perm is None:
                progress.perm = torch.randperm(n, generator=gen)
            while progress.step < steps_per_epoch:
                idx = progress.perm[progress.step * cfg.batch_size:(progress.step + 1) * cfg.batch_size]
                idx, share = distributed.my_share(idx, world)
                idx = idx.to(device, non_blocking=True)
                x, y = make_batch(cfg, splits, loop.pools, idx, loop.batch_gen)
                soft = loop.teacher(x) if loop.teacher else None
                net.train()
                with autocast(device):
                    logits = net(x).float()
                    loss, digits, correct = batch_loss(cfg, logits, y, soft)
                opt.zero_grad(set_to_none=True)
                (loss * share).backward()  # share: 1.0 unless the batch splits unevenly over processes
                opt.step()
                sched.step()
                running += torch.stack([loss.detach() * digits, correct, digits])
                progress.step += 1
                progress.iteration += 1
                it = progress.iteration
                end_of_epoch = progress.step == steps_per_epoch
                log_now = it % LOG_INTERVAL == 0 or end_of_epoch
                eval_now = it % cfg.eval_interval == 0 or end_of_epoch
                if log_now:
                    loss_sum, correct, seen = distributed.sum_(running, world).tolist()
                    progress.history["train"].append(
                        {"iteration": it, "loss": loss_sum / seen, "accuracy": correct / seen})
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                    val=f"{max(progress.best_val, 0):.4f}")
                    running.zero_()
                bar.update(1)
                stop_early = False
                if eval_now:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    progress.train_seconds += time.perf_counter() - tick
                    if world.main:
                        improved = evaluate(cfg, model, splits, device, progress)
                        if bar.disable:  # no bar (not a terminal, e.g. a log file): one line per evaluation
                            tqdm.write(f"iteration {it}/{total}: validation accuracy "
                                       f"{progress.history['eval'][-1]['val_accuracy']:.4f}", file=sys.stdout)
                        stop_early = bool(cfg.patience and not improved
                                          and progress.evals_since_best >= cfg.patience)
                    tick = time.perf_counter()
                if world.distributed and (log_now or eval_now):
                    signalled, stop_early = distributed.any_([bool(stop["signal"]), stop_early], world, device)
                    if signalled:
                        stop["signal"] = stop["signal"] or "a peer's signal"
                    if stop_early:
                        return True
                    if signalled:
                        return False
                elif not world.distributed:
                    if stop_early:
                        return True
                    if stop["signal"]:
                        return False
            progress.epoch += 1
            progress.step = 0
            progress.perm = None
        return False
    finally:
        bar.close()


def evaluate(cfg: TrainConfig, model, splits: Splits, device, progress: Progress) -> bool:
    """Validation accuracy steers model selection; test accuracy is only recorded when asked."""
    val = accuracy(model, splits.val_x, splits.val_y, cfg, device)
    point = {"iteration": progress.iteration, "epoch": round(progress.iteration / progress.steps_per_epoch, 3),
             "train_seconds": round(progress.train_seconds, 3), "val_accuracy": val}
    if cfg.log_test:
        point["test_accuracy"] = accuracy(model, splits.test_x, splits.test_y, cfg, device)
    progress.history["eval"].append(point)
    if val > progress.best_val:
        progress.best_val, progress.best_iteration, progress.evals_since_best = val, progress.iteration, 0
        progress.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True
    progress.evals_since_best += 1
    return False


# Files a run writes into its output directory (each through atomic_output).
OUTPUTS = ("best.pt", "resume.pt", "metrics.json", "curves.png", "confusion.png")
RESUME_KEYS = ("config", "model", "optimizer", "scheduler", "generator", "torch_rng", "progress")


def checked_resume_state(state: dict, path: Path) -> dict:
    """The state ``save_resume_state`` wrote, checked: a best.pt copied over
    resume.pt (or any other file) is named, not a KeyError."""
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


def save_resume_state(path: Path, cfg: TrainConfig, loop: Loop, progress: Progress) -> None:
    """Rank 0 writes the state; with several processes it also holds each
    one's random streams (used when resuming on as many processes)."""
    state = {"config": asdict(cfg), "model": loop.model.state_dict(), "optimizer": loop.opt.state_dict(),
             "scheduler": loop.sched.state_dict(), "generator": loop.gen.get_state(),
             "torch_rng": torch.get_rng_state(), "progress": progress.as_state()}
    if loop.world.distributed:
        state["ranks"] = distributed.gather({"generator": loop.batch_gen.get_state(),
                                             "torch_rng": torch.get_rng_state()}, loop.world)
    if loop.world.main:
        checkpoint.save(state, path)


def finish(cfg: TrainConfig, loop: Loop, progress: Progress, stopped_early: bool, out: Path, resume_path: Path) -> dict:
    """Restore the best validation weights, evaluate the test set once, write every artifact."""
    model, splits, device = loop.model, loop.splits, loop.device
    model.load_state_dict(progress.best_state)
    preds = predict(model, splits.test_x, cfg, device).cpu()
    test_y = splits.test_y.cpu()
    test_acc = (preds == test_y).float().mean().item()
    summary = {"val_accuracy": progress.best_val, "test_accuracy": test_acc,
               "best_iteration": progress.best_iteration, "iterations": progress.iteration,
               "epochs": round(progress.iteration / progress.steps_per_epoch, 3),
               "train_seconds": round(progress.train_seconds, 2), "stopped_early": stopped_early,
               "parameters": count_parameters(model)}
    model_cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    ckpt = checkpoint.make_checkpoint(model_cpu, cfg.arch, cfg.arch_config, mean=cfg.mean, std=cfg.std,
                                      classes=splits.classes, dataset=cfg.dataset,
                                      train_config=asdict(cfg), metrics=summary)
    checkpoint.save(ckpt, out / "best.pt")
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "summary": summary, **progress.history}, indent=1))
    plots.curves(progress.history, out / "curves.png", title=f"{cfg.recipe} recipe ({cfg.arch})")
    plots.confusion(test_y.numpy(), preds.numpy(), splits.classes, out / "confusion.png")
    resume_path.unlink(missing_ok=True)
    return summary
