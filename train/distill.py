"""Knowledge distillation from an exported model: the teacher is an ONNX file run by ONNX Runtime.

The shipped classifier (runtime/models/digits-fp32.onnx) is the teacher of
the small default: its soft targets are computed on every augmented batch,
so the student learns the teacher's answer on the very images it sees
(rotated, sheared, photo crops, outliers), and no teacher checkpoint or
PyTorch code of the teacher's architecture is needed. The file's metadata
(docs/FORMATS.md) fixes its input: pixels in [0, 1], normalisation folded in.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


class Teacher:
    """Logits of an edge-digits classifier ONNX file for normalised training inputs."""

    def __init__(self, path: str | os.PathLike, mean: float, std: float, threads: int = 1):
        import onnxruntime as ort  # only distillation needs it in train/

        if not Path(path).is_file() and (REPO / path).is_file():
            path = REPO / path  # a recipe names the shipped model relative to the repository
        if not Path(path).is_file():
            raise ValueError(f"{path}: --teacher: no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own C++ exception types for unreadable files
            raise ValueError(f"{path}: --teacher: not an ONNX model ONNX Runtime can load "
                             f"({str(e).strip().splitlines()[0][:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [1, 28, 28]:
            raise ValueError(f"{path}: --teacher: expected one input [N, 1, 28, 28] (a digit classifier)")
        self.input_name = inputs[0].name
        self.mean, self.std = mean, std

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits [N, classes] for ``x``, normalised [N, 1, 28, 28] as the student gets it."""
        pixels = np.ascontiguousarray((x.detach().float() * self.std + self.mean).cpu().numpy())
        logits = self.session.run(None, {self.input_name: pixels})[0]
        return torch.from_numpy(logits).to(x.device)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      trusted: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions, times T² so that its gradient
    keeps the scale of a cross-entropy whatever the temperature (Hinton et al., 2015). Mean over the rows
    where ``trusted`` (a float mask; default all)."""
    t = temperature
    per_row = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                       reduction="none").sum(1) * t * t
    if trusted is None:
        return per_row.mean()
    return (per_row * trusted).sum() / trusted.sum().clamp(min=1)
