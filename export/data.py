"""The real images the export stage checks and calibrates with: MNIST-format IDX files.

Torch-free on purpose (train.idx is numpy only), so the quantizer runs without torch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from train.idx import DATA_ENV, DataError, load_split


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The flag, else $EDGE_DIGITS_DATA. No silent default: every check must run on real images."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    if not chosen:
        raise DataError(f"no data directory: pass --data-dir or set {DATA_ENV} to the directory of the MNIST IDX files")
    return Path(chosen)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]: exactly what an ONNX model takes."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None]


def load_pixels(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as model input and int64 labels; raises DataError naming the file at fault."""
    images, labels = load_split(data_dir, split)
    return to_pixels(images), labels.astype(np.int64)
