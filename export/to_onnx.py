"""python -m export.to_onnx CHECKPOINT: write the FP32 ONNX model of a checkpoint, verified.

The export itself: the checkpoint's model behind its input normalisation
(PixelModel), exported with torch.onnx's torch.export-based exporter into
the ONNX model of docs/FORMATS.md (raw-pixel input, metadata).

The model is exported to a temporary file beside OUT, checked (onnx checker,
ONNX Runtime load, interface, metadata) and compared with the PyTorch model
on the whole test set; only then is it renamed to OUT. Any failure leaves
no file behind.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from train.checkpoint import CheckpointError, load, load_model, sha256
from train.files import atomic_output, clean_stale_temps, sigterm_as_interrupt
from train.idx import DATA_ENV, DataError, resolve_data_dir

from .verify import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    Parity,
    first_line,
    load_pixels,
    metadata,
    set_metadata,
    verify,
)

# 18 is the exporter's native opset in torch 2.14 (no version conversion step) and
# supported by every onnxruntime >= 1.14 the runtime may meet.
DEFAULT_OPSET = 18

# Float32 logits of ~10-30 in magnitude: ORT's kernels and the folded BatchNorm
# change rounding at the 1e-6 level; 1e-4 leaves margin without hiding a real bug.
FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size: int
    seconds: float        # export alone (trace, convert, optimise)
    verify_seconds: float
    parity: Parity        # ONNX vs PyTorch on the whole test set
    checkpoint_accuracy: float


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




def torch_logits(module: PixelModel, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The PyTorch model's logits (eval mode, CPU, float32) on raw pixels."""
    module.eval()
    with torch.inference_mode():
        parts = [module(torch.from_numpy(pixels[i:i + batch_size])).numpy()
                 for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts)


def checkpoint_test_accuracy(ckpt: dict, path: str | os.PathLike) -> float:
    value = ckpt.get("metrics", {}).get("test_accuracy")
    if not isinstance(value, (int, float)):
        raise CheckpointError(f"{path}: metrics hold no test_accuracy")
    return float(value)


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                      opset: int = DEFAULT_OPSET, tolerance: float = FP32_TOLERANCE) -> ExportResult:
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load(checkpoint)
    module = wrap(ckpt, load_model(ckpt, checkpoint), checkpoint)
    accuracy = checkpoint_test_accuracy(ckpt, checkpoint)
    pixels, labels = load_pixels(resolve_data_dir(data_dir), "test")  # before the slow part: fail fast

    start = time.perf_counter()
    try:
        model = export_graph(module, opset)
    except ExportError as e:
        raise ExportError(f"{checkpoint}: {e}") from None
    set_metadata(model, metadata(ckpt, sha256(checkpoint), "fp32", accuracy))
    seconds = time.perf_counter() - start

    reference = torch_logits(module, pixels)
    with atomic_output(out) as tmp:
        start = time.perf_counter()
        onnx.save(model, tmp)
        parity = verify(tmp, out, "fp32", reference, pixels, labels, tolerance=tolerance)
        verify_seconds = time.perf_counter() - start
        size = tmp.stat().st_size
    return ExportResult(out, size, seconds, verify_seconds, parity, accuracy)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.to_onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt written by python -m train")
    p.add_argument("-o", "--out", help="output .onnx (default: the checkpoint's path with .onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--data-dir",
                   help=f"MNIST IDX files for the parity check (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                   help=f"largest allowed |ONNX - PyTorch| logit difference (default {FP32_TOLERANCE:g})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    clean_stale_temps(out.parent, [out.name])  # of an export killed while writing
    from .reader import export_reader, is_reader_checkpoint  # reader.py builds on this module

    try:
        with sigterm_as_interrupt():
            if is_reader_checkpoint(args.checkpoint):
                path, size, p = export_reader(args.checkpoint, out, args.data_dir, args.opset)
                print(f"wrote {path} ({size / 1024:.1f} KiB)")
                print(f"  vs PyTorch on {p.rows} test rows: same string {p.string_agreement:.2%}, max |logit diff| "
                      f"{p.max_abs_diff:.2g}, exact rows {p.accuracy:.2%}")
                return 0
            r = export_checkpoint(args.checkpoint, out, args.data_dir, args.opset, args.tolerance)
    except (CheckpointError, DataError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    p = r.parity
    print(f"wrote {r.path} ({r.size / 1024:.1f} KiB, exported in {r.seconds:.1f} s)")
    print(f"  vs PyTorch on {p.images} test images: argmax agreement {p.agreement:.2%}, "
          f"max |logit diff| {p.max_abs_diff:.2g}")
    print(f"  test accuracy {p.accuracy:.2%} (checkpoint says {r.checkpoint_accuracy:.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
