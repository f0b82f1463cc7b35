"""Quantization-aware fine-tuning of the row reader, for ONNX Runtime's static INT8 (export/reader.py).

ONNX Runtime folds each BatchNorm into its convolution, rounds the folded weights per output
channel (symmetric, 7 bits on the portable preset) and every activation between quantized
convolutions per tensor (uint8 over the calibrated range; after a ReLU that is [0, max]). The
reader's first convolution (one input channel) and its head stay float. Rows whose reading sits
between two strings flip under that rounding: INT8 read 97-98% of hard test rows as FP32 did,
against the 99.5% an INT8 reader must reach. ``python -m train --recipe reader --init CKPT --qat``
trains with the same rounding in the forward pass (straight-through gradients, BatchNorm
statistics frozen), so the reader learns margins that survive it. The checkpoint stays a plain
float reader: exported and quantized like any other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import RowReader

# Weights in [-64, 64]: ONNX Runtime's symmetric int8 with reduce_range, export.quantize.PORTABLE_PRESET (a
# reader that survives 7-bit weights survives 8-bit ones too).
WEIGHT_LEVELS = 64
ACTIVATION_LEVELS = 255  # uint8
CALIBRATION_ROWS = 500  # as export.reader calibrates: ranges are the float reader's largest activations on them
RECALIBRATE_EVERY = 100  # training steps: the ranges follow the weights as they move


class QuantAware(nn.Module):
    """A RowReader's forward pass with INT8 rounding simulated; its parameters are the reader's own.

    Activation ranges come from the float reader on fixed calibration rows (min-max calibration, as
    the export does), renewed every RECALIBRATE_EVERY training steps."""

    def __init__(self, reader: RowReader, calibration: torch.Tensor):
        super().__init__()
        self.reader = reader
        self.calibration = calibration  # normalised rows [N, 1, H, W]
        self.steps = []  # (conv, bn) for every convolution block (conv, BatchNorm, ReLU), and what runs between
        mods = list(reader.features)
        i = 0
        while i < len(mods):
            if isinstance(mods[i], nn.Conv2d):
                if not (isinstance(mods[i + 1], nn.BatchNorm2d) and isinstance(mods[i + 2], nn.ReLU)):
                    raise ValueError("QuantAware expects every convolution of the features as conv, BatchNorm, ReLU")
                self.steps.append((mods[i], mods[i + 1]))
                i += 3
            else:
                self.steps.append(mods[i])
                i += 1
        self.register_buffer("ranges", torch.zeros(sum(isinstance(s, tuple) for s in self.steps)))
        self.calls = 0
        self.calibrate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self.calls and self.calls % RECALIBRATE_EVERY == 0:
                self.calibrate()
            self.calls += 1
        return self.run(x, rounded=True)

    @torch.no_grad()
    def calibrate(self) -> None:
        self.ranges.zero_()
        for i in range(0, len(self.calibration), 100):
            self.run(self.calibration[i:i + 100], rounded=False, calibrating=True)

    def run(self, x: torch.Tensor, rounded: bool, calibrating: bool = False) -> torch.Tensor:
        k = 0
        for step in self.steps:
            if not isinstance(step, tuple):
                x = step(x)  # max-pooling commutes with rounding: nothing to simulate
                continue
            conv, bn = step
            weight, bias = fold(conv, bn)
            if rounded and k > 0:  # the first convolution stays float (export.rewrite.keep_narrow_convs_float)
                weight = round_weights(weight)
            x = F.relu(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation))
            if calibrating:
                self.ranges[k] = torch.maximum(self.ranges[k], x.amax())
            if rounded:
                x = torch.fake_quantize_per_tensor_affine(x, float(self.ranges[k]) / ACTIVATION_LEVELS, 0, 0,
                                                          ACTIVATION_LEVELS)
            k += 1
        return self.reader.readout(self.reader.head(x))  # the head stays float (export.reader.FLOAT_TAIL)


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution with its BatchNorm folded in, from the running statistics (frozen while training)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def round_weights(weight: torch.Tensor, levels: int = WEIGHT_LEVELS) -> torch.Tensor:
    """Symmetric per-output-channel rounding to [-levels, levels] (as onnxruntime.quantization's
    symmetric int8), with a straight-through gradient."""
    scale = weight.detach().abs().amax((1, 2, 3)).clamp(min=1e-8) / levels
    zero = torch.zeros(len(scale), dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -levels, levels)
