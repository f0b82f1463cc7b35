"""Find, read and validate IDX files (the MNIST file format), with numpy only.

Kept free of torch so that benchmarks and tools that only need the raw
digits (for example the synthetic photo generator) can use it too; only
the download fallback of `resolve_data_dir` imports torchvision, when used.

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


DATASETS = {
    # name: (torchvision class used only for downloading, class labels)
    "mnist": ("MNIST", [str(d) for d in range(10)]),
    "fashion-mnist": ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
}


def default_data_dir(dataset: str = "mnist") -> Path:
    """Where torchvision puts a download below ./data, and so where a clone keeps its own copy."""
    return Path("data") / DATASETS[dataset][0] / "raw"


def missing_files(data_dir: str | os.PathLike) -> list[str]:
    """Which of the four IDX files (plain or .gz) ``data_dir`` lacks."""
    missing = []
    for stems in SPLITS.values():
        for stem in stems:
            try:
                find_file(data_dir, stem)
            except DataError:
                missing.append(stem)
    return missing


def resolve_data_dir(flag: str | os.PathLike | None = None, dataset: str = "mnist", download: bool = False) -> Path:
    """The one answer to "where are the IDX files?", for every command, benchmark and test.

    The flag, else $EDGE_DIGITS_DATA, else ./data/<Name>/raw. When the chosen
    directory lacks the files, torchvision downloads them there if
    ``download`` allows (only training and the pipeline allow it); otherwise a
    DataError says where it looked and how to point elsewhere.
    """
    chosen = flag or os.environ.get(DATA_ENV)
    path = Path(chosen) if chosen else default_data_dir(dataset)
    missing = missing_files(path)
    if not missing:
        return path
    where = ("from --data-dir" if flag else f"from ${DATA_ENV}" if chosen
             else f"neither --data-dir nor ${DATA_ENV} is set")
    if not download:
        what = f"no {dataset} IDX files here" if len(missing) == 4 else f"lacks {', '.join(missing)}[.gz]"
        raise DataError(f"{path}: {what} ({where}); pass --data-dir or set {DATA_ENV} "
                        "to the directory of the four IDX files")
    return _download(path, dataset)


def _download(path: Path, dataset: str) -> Path:
    import torchvision.datasets  # the rare path: a clone without data, with network

    tv_name = DATASETS[dataset][0]
    root = path.parent.parent if path.name == "raw" and path.parent.name == tv_name else path
    print(f"downloading {dataset} into {root} ...")
    target = root / tv_name / "raw"
    created = [d for d in (root, root / tv_name, target) if not d.exists()]
    try:
        for train in (True, False):
            getattr(torchvision.datasets, tv_name)(root, train=train, download=True)
    except Exception as e:  # noqa: BLE001  network, HTTP, checksum, disk: all mean "no data"
        _remove_empty(created)
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: no {dataset} IDX files here, and the download failed ({reason}); "
                        f"pass --data-dir or set {DATA_ENV}") from None
    except BaseException:
        _remove_empty(created)
        raise
    return target


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories a failed download created, deepest first, if
    nothing else was put there (partial downloads are torchvision's to keep)."""
    for d in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


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
