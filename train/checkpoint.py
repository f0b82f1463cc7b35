"""Write and read the checkpoint file; its format is defined in docs/FORMATS.md."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import torch
import torchvision

from .files import atomic_output
from .models import ARCHS, build_model

FORMAT = "edge-digits-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A file is missing, unreadable, or not an edge-digits checkpoint."""


def versions() -> dict:
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}


def save(obj: dict, path: str | os.PathLike) -> None:
    """torch.save through a temporary file, renamed into place once complete."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def make_checkpoint(model: torch.nn.Module, arch: str, arch_config: dict, *, mean: float, std: float,
                    classes: list[str], dataset: str, train_config: dict, metrics: dict,
                    input_spec: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_config": dict(arch_config),
        "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                       for k, v in model.state_dict().items()},
        "input": input_spec or {"shape": [1, 28, 28], "range": [0.0, 1.0], "polarity": "light-on-dark"},
        "normalization": {"mean": float(mean), "std": float(std)},
        "classes": list(classes),
        "dataset": dataset,
        "train_config": dict(train_config),
        "metrics": dict(metrics),
        "versions": versions(),
    }


def load_file(path: str | os.PathLike) -> dict:
    """torch.load with weights_only=True, mapping every failure to one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torch.load raises a dozen types on foreign files; all mean "not ours"
        first_line = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first_line})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an edge-digits checkpoint (holds a {type(obj).__name__})")
    return obj


def load(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint (see docs/FORMATS.md)."""
    ckpt = load_file(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edge-digits checkpoint (format={ckpt.get('format')!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {ckpt.get('format_version')!r}")
    if ckpt.get("arch") not in ARCHS:
        raise CheckpointError(f"{path}: unknown architecture {ckpt.get('arch')!r} (known: {', '.join(ARCHS)})")
    return ckpt


def load_model(ckpt: dict, path: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the checkpoint's model in eval mode on the CPU."""
    try:
        model = build_model(ckpt["arch"], **ckpt["arch_config"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit architecture {ckpt.get('arch')!r} "
                              f"({str(e)[:200]})") from None
    return model.eval()


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
