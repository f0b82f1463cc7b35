"""ONNX model loading: session, providers, threads and the metadata contract.

Everything the runtime knows about a model comes from the file itself
(docs/FORMATS.md, "ONNX model"): input name and size, value range,
polarity and class labels. No constants are duplicated here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# The classifier's file per precision: what export.pipeline writes (fp32 and int8 are shipped here), and what
# the benchmarks look for.
CLASSIFIER_FILES = {"fp32": "digits-fp32.onnx", "int8": "digits-int8.onnx", "fp16": "digits-fp16.onnx"}
DEFAULT_MODEL = MODELS_DIR / CLASSIFIER_FILES["int8"]
# Shipped classifiers by name (``--model accurate``, runtime/models/ACCURATE_CARD.md): the accurate model has 5x
# the default's compute and taught it (the small default reads as many photo digits).
NAMED_MODELS = {"default": DEFAULT_MODEL, "accurate": MODELS_DIR / "digits-accurate-int8.onnx",
                "accurate-fp32": MODELS_DIR / "digits-accurate-fp32.onnx",
                "default-fp32": MODELS_DIR / CLASSIFIER_FILES["fp32"]}
# FP32: the INT8 reader did not pass its parity gate (runtime/models/READER_CARD.md).
DEFAULT_READER = MODELS_DIR / "reader-fp32.onnx"
TASKS = {"classifier", "row-reader"}
SUPPORTED_FORMAT_VERSIONS = {"1"}
POLARITIES = {"light-on-dark", "dark-on-light"}


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to feed and read a model, from its metadata."""

    path: Path
    input_name: str
    output_name: str
    input_size: int
    input_range: tuple[float, float]
    polarity: str
    classes: tuple[str, ...]
    metadata: dict[str, str]
    task: str = "classifier"  # or "row-reader": input_size is then the row height, any width
    stride: int = 0  # row reader: input columns per output step
    blank: int = -1  # row reader: index of the CTC blank among the outputs

    @property
    def precision(self) -> str:
        return self.metadata.get("precision", "unknown")


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Intra-op threads: the cores this process may use, at most 4.

    A 28x28 CNN gains little past 4 threads, and an edge device usually
    runs the camera loop and other work beside us.
    """
    return max(1, min(4, usable_cores()))


def pick_providers(device: str = "auto") -> list[str]:
    """CUDA when onnxruntime-gpu is installed (it falls back to CPU by itself
    when no GPU is usable), otherwise CPU."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError("CUDA requested but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def model_path(model: str | os.PathLike | None) -> Path:
    """The file of ``model``: a path, or a shipped model's name (NAMED_MODELS) when no such file exists."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    return NAMED_MODELS[str(model)] if str(model) in NAMED_MODELS and not path.exists() else path


def load_session(path: str | os.PathLike | None = None, threads: int | None = None,
                 device: str = "auto") -> tuple[ort.InferenceSession, ModelInfo]:
    """Open a model (a file, or a shipped model's name) and check it against the metadata contract."""
    path = model_path(path)
    if not path.is_file():
        hint = " (the shipped model is missing: reinstall the package)" if path == DEFAULT_MODEL else ""
        raise ModelError(f"{path}: model file not found{hint}")
    if threads is not None and threads < 1:
        raise ModelError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no provider chatter on stderr
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model ({e.strerror or e})") from None
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=pick_providers(device))
    except Exception as e:  # onnxruntime raises several untyped errors for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a valid ONNX model ({reason[:200]})") from None
    return session, read_model_info(session, path)


def read_model_info(session: ort.InferenceSession, path: Path) -> ModelInfo:
    meta = dict(session.get_modelmeta().custom_metadata_map)

    def need(key: str) -> str:
        if key not in meta:
            raise ModelError(f"{path}: metadata key {key!r} missing (not an edge-digits model?)")
        return meta[key]

    version = need("edge_digits.format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelError(f"{path}: model format version {version} not supported "
                         f"(this runtime reads {sorted(SUPPORTED_FORMAT_VERSIONS)})")
    try:
        classes = json.loads(need("classes"))
        lo, hi = (float(v) for v in json.loads(meta.get("input_range", "[0.0, 1.0]")))
        size = int(need("input_size"))
    except (ValueError, TypeError) as e:
        raise ModelError(f"{path}: malformed metadata ({e})") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{path}: metadata 'classes' must be a non-empty JSON list of strings")
    if meta.get("input_layout", "NCHW") != "NCHW":
        raise ModelError(f"{path}: input layout {meta['input_layout']!r} not supported (NCHW only)")
    if meta.get("normalization", "folded") != "folded":
        raise ModelError(f"{path}: normalization {meta['normalization']!r} not supported "
                         "(must be folded into the graph)")
    polarity = meta.get("input_polarity", "light-on-dark")
    if polarity not in POLARITIES:
        raise ModelError(f"{path}: unknown input polarity {polarity!r}")
    if size < 8:
        raise ModelError(f"{path}: input size {size} too small")
    task = meta.get("task", "classifier")
    if task not in TASKS:
        raise ModelError(f"{path}: unknown task {task!r} (this runtime knows {sorted(TASKS)})")
    stride, blank = 0, -1
    if task == "row-reader":
        try:
            stride, blank = int(need("output_stride")), int(need("blank_index"))
        except ValueError as e:
            raise ModelError(f"{path}: malformed metadata ({e})") from None
        if stride < 1 or blank != len(classes):
            raise ModelError(f"{path}: reader stride {stride} and blank index {blank} do not fit "
                             f"{len(classes)} classes")

    inputs, outputs = session.get_inputs(), session.get_outputs()
    input_name = meta.get("input_name", "pixels")
    if [i.name for i in inputs] != [input_name]:
        raise ModelError(f"{path}: expected one input named {input_name!r}, model has {[i.name for i in inputs]}")
    shape = inputs[0].shape
    want_shape = (1, size, size) if task == "classifier" else (1, size, None)
    if len(shape) != 4 or any(isinstance(d, int) and want is not None and d != want
                              for d, want in zip(shape[1:], want_shape)):
        raise ModelError(f"{path}: input shape {shape} does not match [N, 1, {size}, {want_shape[2] or 'W'}]")
    names = [o.name for o in outputs]
    output_name = "logits" if "logits" in names else None
    if output_name is None:
        raise ModelError(f"{path}: no output named 'logits' (outputs: {names})")
    out_shape = outputs[names.index("logits")].shape
    outputs_per_step = len(classes) + (task == "row-reader")
    if len(out_shape) in (2, 3) and isinstance(out_shape[-1], int) and out_shape[-1] != outputs_per_step:
        raise ModelError(f"{path}: {out_shape[-1]} outputs but {len(classes)} classes in metadata")
    return ModelInfo(path=path, input_name=input_name, output_name=output_name, input_size=size,
                     input_range=(lo, hi), polarity=polarity, classes=tuple(classes), metadata=meta,
                     task=task, stride=stride, blank=blank)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
