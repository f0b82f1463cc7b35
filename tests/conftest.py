"""Shared fixtures: where MNIST is, and tiny IDX files written on the fly."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EDGE_DIGITS_DATA", REPO.parent / "shared" / "data" / "MNIST" / "raw"))


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_dataset(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, compress: bool = False) -> Path:
    """A small learnable dataset in IDX format: each class is a bright bar at its own height."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        write_idx(directory / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels, compress)
    return directory


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (DATA_DIR / "t10k-images-idx3-ubyte.gz").exists() and not (DATA_DIR / "t10k-images-idx3-ubyte").exists():
        pytest.fail(f"MNIST not found in {DATA_DIR}: set EDGE_DIGITS_DATA to the directory of the four IDX files")
    return DATA_DIR
