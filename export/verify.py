"""Checks every written model passes before it is renamed into place."""
from __future__ import annotations

import os

import onnxruntime as ort

from .errors import ExportError, VerificationError
from .onnx_model import INPUT_NAME, OUTPUT_NAME
from .parity import Parity

REQUIRED_METADATA = ("edge_digits.format_version", "input_name", "input_layout", "input_size", "input_range",
                     "input_polarity", "normalization", "classes", "arch", "dataset", "precision",
                     "test_accuracy", "checkpoint_sha256")


def check_interface(session: ort.InferenceSession, name: str | os.PathLike) -> None:
    """One float input `pixels` [N, 1, 28, 28] with N dynamic, one float output `logits` [N, C]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ExportError(f"{name}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found "
                          f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    shape, out_shape = inputs[0].shape, outputs[0].shape
    if inputs[0].type != "tensor(float)" or outputs[0].type != "tensor(float)":
        raise ExportError(f"{name}: input and output must be float32, found {inputs[0].type} -> {outputs[0].type}")
    if len(shape) != 4 or isinstance(shape[0], int) or list(shape[1:]) != [1, 28, 28]:
        raise ExportError(f"{name}: input shape {shape} is not [N, 1, 28, 28] with a dynamic N")
    if len(out_shape) != 2 or isinstance(out_shape[0], int):
        raise ExportError(f"{name}: output shape {out_shape} is not [N, classes] with a dynamic N")


def check_metadata(props: dict[str, str], name: str | os.PathLike, precision: str | None = None) -> None:
    missing = [k for k in REQUIRED_METADATA if k not in props]
    if missing:
        raise ExportError(f"{name}: not an edge-digits model (metadata lacks {', '.join(missing)})")
    if precision is not None and props["precision"] != precision:
        raise ExportError(f"{name}: expected a {precision} model, this one is {props['precision']}")


def check_fp32_parity(parity: Parity, name: str | os.PathLike, tolerance: float) -> None:
    """FP32 ONNX must reproduce PyTorch up to float rounding (different kernels, BatchNorm folded)."""
    if not parity.max_abs_diff <= tolerance:  # NaN fails too
        raise VerificationError(f"{name}: ONNX logits differ from PyTorch by up to {parity.max_abs_diff:.3g} "
                                f"(tolerance {tolerance:g}, argmax agreement {parity.agreement:.2%}); not written")


def check_agreement(parity: Parity, name: str | os.PathLike, min_agreement: float, reference: str) -> None:
    """A reduced-precision model must give the reference's class on nearly every test image."""
    if parity.agreement < min_agreement:
        raise VerificationError(f"{name}: argmax agrees with {reference} on only {parity.agreement:.2%} of "
                                f"{parity.images} test images (minimum {min_agreement:.2%}); not written")


def session_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)

