"""Export and quantize a row reader (arch ``reader``), verified on rows of MNIST test digits.

``python -m export.to_onnx`` and ``python -m export.quantize`` hand reader
checkpoints and models to this module. The checks differ from a
classifier's because a reader's answer is a string: the FP32 file must read
the same strings as PyTorch on every test row (and its scores agree to float
rounding), and the INT8 file must read the same strings as FP32 on at least
MIN_STRING_AGREEMENT of the rows, losing at most MAX_ACCURACY_DROP of exact-row
accuracy. Rows are made by train.rows from MNIST *test* digits (seeded, so
every run checks the same rows); INT8 calibration uses rows of *training* digits.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from train.checkpoint import load, load_model, sha256
from train.files import atomic_output
from train.idx import load_split, resolve_data_dir
from train.reader import fixed_rows, greedy_decode, output_stride
from train.rows import RowMaker

from .to_onnx import DEFAULT_OPSET, export_graph, wrap
from .verify import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    VerificationError,
    check_file,
    check_metadata,
    format_accuracy,
    metadata,
    open_session,
    read_metadata,
    session_metadata,
    set_metadata,
)

TEST_ROWS = 2000
TEST_SEED = 2024
CALIBRATION_ROWS = 500  # a multiple of the quantizer's batch of 100: histogram calibrators need equal batches
CALIBRATION_SEED = 7
FP32_TOLERANCE = 1e-3  # logits over rows of hundreds of columns: a little more rounding than a 28x28 image
MIN_STRING_AGREEMENT = 0.995
FLOAT_TAIL = 1  # the head stays float (its logits decide between close readings). Keeping the last 4
# convolutions float as well agreed with FP32 on 95.0% of test rows against 94.8% (shipped reader, 1,000 rows)
# at 563 KiB against 242 KiB: over the 500 KiB an edge reader may take, for no real gain.
MAX_ACCURACY_DROP = 0.003


@dataclass
class RowSet:
    """Rows as batches the way the runtime feeds them: [B, 1, 32, W] float32 in [0, 1], padded per batch."""

    batches: list[np.ndarray]
    widths: list[np.ndarray]
    texts: list[str]


@dataclass(frozen=True)
class ReaderParity:
    rows: int
    string_agreement: float  # rows read the same as the reference
    max_abs_diff: float  # largest |reference logit - candidate logit| over the rows' own columns
    reference_accuracy: float  # exact-row accuracy of the reference
    accuracy: float  # exact-row accuracy of the candidate


def make_rows(data_dir: str | os.PathLike, split: str, count: int, seed: int, batch: int = 250) -> RowSet:
    images, labels = load_split(data_dir, split)
    sets = fixed_rows(RowMaker(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))), count, seed,
                      batch)
    return RowSet([b.images.numpy() for b in sets], [b.widths.numpy() for b in sets],
                  [t for b in sets for t in b.texts()])


def decode(logits: list[np.ndarray], rows: RowSet) -> list[str]:
    texts = []
    for out, images, widths in zip(logits, rows.batches, rows.widths):
        stride = output_stride(images.shape[3], out.shape[1])
        texts += greedy_decode(torch.from_numpy(out), torch.from_numpy(widths), stride)
    return texts


def compare(reference: list[np.ndarray], candidate: list[np.ndarray], rows: RowSet) -> ReaderParity:
    ref, cand = decode(reference, rows), decode(candidate, rows)
    diff = 0.0
    for r, c, images, widths in zip(reference, candidate, rows.batches, rows.widths):
        for k, w in enumerate(widths):
            steps = -(-int(w) // output_stride(images.shape[3], r.shape[1]))
            diff = max(diff, float(np.abs(r[k, :steps].astype(np.float64) - c[k, :steps]).max()))
    return ReaderParity(len(ref), float(np.mean([a == b for a, b in zip(ref, cand)])), diff,
                        float(np.mean([a == t for a, t in zip(ref, rows.texts)])),
                        float(np.mean([b == t for b, t in zip(cand, rows.texts)])))


def session_logits(session: ort.InferenceSession, rows: RowSet) -> list[np.ndarray]:
    return [session.run([OUTPUT_NAME], {INPUT_NAME: b})[0] for b in rows.batches]


def reader_metadata(ckpt: dict, checkpoint_sha256: str, precision: str, accuracy: float) -> dict[str, str]:
    spec = ckpt["input"]
    return {**metadata(ckpt, checkpoint_sha256, precision, accuracy), "task": "row-reader",
            "input_size": str(spec["shape"][1]), "output_stride": str(spec["stride"]),
            "blank_index": str(spec["blank"])}


def check_reader_interface(session: ort.InferenceSession, name) -> None:
    """One float input `pixels` [N, 1, H, W] with N and W dynamic; one float output `logits` [N, T, classes + 1]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ExportError(f"{name}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    shape, out_shape = inputs[0].shape, outputs[0].shape
    if len(shape) != 4 or isinstance(shape[0], int) or isinstance(shape[3], int) or shape[1] != 1:
        raise ExportError(f"{name}: input shape {shape} is not [N, 1, H, W] with N and W dynamic")
    if len(out_shape) != 3:
        raise ExportError(f"{name}: output shape {out_shape} is not [N, steps, classes + 1]")


def verify(path: Path, name: Path, precision: str, reference: list[np.ndarray], rows: RowSet) -> ReaderParity:
    """The written file is what gets checked: checker, load, interface, metadata, then its readings."""
    check_file(path, name)
    session = open_session(path)
    check_reader_interface(session, name)
    props = session_metadata(session)
    check_metadata(props, name, precision)
    if props.get("task") != "row-reader":
        raise ExportError(f"{name}: metadata task is {props.get('task')!r}, not 'row-reader'")
    return compare(reference, session_logits(session, rows), rows)


def export_reader(checkpoint: str | os.PathLike, out: str | os.PathLike, data_dir=None,
                  opset: int = DEFAULT_OPSET, tolerance: float = FP32_TOLERANCE) -> tuple[Path, int, ReaderParity]:
    """FP32 ONNX of a reader checkpoint; written only if it reads every test row as PyTorch does."""
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load(checkpoint)
    module = wrap(ckpt, load_model(ckpt, checkpoint))
    rows = make_rows(resolve_data_dir(data_dir), "test", TEST_ROWS, TEST_SEED)
    height = ckpt["input"]["shape"][1]
    model = export_graph(module, opset, example=torch.rand(2, 1, height, 64), dynamic_axes={0: "N", 3: "W"})
    with torch.inference_mode():
        reference = [module(torch.from_numpy(b)).numpy() for b in rows.batches]
    accuracy = float(np.mean([a == t for a, t in zip(decode(reference, rows), rows.texts)]))
    set_metadata(model, reader_metadata(ckpt, sha256(checkpoint), "fp32", accuracy))
    with atomic_output(out) as tmp:
        onnx.save(model, tmp)
        parity = verify(tmp, out, "fp32", reference, rows)
        if parity.string_agreement < 1.0 or parity.max_abs_diff > tolerance:
            raise VerificationError(f"{out}: ONNX reads {parity.string_agreement:.2%} of {parity.rows} test rows as "
                                    f"PyTorch does (need 100%), logits differ by up to {parity.max_abs_diff:.3g} "
                                    f"(tolerance {tolerance:g}); not written")
        size = tmp.stat().st_size
    return out, size, parity


def quantize_reader(fp32_path: str | os.PathLike, out: str | os.PathLike, data_dir=None,
                    method: str = "minmax", preset: str | None = None) -> tuple[Path, int, float, ReaderParity]:
    """Static INT8 of a reader, calibrated on rows of training digits; written only if it reads the test rows
    nearly as the FP32 model does. ``preset``: export.quantize.PRESETS' name (default: this CPU's)."""
    from .quantize import quantize_int8  # the classifier's one quantizer call, with the reader's calibration

    fp32_path, out = Path(fp32_path), Path(out)
    data_dir = resolve_data_dir(data_dir)
    props = read_metadata(onnx.load(fp32_path))
    calibration = make_rows(data_dir, "train", CALIBRATION_ROWS, CALIBRATION_SEED, batch=CALIBRATION_ROWS)
    rows = make_rows(data_dir, "test", TEST_ROWS, TEST_SEED)
    reference = session_logits(open_session(fp32_path), rows)
    start = time.perf_counter()
    model = quantize_int8(fp32_path, calibration.batches[0], method, float_tail=FLOAT_TAIL, preset=preset)
    seconds = time.perf_counter() - start
    measured = compare(reference, session_logits(open_session(model), rows), rows)
    set_metadata(model, {**props, "precision": "int8", "test_accuracy": format_accuracy(measured.accuracy)})
    with atomic_output(out) as tmp:
        onnx.save(model, tmp)
        parity = verify(tmp, out, "int8", reference, rows)
        dropped = parity.reference_accuracy - parity.accuracy
        if parity.string_agreement < MIN_STRING_AGREEMENT or dropped > MAX_ACCURACY_DROP:
            raise VerificationError(f"{out}: INT8 reads {parity.string_agreement:.2%} of {parity.rows} test rows "
                                    f"as FP32 does (minimum {MIN_STRING_AGREEMENT:.1%}), exact rows "
                                    f"{parity.accuracy:.2%} vs {parity.reference_accuracy:.2%}; not written")
        size = tmp.stat().st_size
    return out, size, seconds, parity


def is_reader_checkpoint(path: str | os.PathLike) -> bool:
    return load(path).get("arch") == "reader"


def is_reader_model(path: str | os.PathLike) -> bool:
    try:
        return read_metadata(onnx.load(path, load_external_data=False)).get("task") == "row-reader"
    except Exception:  # not readable: the classifier path reports it properly
        return False


# ------------------------------------------------------------ the pipeline's reader branch

SHIPPED_READER = {"fp32": "reader-fp32.onnx", "int8": "reader-int8.onnx"}
MAX_INT8_BYTES = 500 * 1024  # an edge budget for the reader's INT8 file


def reader_pipeline(checkpoint: Path, out_dir: Path, data_dir, command: str, ship_dir: Path | None,
                    checkpoint_copy: Path | None, method: str = "minmax") -> str:
    """Export, quantize, report (parity.md / parity.json in ``out_dir``) and, with ``ship_dir``, ship
    the reader files that passed their checks, its card and (to ``checkpoint_copy``) its checkpoint.
    An INT8 file that fails its gate is reported and not shipped; the runtime then reads with FP32."""
    from train.files import copy_file, write_text

    from .quantize import PORTABLE_PRESET  # export.quantize imports this module

    fp32, fp32_size, p32 = export_reader(checkpoint, out_dir / SHIPPED_READER["fp32"], data_dir)
    ckpt = load(checkpoint)
    report = {"command": command, "checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint),
              "method": method, "preset": PORTABLE_PRESET,
              "arch_config": ckpt["arch_config"], "metrics": ckpt["metrics"], "train_config": ckpt["train_config"],
              "fp32": {"file": str(fp32), "size_bytes": fp32_size, "sha256": sha256(fp32), **p32.__dict__}}
    try:
        # The shipped INT8 file runs on every CPU kind: the portable preset, not this machine's.
        int8, int8_size, seconds, p8 = quantize_reader(fp32, out_dir / SHIPPED_READER["int8"], data_dir, method,
                                                       PORTABLE_PRESET)
        report["int8"] = {"file": str(int8), "size_bytes": int8_size, "sha256": sha256(int8),
                          "seconds": round(seconds, 1), **p8.__dict__}
        if int8_size > MAX_INT8_BYTES:
            report["int8_refused"] = f"{int8_size / 1024:.0f} KiB, over the {MAX_INT8_BYTES // 1024} KiB budget"
    except VerificationError as e:
        report["int8_refused"] = str(e)
    text = reader_card(report)
    write_text(out_dir / "parity.json", json.dumps(report, indent=2) + "\n")
    write_text(out_dir / "parity.md", text)
    if ship_dir is not None:
        shipped = ["fp32"] if "int8_refused" in report else ["fp32", "int8"]
        for precision in shipped:
            copy_file(report[precision]["file"], ship_dir / SHIPPED_READER[precision])
        for precision in set(SHIPPED_READER) - set(shipped):
            (ship_dir / SHIPPED_READER[precision]).unlink(missing_ok=True)  # an older file must not pass for this one
        write_text(ship_dir / "READER_CARD.md", text)
        if checkpoint_copy is not None:
            copy_file(checkpoint, checkpoint_copy)
    return text


def reader_settings(t: dict) -> str:
    """A reader's training settings in a line; a soup's (train.soup) are its ingredients', soups within it too."""
    if t.get("soup_of"):
        return "the mean of the weights of " + "; ".join(f"`{i['checkpoint']}` ({reader_settings(i)})"
                                                         for i in t["soup_of"])
    return ", ".join(f"{k} {t[k]}" for k in ("recipe", "epochs", "batch_size", "lr", "weight_decay", "photo_rows",
                                             "photo_share", "bend", "styles", "init", "seed") if t.get(k) is not None)


def reader_card(r: dict) -> str:
    m, t = r["metrics"], r["train_config"]
    rows = "\n".join(f"| `{SHIPPED_READER[p]}` | {p} | {r[p]['size_bytes'] / 1024:.1f} KiB | {r[p]['accuracy']:.2%} | "
                     f"{r[p]['string_agreement']:.2%} | `{r[p]['sha256']}` |" for p in ("fp32", "int8") if p in r)
    if "int8_refused" in r:
        rows += f"\n\n**INT8 not shipped**: {r['int8_refused']}. The runtime reads numbers with the FP32 file."
    photo_rows = (" and on rows the runtime cut out of synthetic photos (" + ", ".join(t["photo_rows"]) + ")"
                  if t.get("photo_rows") else "")
    settings = reader_settings(t)
    if t.get("soup_of"):
        photo_rows = photo_rows or " and on rows the runtime cut out of synthetic photos"
        settings += " (`python -m train.soup`)"
    stride = r["arch_config"].get("stride", 4)
    return f"""# Model card: edge-digits row reader

Reads a row of handwritten digits at once for `runtime/` (`--number`): a convolution-only CNN
(`reader`, {r['arch_config']}, {m.get('parameters', '?'):,} parameters) trained with CTC on synthetic rows of
MNIST training digits{photo_rows}.
Input and output: docs/FORMATS.md, "Row reader" (`pixels` [N, 1, 32, W], `logits` [N, W/{stride}, 11], blank last).

## Files

Exact-row accuracy on {r['fp32']['rows']:,} synthetic rows of MNIST *test* digits (1-8 digits, photo-like
degradations; train/rows.py, seed {TEST_SEED}), read with ONNX Runtime (CPU); agreement: same string as
{'PyTorch'} (FP32) or as the FP32 file (INT8).

| file | precision | size | exact rows | same string | SHA-256 |
| --- | --- | ---: | ---: | ---: | --- |
{rows}

PyTorch checkpoint: validation {m['val_accuracy']:.2%}, test rows {m['test_row_accuracy']:.2%}, clean rows of 5
test digits {m['clean_5_digit_row_accuracy']:.2%}; {m['train_seconds']:.0f} s of training, {m['iterations']} steps.
Checkpoint SHA-256 `{r['checkpoint_sha256']}`.

## How it was made

- Command: `{r['command']}`
- Training settings: {settings}
- FP32: `torch.onnx.export` with dynamic batch and width, BatchNorm folded, opset 18, `onnx.checker` full check.
- INT8: ONNX Runtime static quantization, preset {r.get('preset', 'of the machine')} (QDQ, uint8 activations, \
int8 per-channel weights), calibrated
  ({r['method']}) on {CALIBRATION_ROWS} synthetic rows of MNIST *training* digits; the first and the last \
{FLOAT_TAIL} convolutions stay float.

## Limits

MNIST digits (US writers) re-drawn and degraded synthetically, and synthetic photos of them: other
scripts, letters and symbols are not known to it (it is trained to answer nothing for scribbles and lines,
not for letters).
"""
