"""Shared fixtures: where MNIST is, and tiny IDX files written on the fly.

Test modules take these as fixtures; none imports this module (or another test module).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _write_dataset(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, compress: bool = False) -> Path:
    """A small learnable dataset in IDX format: each class is a bright bar at its own height."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        _write_idx(directory / f"{split}-images-idx3-ubyte", images, compress)
        _write_idx(directory / f"{split}-labels-idx1-ubyte", labels, compress)
    return directory


@pytest.fixture(scope="session")
def write_idx():
    """write_idx(path, array, compress=False) -> path: one IDX file (``.gz`` appended when compressed)."""
    return _write_idx


@pytest.fixture(scope="session")
def write_dataset():
    """write_dataset(directory, n_train=600, n_test=200, seed=0, compress=False) -> directory: four IDX files."""
    return _write_dataset


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """MNIST where every command finds it (train.idx.resolve_data_dir, never downloading); skipped without it."""
    from train.idx import DataError, resolve_data_dir

    try:
        return resolve_data_dir(None).resolve()
    except DataError as e:
        pytest.skip(f"needs MNIST: {e}")


@pytest.fixture(scope="session")
def mnist_test(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split (images uint8 [N, 28, 28], labels)."""
    from train.idx import load_split

    return load_split(mnist_dir, "test")
