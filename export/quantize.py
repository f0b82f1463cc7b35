"""python -m export.quantize MODEL.onnx: static INT8 (and optionally FP16) variants of an FP32 model, verified.

INT8: onnxruntime's own pre-processing, then one `quantize_static` call in
QDQ format calibrated on TRAINING images (never test images). Every variant
is written to a temporary file, checked (onnx checker, ONNX Runtime load,
interface, metadata) and compared with the FP32 model on the whole test set;
only then is it renamed into place.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from train.files import atomic_output, clean_stale_temps, sigterm_as_interrupt
from train.idx import DATA_ENV, DataError, load_split, resolve_data_dir

from .compact import compact
from .rewrite import keep_narrow_convs_float
from .verify import (
    INPUT_NAME,
    ExportError,
    Parity,
    check_interface,
    check_metadata,
    compare,
    first_line,
    format_accuracy,
    load_onnx,
    load_pixels,
    open_session,
    read_metadata,
    run_session,
    set_metadata,
    to_pixels,
    verify,
)

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
DEFAULT_METHOD = "minmax"
DEFAULT_CALIBRATION_SIZE = 2000
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 100
# Argmax agreement with the FP32 model below which a variant is not written. The tests ask
# for 99.8 % against PyTorch on the models we ship; this floor catches broken quantization
# without failing on an unlucky small model.
MIN_AGREEMENT = 0.995

# Chosen by measurement (docs/EXPERIMENTS.md). Activations uint8 with weights int8 is the pair onnxruntime's x86 kernels
# (MLAS U8S8) are built for; int8 activations run the same kernels after a shift, u8 weights
# a slower U8U8 path (0.6x). Without VNNI, U8S8 multiplies pairs into int16 with saturation
# (vpmaddubsw): full 8-bit weights cost 0.4 points of accuracy on a wide model, 7-bit weights
# (reduce_range) avoid it at no speed cost. With VNNI (vpdpbusd) or AMX the products are summed
# straight into int32: nothing saturates, and the full 8-bit range is kept. Per-channel weight
# scales: each filter uses its own range. Every op kind is quantized, not only Conv/Gemm, so
# Relu folds into the requantization and MaxPool runs on uint8; quantizing only Conv/Gemm left
# float Relu/MaxPool between DQ/Q pairs and ran ~1.3x slower. The first convolution stays float
# (rewrite.py). The presets below are the candidates benchmarks/int8_formats.py compares.
PRESETS = {
    "u8s8-7bit": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                      per_channel=True, reduce_range=True),
    "u8s8": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                 per_channel=True, reduce_range=False),
    "s8s8": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                 per_channel=True, reduce_range=False),
    "u8s8-per-tensor": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False, reduce_range=False),
    "qop-u8s8": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                     weight_type=QuantType.QInt8, per_channel=True, reduce_range=False),
    "qop-u8s8-7bit": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                          weight_type=QuantType.QInt8, per_channel=True, reduce_range=True),
}
# What runs correctly on every x86 CPU kind: a shipped file is quantized once and run anywhere, and 8-bit
# weights would saturate on CPUs without VNNI. export.pipeline (which makes the shipped files) uses it.
PORTABLE_PRESET = "u8s8-7bit"
# CPU flags of 8-bit dot products that accumulate in int32 without an int16 step.
INT32_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """This machine's CPU flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def preset_for(flags: set[str]) -> str:
    """The INT8 preset for a CPU kind, by its flags: full 8-bit weights where products accumulate in int32
    (VNNI, AMX: measured on this project's Xeon), 7-bit weights where they pass through int16 (AVX2 alone:
    on an AMD EPYC, 8-bit weights lost 2 of 10,000 test digits to saturation for about 10% more speed:
    benchmarks/results/int8_formats_small_amd_avx2.md)."""
    return "u8s8" if flags & set(INT32_DOT_FLAGS) else "u8s8-7bit"
# The classifier's Gemm writes float logits straight from its int32 accumulators (ORT's QGemm
# has a float output): no 8-bit rounding of the logits and two ops fewer.
EXTRA_OPTIONS = {"OpTypesToExcludeOutputQuantization": ["Gemm"]}


class TrainingImages(CalibrationDataReader):
    """Feeds calibration images to the quantizer in batches (the graph has a dynamic batch axis)."""

    def __init__(self, pixels: np.ndarray, batch_size: int = CALIBRATION_BATCH):
        self.batches = [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT_NAME: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


@dataclass(frozen=True)
class VariantResult:
    path: Path
    precision: str
    size: int
    seconds: float        # making the model (pre-processing, calibration, quantization or conversion)
    parity: Parity        # against the FP32 ONNX model on the whole test set
    settings: dict = field(default_factory=dict)


def calibration_pixels(data_dir: str | os.PathLike, size: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """`size` training images drawn at random with a fixed seed: representative of all classes, reproducible."""
    images, _ = load_split(data_dir, "train")
    if not 1 <= size <= len(images):
        raise DataError(f"{data_dir}: calibration size {size} not in 1..{len(images)} (training images)")
    chosen = np.random.default_rng(seed).choice(len(images), size, replace=False)
    return to_pixels(images[np.sort(chosen)])


def load_fp32(path: str | os.PathLike) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The source model: a readable ONNX file that is an edge-digits FP32 model."""
    model = load_onnx(path)
    props = read_metadata(model)
    check_metadata(props, path, "fp32")
    check_interface(open_session(path), path)
    return model, props


def quantize_int8(fp32_path: str | os.PathLike, calibration: np.ndarray,
                  method: str = DEFAULT_METHOD, float_tail: int = 0, preset: str | None = None,
                  float_first: bool = True) -> onnx.ModelProto:
    """Pre-process, calibrate and quantize; intermediate files live in a private temporary directory.
    ``float_tail``: the last convolutions that stay float (a row reader's last layers run on one row of
    steps, cost little, and decide between close readings). ``preset``: a name of PRESETS (default: this
    CPU's, preset_for). ``float_first``: the narrow first convolution stays float (rewrite.py)."""
    settings = PRESETS[preset or preset_for(cpu_flags())]
    with tempfile.TemporaryDirectory(prefix="edge-digits-quant.") as work, quiet_quantizer():
        pre, out = Path(work) / "pre.onnx", Path(work) / "int8.onnx"
        try:
            # Shape inference plus ORT's basic graph optimisation: what quantize_static expects as input.
            quant_pre_process(str(fp32_path), str(pre))
            model = onnx.load(pre)
            keep_float = keep_narrow_convs_float(model) if float_first else []
            if float_tail:
                keep_float += [n.name for n in model.graph.node if n.op_type == "Conv"][-float_tail:]
            onnx.save(model, pre)
            quantize_static(str(pre), str(out), TrainingImages(calibration), calibrate_method=METHODS[method],
                            nodes_to_exclude=keep_float, extra_options=EXTRA_OPTIONS, **settings)
        except Exception as e:  # the quantizer raises many types, from Python and from ORT's C++
            raise ExportError(f"{fp32_path}: quantization failed ({first_line(e)})") from None
        model = onnx.load(out)
    compact(model)
    return model


def convert_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and compute; Cast nodes keep the float32 input and output of the contract."""
    from onnxconverter_common import float16  # optional dependency, only needed here

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    with warnings.catch_warnings():
        # It warns for every weight below float16's range (|w| < 1e-7, set to +-1e-7): harmless here.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(model, keep_io_types=True)


def settings_summary(method: str, calibration_size: int, preset: str) -> dict:
    s = PRESETS[preset]
    width = lambda t: "uint8" if t == QuantType.QUInt8 else "int8"  # noqa: E731
    meant = ("every x86 CPU kind" if preset == PORTABLE_PRESET else
             f"CPUs like this one ({' '.join(sorted(cpu_flags() & set(INT32_DOT_FLAGS))) or 'no VNNI/AMX'})")
    return {"preset": f"{preset}, meant for {meant}",
            "format": "QDQ" if s["quant_format"] == QuantFormat.QDQ else "QOperator",
            "activations": f"{width(s['activation_type'])} per-tensor",
            "weights": f"{width(s['weight_type'])} {'per-channel' if s['per_channel'] else 'per-tensor'}"
                       f"{' (7-bit range)' if s['reduce_range'] else ''}",
            "calibration": f"{method}, {calibration_size} training images (seed {CALIBRATION_SEED})",
            "quantized_ops": "all supported (Conv, Gemm, MaxPool; Relu folded), except convolutions with an input "
                             "channel count not a multiple of 4 (the first, on the 1-channel image), kept float"}


def write_variant(model: onnx.ModelProto, props: dict[str, str], precision: str, out: Path,
                  reference: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
                  min_agreement: float) -> tuple[int, Parity]:
    """Measure `model`, stamp the metadata, write it atomically after verifying the written file."""
    measured = compare(reference, run_session(open_session(model), pixels), labels)
    set_metadata(model, {**props, "precision": precision, "test_accuracy": format_accuracy(measured.accuracy)})
    with atomic_output(out) as tmp:
        onnx.save(model, tmp)
        parity = verify(tmp, out, precision, reference, pixels, labels, min_agreement=min_agreement)
        if format_accuracy(parity.accuracy) != format_accuracy(measured.accuracy):
            raise ExportError(f"{out}: test accuracy changed between two runs "
                              f"({measured.accuracy} then {parity.accuracy}); not written")
        size = tmp.stat().st_size
    return size, parity


def make_variants(fp32_path: str | os.PathLike, out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                  calibration_size: int = DEFAULT_CALIBRATION_SIZE, method: str = DEFAULT_METHOD,
                  fp16_out: str | os.PathLike | None = None,
                  min_agreement: float = MIN_AGREEMENT, preset: str | None = None) -> list[VariantResult]:
    """INT8 at `out`, and FP16 at `fp16_out` when given. Inputs are all checked before any work."""
    fp32_path, out = Path(fp32_path), Path(out)
    fp32, props = load_fp32(fp32_path)
    data_dir = resolve_data_dir(data_dir)
    calibration = calibration_pixels(data_dir, calibration_size)
    pixels, labels = load_pixels(data_dir, "test")
    reference = run_session(open_session(fp32_path), pixels)

    start = time.perf_counter()
    preset = preset or preset_for(cpu_flags())
    int8 = quantize_int8(fp32_path, calibration, method, preset=preset)
    seconds = time.perf_counter() - start
    size, parity = write_variant(int8, props, "int8", out, reference, pixels, labels, min_agreement)
    results = [VariantResult(out, "int8", size, seconds, parity, settings_summary(method, calibration_size, preset))]

    if fp16_out is not None:
        start = time.perf_counter()
        fp16 = convert_fp16(fp32)
        seconds = time.perf_counter() - start
        size, parity = write_variant(fp16, props, "fp16", Path(fp16_out), reference, pixels, labels, min_agreement)
        results.append(VariantResult(Path(fp16_out), "fp16", size, seconds, parity))
    return results


def variant_path(model: str | os.PathLike, precision: str, directory: str | os.PathLike | None = None) -> Path:
    """digits-fp32.onnx -> digits-int8.onnx; model.onnx -> model-int8.onnx."""
    model = Path(model)
    stem = model.stem[:-len("-fp32")] if model.stem.endswith("-fp32") else model.stem
    return Path(directory or model.parent) / f"{stem}-{precision}.onnx"


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice on the root logger and its histogram calibrators print progress
    to stdout; our commands print their own summary. Errors still raise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="FP32 model written by python -m export.to_onnx")
    p.add_argument("-o", "--out",
                   help="INT8 output (default: MODEL-int8.onnx beside MODEL; a -fp32 suffix is replaced)")
    p.add_argument("--data-dir",
                   help=f"MNIST IDX files: training images calibrate, test images verify (default: ${DATA_ENV})")
    p.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE,
                   help=f"training images used for calibration (default {DEFAULT_CALIBRATION_SIZE})")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"calibration method (default {DEFAULT_METHOD})")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="INT8 format (export.quantize.PRESETS); auto: the one for this machine's CPU flags (8-bit "
                        "weights with VNNI/AMX, 7-bit without); the file is then meant for CPUs of this kind")
    p.add_argument("--fp16", action="store_true",
                   help="also write an FP16 model (MODEL-fp16.onnx beside the INT8 output)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help=f"least argmax agreement with the FP32 model on the test set (default {MIN_AGREEMENT})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else variant_path(args.model, "int8")
    from .reader import is_reader_model, quantize_reader

    if is_reader_model(args.model):
        try:
            path, size, seconds, p = quantize_reader(args.model, out, args.data_dir, args.method,
                                                     None if args.preset == "auto" else args.preset)
        except (DataError, ExportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path} ({size / 1024:.1f} KiB, made in {seconds:.1f} s)")
        print(f"  vs FP32 on {p.rows} test rows: same string {p.string_agreement:.2%}, exact rows {p.accuracy:.2%} "
              f"(FP32 {p.reference_accuracy:.2%})")
        return 0
    fp16_out = variant_path(args.model, "fp16", out.parent) if args.fp16 else None
    for path in (out, fp16_out):
        if path is not None:
            clean_stale_temps(path.parent, [path.name])  # of a run killed while writing
    try:
        with sigterm_as_interrupt():
            results = make_variants(args.model, out, args.data_dir, args.calibration_size, args.method, fp16_out,
                                    args.min_agreement, None if args.preset == "auto" else args.preset)
    except (DataError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing more written", file=sys.stderr)
        return 130
    fp32_size = Path(args.model).stat().st_size
    for r in results:
        p = r.parity
        print(f"wrote {r.path} ({r.size / 1024:.1f} KiB = {r.size / fp32_size:.1%} of FP32, "
              f"made in {r.seconds:.1f} s)")
        print(f"  vs FP32 on {p.images} test images: argmax agreement {p.agreement:.2%}, "
              f"max |logit diff| {p.max_abs_diff:.3g}; test accuracy {p.accuracy:.2%} "
              f"(FP32 {p.reference_accuracy:.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
