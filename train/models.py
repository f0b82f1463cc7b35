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
    ``head``: channels of one more conv on the 3x3 pixels left after the last
    pooling (0: none). Depth where it is cheapest: a 64->128 conv there costs
    a third of a 32->64 conv at 7x7 pixels.
    """

    def __init__(self, num_classes: int = 10, widths: tuple = (16, 32, 64), depth: int = 1, dropout: float = 0.1,
                 head: int = 0):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *conv_bn(1, w1), nn.MaxPool2d(2),                                              # 28 -> 14
            *conv_bn(w1, w2), *[m for _ in range(depth - 1) for m in conv_bn(w2, w2)], nn.MaxPool2d(2),  # 14 -> 7
            *conv_bn(w2, w3), *[m for _ in range(depth - 1) for m in conv_bn(w3, w3)], nn.MaxPool2d(2),  # 7 -> 3
            *(conv_bn(w3, head) if head else []),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear((head or w3) * 3 * 3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class RowReader(nn.Module):
    """Reads a row of digits: a normalised [N, 1, 32, W] tensor (W a multiple of 4) to logits
    [N, W // stride, classes + 1].

    Convolutions only (no LSTM): ONNX Runtime quantizes convolutions statically
    to INT8, recurrent layers only dynamically. Two 2x2 poolings bring the
    features to one step per 4 input columns; the height is then pooled alone
    down to 2 rows and folded into channels, so each step sees a tall, thin
    window. Two dilated convolutions along the row widen that window to about
    four digits, enough to tell where one touching digit ends and the next
    begins. With ``stride=2`` the head gives two outputs per step: narrow
    repeated digits ("111") need a blank between each pair, so more outputs per
    digit than 4-column steps give. The last class is the CTC blank.
    """

    HEIGHT = 32
    WIDTH_MULTIPLE = 4  # input widths are padded to this

    def __init__(self, num_classes: int = 10, widths: tuple = (16, 32, 64, 96), stride: int = 4):
        super().__init__()
        if stride not in (1, 2, 4):
            raise ValueError(f"stride must be 1, 2 or 4 input columns, not {stride}")
        self.stride = stride
        self.sub_steps = self.WIDTH_MULTIPLE // stride
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(
            *conv_bn(1, c1), nn.MaxPool2d(2),                                   # 32 -> 16, W/2
            *conv_bn(c1, c2), nn.MaxPool2d(2),                                  # 16 -> 8,  W/4
            *conv_bn(c2, c3), *conv_bn(c3, c3), nn.MaxPool2d((2, 1)),           # 8 -> 4
            *conv_bn(c3, c4), nn.MaxPool2d((2, 1)),                             # 4 -> 2
            nn.Conv2d(c4, c4, (2, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(c4), nn.ReLU(),  # 2 -> 1
            *[m for _ in range(2) for m in (nn.Conv2d(c4, c4, (1, 3), padding=(0, 2), dilation=(1, 2), bias=False),
                                            nn.BatchNorm2d(c4), nn.ReLU())],
        )
        self.head = nn.Conv2d(c4, self.sub_steps * (num_classes + 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.features(x)).squeeze(2)  # [N, sub_steps * C, T]
        n, _, t = y.shape
        # Channel group j of step t is output step sub_steps * t + j.
        return y.view(n, self.sub_steps, -1, t).permute(0, 3, 1, 2).reshape(n, t * self.sub_steps, -1)


ARCHS = {"seed": SeedCNN, "edge": EdgeCNN, "reader": RowReader}


def build_model(arch: str, **config) -> nn.Module:
    """Build an architecture by name from the keyword arguments stored in a checkpoint."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    return ARCHS[arch](**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
