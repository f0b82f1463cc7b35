"""An ONNX file against the contract of docs/FORMATS.md and against the model it was made from.

Everything the export commands check a written file with, and what their
reports and the tests measure, so all of them measure the same thing:
reading and loading a file, its interface and metadata, the test images,
and the parity of its logits with a reference's. No torch here: the
quantizer uses this module alone (torch is in to_onnx.py, the export itself).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from train.idx import load_split

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
FORMAT_VERSION = "1"


class ExportError(Exception):
    """An ONNX file is unreadable or invalid, or a written model fails its checks.

    Checkpoint and dataset problems keep their own types from train/
    (`CheckpointError`, `DataError`); each message names the file and the problem in one line.
    """


class VerificationError(ExportError):
    """A freshly written model disagrees with the model it was made from."""


# ------------------------------------------------------------ the test images

def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]: exactly what an ONNX model takes."""
    return (images.astype(np.float32) / np.float32(255.0))[:, None]


def load_pixels(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as model input and int64 labels; raises DataError naming the file at fault."""
    images, labels = load_split(data_dir, split)
    return to_pixels(images), labels.astype(np.int64)


# ------------------------------------------------------------ files, sessions, metadata

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


def session_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


# ------------------------------------------------------------ parity

@dataclass(frozen=True)
class Parity:
    """Candidate logits against reference logits on `images` labelled images."""

    images: int
    agreement: float           # fraction of images where both give the same class
    max_abs_diff: float        # largest |reference logit - candidate logit|
    reference_accuracy: float  # test accuracy of the reference
    accuracy: float            # test accuracy of the candidate

    def as_dict(self) -> dict:
        return asdict(self)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> Parity:
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    # NaN compares false with everything: a NaN logit would make every
    # tolerance check pass. A non-finite row disagrees, and makes the
    # difference infinite.
    finite = np.isfinite(reference).all(1) & np.isfinite(candidate).all(1)
    diff = np.abs(reference.astype(np.float64) - candidate).max() if finite.all() else float("inf")
    return Parity(
        images=len(labels),
        agreement=float(((reference.argmax(1) == candidate.argmax(1)) & finite).mean()),
        max_abs_diff=float(diff),
        reference_accuracy=accuracy(reference, labels),
        accuracy=accuracy(candidate, labels),
    )


def onnx_logits(model: str | os.PathLike, pixels: np.ndarray, batch_size: int = 1000, threads: int = 0) -> np.ndarray:
    """An ONNX file's logits through ONNX Runtime's CPU provider."""
    return run_session(open_session(model, threads), pixels, batch_size)


def parity_table(reference: np.ndarray, models: dict[str, str | os.PathLike], pixels: np.ndarray,
                 labels: np.ndarray, batch_size: int = 1000) -> dict[str, Parity]:
    """Every model file (keyed by precision) against one reference's logits (the PyTorch model's)."""
    return {name: compare(reference, onnx_logits(path, pixels, batch_size), labels) for name, path in models.items()}


# ------------------------------------------------------------ the checks a written file passes

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


def verify(path: Path, name: Path, precision: str, reference: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
           *, tolerance: float | None = None, min_agreement: float | None = None,
           reference_name: str = "the FP32 model") -> Parity:
    """The written file, not the in-memory model: what the runtime will read is what gets checked.

    onnx.checker, an ONNX Runtime load, the interface, the metadata (of ``precision``), then its logits
    against ``reference``: within ``tolerance`` (FP32 against PyTorch), or the same class on at least
    ``min_agreement`` of the images (a reduced precision against FP32). ``name`` is the path to report:
    the final one when ``path`` is its temporary file.
    """
    check_file(path, name)
    session = open_session(path)
    check_interface(session, name)
    check_metadata(session_metadata(session), name, precision)
    parity = compare(reference, run_session(session, pixels), labels)
    check_parity(parity, name, tolerance=tolerance, min_agreement=min_agreement, reference_name=reference_name)
    return parity


def check_parity(parity: Parity, name: str | os.PathLike, *, tolerance: float | None = None,
                 min_agreement: float | None = None, reference_name: str = "the FP32 model") -> None:
    """FP32 must reproduce PyTorch up to float rounding (different kernels, BatchNorm folded): ``tolerance``.
    A reduced precision must give the reference's class on nearly every test image: ``min_agreement``."""
    if tolerance is not None and not parity.max_abs_diff <= tolerance:  # NaN fails too
        raise VerificationError(f"{name}: ONNX logits differ from PyTorch by up to {parity.max_abs_diff:.3g} "
                                f"(tolerance {tolerance:g}, argmax agreement {parity.agreement:.2%}); not written")
    if min_agreement is not None and parity.agreement < min_agreement:
        raise VerificationError(f"{name}: argmax agrees with {reference_name} on only {parity.agreement:.2%} of "
                                f"{parity.images} test images (minimum {min_agreement:.2%}); not written")
