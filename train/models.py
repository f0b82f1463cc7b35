"""The CNN architectures. Each takes a normalised [N, 1, 28, 28] tensor and returns logits."""
from __future__ import annotations

import torch
from torch import nn


class SeedCNN(nn.Module):
    """The reference model of the original tutorial, layer for layer (507,420 parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(),
            nn.Conv2d(5, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(10, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
            nn.Conv2d(20, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(40 * 7 * 7, 200), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(200, 500), nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: BatchNorm's shift makes it redundant, and export folds BN into the conv.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class EdgeCNN(nn.Module):
    """Our model: three conv stages at 28, 14 and 7 pixels, each ending in 2x2 max-pooling, then one linear layer.

    Compared with the seed it pools sooner and keeps no big fully-connected
    layer: the compute runs on few pixels with many channels, which CPUs (and
    INT8 kernels) run efficiently, and the parameters sit in convolutions.
    ``depth`` convs per stage after the first (the first stage always has one:
    at 28x28 pixels a second conv would cost more than the rest of the model).
    """

    def __init__(self, num_classes: int = 10, widths: tuple = (16, 32, 64), depth: int = 1, dropout: float = 0.1):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *conv_bn(1, w1), nn.MaxPool2d(2),                                              # 28 -> 14
            *conv_bn(w1, w2), *[m for _ in range(depth - 1) for m in conv_bn(w2, w2)], nn.MaxPool2d(2),  # 14 -> 7
            *conv_bn(w2, w3), *[m for _ in range(depth - 1) for m in conv_bn(w3, w3)], nn.MaxPool2d(2),  # 7 -> 3
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w3 * 3 * 3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHS = {"seed": SeedCNN, "edge": EdgeCNN}


def build_model(arch: str, **config) -> nn.Module:
    """Build an architecture by name from the keyword arguments stored in a checkpoint."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    return ARCHS[arch](**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
