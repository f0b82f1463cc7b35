"""python -m export.to_onnx CHECKPOINT: write the FP32 ONNX model of a checkpoint, verified.

The model is exported to a temporary file beside OUT, checked (onnx checker,
ONNX Runtime load, interface, metadata) and compared with the PyTorch model
on the whole test set; only then is it renamed to OUT. Any failure leaves
no file behind.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from train.checkpoint import CheckpointError, load, load_model, sha256
from train.files import atomic_output, clean_stale_temps, sigterm_as_interrupt
from train.idx import DATA_ENV, DataError, resolve_data_dir

from .data import load_pixels
from .errors import ExportError
from .onnx_model import (DEFAULT_OPSET, check_file, export_graph, metadata, open_session, run_session,
                         set_metadata, wrap)
from .parity import Parity, compare, torch_logits
from .reader import export_reader, is_reader_checkpoint
from .verify import check_fp32_parity, check_interface, check_metadata, session_metadata

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
        parity = verify_fp32(tmp, out, reference, pixels, labels, tolerance)
        verify_seconds = time.perf_counter() - start
        size = tmp.stat().st_size
    return ExportResult(out, size, seconds, verify_seconds, parity, accuracy)


def verify_fp32(path: Path, name: Path, reference: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
                tolerance: float) -> Parity:
    """The written file, not the in-memory model: what the runtime will read is what gets checked."""
    check_file(path, name)
    session = open_session(path)
    check_interface(session, name)
    check_metadata(session_metadata(session), name, "fp32")
    parity = compare(reference, run_session(session, pixels), labels)
    check_fp32_parity(parity, name, tolerance)
    return parity


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.to_onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt written by python -m train")
    p.add_argument("-o", "--out", help="output .onnx (default: the checkpoint's path with .onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--data-dir", help=f"MNIST IDX files for the parity check (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                   help=f"largest allowed |ONNX - PyTorch| logit difference (default {FP32_TOLERANCE:g})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    clean_stale_temps(out.parent, [out.name])  # of an export killed while writing
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
