"""MNIST-format datasets held whole in memory as uint8 tensors, batched by index.

No per-sample PIL pipeline: a batch is one gather from a [N, 28, 28] uint8
tensor, converted and normalised on the device that trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .idx import DATASETS, DataError, load_split
from .styles import restyle


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 [N, 28, 28]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    def to(self, device: torch.device) -> Splits:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return Splits(**moved, classes=self.classes)


def load_splits(data_dir: Path, dataset: str, val_size: int, seed: int, styles: float = 0.0) -> Splits:
    """Load train/test, and hold out ``val_size`` training images chosen by ``seed``; redraw ``styles`` of the
    training 1s and 7s in other writers' styles (train/styles.py). Validation and test stay as MNIST has them."""
    train_x, train_y = (torch.from_numpy(a.copy()) for a in load_split(data_dir, "train"))
    test_x, test_y = (torch.from_numpy(a.copy()) for a in load_split(data_dir, "test"))
    if not 0 <= val_size < len(train_x):
        raise DataError(f"{data_dir}: validation size {val_size} does not fit {len(train_x)} training images")
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    train_y_kept = train_y[train_idx].long()
    train_x_kept = torch.from_numpy(restyle(train_x[train_idx].numpy(), train_y_kept.numpy(), styles, seed))
    return Splits(train_x_kept, train_y_kept, train_x[val_idx], train_y[val_idx].long(),
                  test_x, test_y.long(), DATASETS[dataset][1])


NOT_A_DIGIT = -1  # label of a training input that is no digit (trained toward a flat distribution)


def load_photo_crops(path: str | Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled model inputs of a photo-crops file (docs/FORMATS.md) as
    (uint8 [N, 28, 28], int64 [N]; NOT_A_DIGIT for a piece that is no digit).
    No pickles: arrays only."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a photo-crops file ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise DataError(f"{path}: expected images uint8 [N, 28, 28] and N labels, "
                        f"got {images.dtype} {list(images.shape)} and {len(labels)} labels")
    if len(labels) and not NOT_A_DIGIT <= labels.min() <= labels.max() < num_classes:
        raise DataError(f"{path}: labels outside {NOT_A_DIGIT}..{num_classes - 1}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_input(images: torch.Tensor, mean: float, std: float, channels_last: bool = False) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float [N, 1, 28, 28]."""
    x = images.unsqueeze(1).float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0,
                  scale: float = 0.1, shift: float = 0.1, shear: float = 0.15) -> torch.Tensor:
    """A different small rotation, scale, shear and shift for every image of the batch.

    torchvision's RandomAffine draws one set of parameters per call, so a batched
    per-sample jitter is done here with affine_grid/grid_sample. Expects inputs
    whose background is the minimum value (padding uses it).
    """
    n = x.shape[0]
    rand = torch.rand(n, 5, generator=generator).to(x.device) * 2 - 1
    angle = rand[:, 0] * math.radians(degrees)
    s = 1 + rand[:, 1] * scale
    sh = rand[:, 2] * shear
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([
        torch.stack([cos, -sin + sh * cos, rand[:, 3] * shift], 1),
        torch.stack([sin, cos + sh * sin, rand[:, 4] * shift], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
