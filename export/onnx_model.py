"""Turn a checkpoint's model into the ONNX model of docs/FORMATS.md: raw-pixel input, metadata, sessions.

Everything here works on in-memory `onnx.ModelProto`s; the command-line
modules decide where and when a file is written.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .errors import ExportError

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
FORMAT_VERSION = "1"
# 18 is the exporter's native opset in torch 2.14 (no version conversion step) and
# supported by every onnxruntime >= 1.14 the runtime may meet.
DEFAULT_OPSET = 18


class PixelModel(nn.Module):
    """The checkpoint's model behind its input normalisation, so the graph takes raw [0, 1] pixels.

    The normalisation cannot be folded into the first convolution's weights
    exactly: that conv zero-pads in normalised space, i.e. with pixel value
    ``mean``, not 0. Two elementwise ops on 784 values cost nothing.
    """

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Same expression and order as train.data.to_input, so the float results match bit for bit.
        return self.model((pixels - self.mean) / self.std)


def wrap(ckpt: dict, model: nn.Module, path: str | os.PathLike = "checkpoint") -> PixelModel:
    """The model behind its normalisation, refused when it cannot give a
    meaningful answer: non-finite weights, a degenerate normalisation, or
    non-finite logits on plain inputs (a model that answers NaN would export,
    pass a NaN parity check and print NaN for every image)."""
    from train.checkpoint import CheckpointError

    norm = ckpt.get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, std)) or abs(std) < 1e-6:
        raise CheckpointError(f"{path}: degenerate normalisation (mean={mean!r}, std={std!r}): std must be "
                              "a finite number away from 0")
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: weights are not finite (NaN or inf in {', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''})")
    module = PixelModel(model, mean, std).eval()
    shape = [d if d > 0 else 64 for d in ckpt.get("input", {}).get("shape", [1, 28, 28])]  # a reader: any width
    probe = torch.stack([torch.zeros(shape), torch.ones(shape), torch.full(shape, 0.5)])
    with torch.inference_mode():
        if not torch.isfinite(module(probe)).all():
            raise CheckpointError(f"{path}: the model's logits are not finite (NaN or inf) on plain inputs")
    return module


def export_graph(module: PixelModel, opset: int = DEFAULT_OPSET, example: torch.Tensor | None = None,
                 dynamic_axes: dict[int, str] | None = None) -> onnx.ModelProto:
    """Export with the torch.export-based exporter (torch's default) and a dynamic batch axis
    (``dynamic_axes``: more dynamic input axes, e.g. a row reader's width).

    Its optimizer folds constants and BatchNorm into the convolutions, leaving
    only standard ops (Sub, Div, Conv, Relu, MaxPool, Reshape, Gemm). The
    legacy TorchScript exporter gives the same graph but is deprecated.
    """
    example = torch.rand(2, 1, 28, 28) if example is None else example
    axes = {axis: torch.export.Dim(name) for axis, name in (dynamic_axes or {0: "N"}).items()}
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module, (example,), None, dynamo=True, opset_version=opset, external_data=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"pixels": axes}, optimize=True, verbose=False)
    except Exception as e:  # the exporter raises many types; all mean the same thing to the user
        raise ExportError(f"torch.onnx.export failed: {first_line(e)}") from None
    model = program.model_proto
    produced = opset_of(model)
    if produced != opset:
        # Below its native opset the exporter converts afterwards, and keeps its own opset when that fails.
        raise ExportError(f"cannot export at opset {opset}: the exporter could only produce opset {produced}")
    strip_debug_info(model)
    return infer_shapes(model)


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about its own internals (opset conversion attempts, tracing
    details), tracebacks included; what matters reaches us as an exception or a wrong opset."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces and source names: they are debug aids, not part
    of the model, and in a 30 kB INT8 file they would take a third of the bytes."""
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del value.metadata_props[:]
        value.doc_string = ""
    del graph.value_info[:]  # intermediate shapes: recomputed by infer_shapes when wanted
    del graph.metadata_props[:]
    graph.doc_string = ""
    model.doc_string = ""


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's strict shape inference: proves every op's inputs fit, and records the shapes."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        raise ExportError(f"ONNX shape inference failed: {first_line(e)}") from None


def metadata(ckpt: dict, checkpoint_sha256: str, precision: str, test_accuracy: float) -> dict[str, str]:
    """The metadata_props of docs/FORMATS.md, all strings."""
    return {
        "edge_digits.format_version": FORMAT_VERSION,
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_size": str(ckpt["input"]["shape"][-1]),
        "input_range": json.dumps([float(v) for v in ckpt["input"]["range"]]),
        "input_polarity": ckpt["input"]["polarity"],
        "normalization": "folded",
        "classes": json.dumps(list(ckpt["classes"])),
        "arch": ckpt["arch"],
        "dataset": ckpt["dataset"],
        "precision": precision,
        "test_accuracy": format_accuracy(test_accuracy),
        "checkpoint_sha256": checkpoint_sha256,
    }


def format_accuracy(value: float) -> str:
    # The checkpoint stores a float32-rounded fraction (0.9907000064849854); 6 digits say it without noise.
    return str(round(float(value), 6))


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file, mapping every way it can be bad to one ExportError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends: a corrupt or foreign file
        raise ExportError(f"{path}: not an ONNX model ({first_line(e)})") from None
    if not model.graph.node:
        # protobuf parses many non-ONNX byte strings "successfully" into an empty message
        raise ExportError(f"{path}: not an ONNX model (no graph)")
    return model


def check_file(path: str | os.PathLike, name: str | os.PathLike | None = None) -> None:
    """onnx's full checker (structure, types and strict shape inference) on the file as written.

    `name` is the path to report: the final one when `path` is its temporary file.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{name or path}: fails onnx.checker ({first_line(e)})") from None


def open_session(model: str | os.PathLike | onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A CPU ONNX Runtime session on a file or an in-memory model (threads=0: ORT's default)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's hardware notes would read like problems
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    name = "in-memory model" if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types from C++
        raise ExportError(f"{name}: ONNX Runtime cannot load it ({first_line(e)})") from None


def run_session(session: ort.InferenceSession, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of `pixels` [N, 1, 28, 28] float32, fed `batch_size` images at a time."""
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: pixels[i:i + batch_size]})[0]
             for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line error reports."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(error).__name__
