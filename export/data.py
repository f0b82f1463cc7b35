"""The real images the export stage checks and calibrates with: MNIST-format IDX files.

Torch-free on purpose (train.idx is numpy only), so the quantizer runs without torch.
"""
from __future__ import annotations

import os

import numpy as np

from train.idx import load_split


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]: exactly what an ONNX model takes."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None]


def load_pixels(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as model input and int64 labels; raises DataError naming the file at fault."""
    images, labels = load_split(data_dir, split)
    return to_pixels(images), labels.astype(np.int64)
