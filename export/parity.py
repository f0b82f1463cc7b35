"""How closely an ONNX model reproduces another model's outputs, on real test images.

Used by the export commands to verify what they write, by the pipeline's
report and by the tests, so that all three measure the same thing.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .onnx_model import PixelModel, open_session, run_session


@dataclass(frozen=True)
class Parity:
    """Candidate logits against reference logits on `images` labelled images."""

    images: int
    agreement: float           # fraction of images where both give the same class
    max_abs_diff: float        # largest |reference logit - candidate logit|
    reference_accuracy: float  # test accuracy of the reference
    accuracy: float            # test accuracy of the candidate

    def as_dict(self) -> dict:
        return asdict(self)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> Parity:
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    # NaN compares false with everything: a NaN logit would make every
    # tolerance check pass. A non-finite row disagrees, and makes the
    # difference infinite.
    finite = np.isfinite(reference).all(1) & np.isfinite(candidate).all(1)
    diff = np.abs(reference.astype(np.float64) - candidate).max() if finite.all() else float("inf")
    return Parity(
        images=len(labels),
        agreement=float(((reference.argmax(1) == candidate.argmax(1)) & finite).mean()),
        max_abs_diff=float(diff),
        reference_accuracy=accuracy(reference, labels),
        accuracy=accuracy(candidate, labels),
    )


def torch_logits(module: PixelModel, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The PyTorch model's logits (eval mode, CPU, float32) on raw pixels."""
    module.eval()
    with torch.inference_mode():
        parts = [module(torch.from_numpy(pixels[i:i + batch_size])).numpy()
                 for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts)


def onnx_logits(model: str | os.PathLike, pixels: np.ndarray, batch_size: int = 1000, threads: int = 0) -> np.ndarray:
    """An ONNX file's logits through ONNX Runtime's CPU provider."""
    return run_session(open_session(model, threads), pixels, batch_size)


def torch_parity(module: PixelModel, model: str | os.PathLike, pixels: np.ndarray, labels: np.ndarray,
                 batch_size: int = 1000) -> Parity:
    """ONNX file against the PyTorch model it came from: the figure every report quotes."""
    return compare(torch_logits(module, pixels, batch_size), onnx_logits(model, pixels, batch_size), labels)


def parity_table(module: PixelModel, models: dict[str, str | os.PathLike], pixels: np.ndarray,
                 labels: np.ndarray, batch_size: int = 1000) -> dict[str, Parity]:
    """Every model file (keyed by precision) against the PyTorch model, sharing one PyTorch pass."""
    reference = torch_logits(module, pixels, batch_size)
    return {name: compare(reference, onnx_logits(path, pixels, batch_size), labels) for name, path in models.items()}
