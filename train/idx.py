"""Read and validate IDX files (the MNIST file format), with numpy only.

Kept free of torch so that benchmarks and tools that only need the raw
digits (for example the synthetic photo generator) can use it too.

IDX layout: 2 zero bytes, a type byte (0x08 = uint8), a byte with the number
of dimensions, then one big-endian uint32 per dimension, then the data.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10
DATA_ENV = "EDGE_DIGITS_DATA"  # where every stage looks for the IDX files when no flag says


class DataError(Exception):
    """A dataset file is missing, corrupt, truncated or inconsistent."""


def data_dir_from(flag: str | os.PathLike | None, default: str | os.PathLike | None = None) -> Path:
    """Where the IDX files are: the flag, else $EDGE_DIGITS_DATA, else ``default``; DataError if none is given."""
    chosen = flag or os.environ.get(DATA_ENV) or default
    if not chosen:
        raise DataError(f"no data directory: pass --data-dir or set {DATA_ENV} to the directory of the IDX files")
    return Path(chosen)


def find_file(data_dir: str | os.PathLike, stem: str) -> Path:
    """Return the path of ``stem`` or ``stem.gz`` in ``data_dir``."""
    for name in (stem, stem + ".gz"):
        path = Path(data_dir) / name
        if path.is_file():
            return path
    raise DataError(f"{Path(data_dir) / stem}[.gz]: file not found")


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: bad magic number {raw[:4].hex()} (expected 000008{ndim:02x})")
    if raw[3] != ndim:
        raise DataError(f"{path}: has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {kind}: {len(raw)} bytes, header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as (images uint8 [N, H, W], labels uint8 [N]), validated."""
    image_stem, label_stem = SPLITS[split]
    image_path, label_path = find_file(data_dir, image_stem), find_file(data_dir, label_stem)
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{label_path}: {len(labels)} labels but {image_path.name} has {len(images)} images")
    if len(images) == 0:
        raise DataError(f"{image_path}: holds no images")
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{label_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    return images, labels
