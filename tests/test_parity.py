"""export/parity.py, and the shipped INT8 model still scoring what its model card says."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from conftest import REPO
from export.data import load_pixels
from export.parity import accuracy, compare, onnx_logits
from train.checkpoint import sha256

SHIPPED_INT8 = REPO / "runtime" / "models" / "digits-int8.onnx"
MODEL_CARD = REPO / "runtime" / "models" / "MODEL_CARD.md"
ACCURACY_FLOOR = 0.994


def test_compare_counts_agreement_accuracy_and_largest_difference():
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]], np.float32)
    candidate = reference.copy()
    candidate[1] = [0.0, 1.0, 1.5]   # argmax changes: 1 -> 2
    candidate[3, 0] = 5.25           # same class, logit moved by 0.25
    labels = np.array([0, 1, 2, 1])
    p = compare(reference, candidate, labels)
    assert p.images == 4
    assert p.agreement == 0.75
    assert p.max_abs_diff == pytest.approx(2.0)
    assert p.reference_accuracy == 0.75 and p.accuracy == 0.5


def test_compare_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros((3, 10)), np.zeros((4, 10)), np.zeros(3))


def card_accuracy(precision: str) -> float:
    """Test accuracy of a file as MODEL_CARD.md's files table states it:
    | `digits-int8.onnx` | int8 | 110,140 B (107.6 KiB) | 99.54% | `sha...` |"""
    for line in MODEL_CARD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[1] == precision and cells[0].strip("`").endswith(".onnx"):
            return float(re.search(r"([\d.]+)\s*%", cells[3]).group(1)) / 100
    raise AssertionError(f"{MODEL_CARD}: no {precision} row in the files table")


@pytest.mark.skipif(not SHIPPED_INT8.exists(), reason="no shipped model yet (python -m export.pipeline --ship)")
def test_shipped_int8_model_keeps_its_accuracy(mnist_dir):
    pixels, labels = load_pixels(mnist_dir, "test")
    measured = accuracy(onnx_logits(SHIPPED_INT8, pixels), labels)
    meta = {p.key: p.value for p in onnx.load(SHIPPED_INT8).metadata_props}
    assert meta["precision"] == "int8"
    stated = float(meta["test_accuracy"])
    assert measured >= ACCURACY_FLOOR, f"{SHIPPED_INT8}: {measured:.2%} < {ACCURACY_FLOOR:.1%}"
    assert measured >= stated - 1e-9, f"{SHIPPED_INT8}: {measured:.4f} below its own metadata ({stated})"
    # the card rounds to 0.01 points
    assert measured >= card_accuracy("int8") - 0.00005, f"{SHIPPED_INT8}: {measured:.4f} below MODEL_CARD.md"


@pytest.mark.skipif(not SHIPPED_INT8.exists(), reason="no shipped model yet (python -m export.pipeline --ship)")
def test_model_card_describes_the_shipped_files():
    card = MODEL_CARD.read_text()
    for name in ("digits-fp32.onnx", "digits-int8.onnx"):
        assert sha256(REPO / "runtime" / "models" / name) in card, f"{MODEL_CARD}: SHA-256 of {name} is stale"


def test_nan_never_passes_parity():
    """NaN compares false with everything: a NaN model must fail, not pass."""
    from export.errors import VerificationError
    from export.verify import check_fp32_parity

    reference = np.eye(3, dtype=np.float32)
    candidate = reference.copy()
    candidate[1] = np.nan
    p = compare(reference, candidate, np.arange(3))
    assert p.max_abs_diff == float("inf") and p.agreement == pytest.approx(2 / 3)
    with pytest.raises(VerificationError):
        check_fp32_parity(p, "m.onnx", 1e-4)
    assert compare(candidate, candidate, np.arange(3)).agreement == pytest.approx(2 / 3)


# ------------------------------------------------------------ the shipped row reader

READER_CHECKPOINT = REPO / "checkpoints" / "reader.pt"


def test_shipped_reader_exports_and_quantizes_with_string_parity(tmp_path, mnist_dir):
    """From the shipped reader's checkpoint, on 2,000 synthetic rows of MNIST test digits: the FP32 ONNX
    file reads every row as PyTorch does, the INT8 file reads at least 99.5% of rows as FP32 does and loses
    at most 0.3 points of exact-row accuracy (export.reader refuses to write a file that does not)."""
    from export.reader import MAX_ACCURACY_DROP, MIN_STRING_AGREEMENT, TEST_ROWS, export_reader, quantize_reader

    assert TEST_ROWS >= 2000 and MIN_STRING_AGREEMENT >= 0.995 and MAX_ACCURACY_DROP <= 0.003
    fp32 = tmp_path / "reader-fp32.onnx"
    _, _, parity = export_reader(READER_CHECKPOINT, fp32, mnist_dir)
    assert parity.rows == TEST_ROWS and parity.string_agreement == 1.0
    _, _, _, p8 = quantize_reader(fp32, tmp_path / "reader-int8.onnx", mnist_dir)
    assert p8.string_agreement >= 0.995 and p8.reference_accuracy - p8.accuracy <= 0.003
    assert p8.accuracy >= 0.9  # and it reads: not parity between two models that read nothing
