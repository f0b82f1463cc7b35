"""export/verify.py (parity), and the shipped INT8 model still scoring what its model card says."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.pipeline import READER_CHECKPOINT, SHIP_DIR, SHIP_GATES, SHIPPED_CHECKPOINTS
from export.verify import accuracy, compare, load_pixels, onnx_logits
from train.checkpoint import load, sha256

REPO = Path(__file__).resolve().parents[1]

SHIPPED_INT8 = REPO / "runtime" / "models" / "digits-int8.onnx"
MODEL_CARD = REPO / "runtime" / "models" / "MODEL_CARD.md"
ACCURACY_FLOOR = SHIP_GATES["min_accuracy"]


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
    from export.verify import VerificationError, check_parity

    reference = np.eye(3, dtype=np.float32)
    candidate = reference.copy()
    candidate[1] = np.nan
    p = compare(reference, candidate, np.arange(3))
    assert p.max_abs_diff == float("inf") and p.agreement == pytest.approx(2 / 3)
    with pytest.raises(VerificationError):
        check_parity(p, "m.onnx", tolerance=1e-4)
    with pytest.raises(VerificationError):
        check_parity(p, "m.onnx", min_agreement=0.9)
    assert compare(candidate, candidate, np.arange(3)).agreement == pytest.approx(2 / 3)


# ------------------------------------------------------------ the shipped classifier's checkpoint


def test_every_shipped_model_has_its_checkpoint():
    """The benchmarks run on a fresh install: each shipped file's checkpoint is there, and is the one it came from."""
    for name, checkpoint in SHIPPED_CHECKPOINTS.items():
        meta = {p.key: p.value for p in onnx.load(SHIP_DIR / name).metadata_props}
        ckpt = load(checkpoint)
        made_from = {sha256(checkpoint), ckpt.get("recovered_from", {}).get("checkpoint_sha256")}
        assert meta.get("checkpoint_sha256") in made_from, f"{SHIP_DIR / name} was not made from {checkpoint}"


@pytest.mark.parametrize("name", ["default-fp32", "accurate-fp32"])
def test_shipped_classifier_checkpoint_exports_to_the_shipped_file(tmp_path, mnist_dir, name):
    """Each shipped classifier's checkpoint (checkpoints/digits.pt, digits-accurate.pt) through export.to_onnx
    computes what its shipped FP32 file computes, on every test image."""
    from export.to_onnx import export_graph, wrap
    from runtime.model import NAMED_MODELS
    from train.checkpoint import load_model

    shipped = NAMED_MODELS[name]
    path = SHIPPED_CHECKPOINTS[shipped.name]
    ckpt = load(path)
    again = tmp_path / "again.onnx"
    onnx.save(export_graph(wrap(ckpt, load_model(ckpt, path), path)), again)
    pixels, _ = load_pixels(mnist_dir, "test")
    ours, theirs = onnx_logits(again, pixels), onnx_logits(shipped, pixels)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (ours.argmax(1) == theirs.argmax(1)).all()


# ------------------------------------------------------------ the shipped row reader


@pytest.fixture(scope="module")
def reader_fp32(tmp_path_factory, mnist_dir):
    """The shipped reader's checkpoint exported again: export.reader writes it only if the FP32 file reads
    every one of 2,000 synthetic rows of MNIST test digits as PyTorch does."""
    from export.reader import TEST_ROWS, export_reader

    assert TEST_ROWS >= 2000
    out = tmp_path_factory.mktemp("reader") / "reader-fp32.onnx"
    path, _, parity = export_reader(READER_CHECKPOINT, out, mnist_dir)
    assert parity.rows == TEST_ROWS and parity.string_agreement == 1.0 and parity.max_abs_diff < 1e-3
    # And it reads (hard rows: overlapping strokes, every degradation): not parity between two models that
    # read nothing (a barely trained reader reads almost none of them).
    assert parity.accuracy >= 0.6
    return path


def test_shipped_reader_fp32_reads_as_pytorch(reader_fp32):
    assert reader_fp32.is_file()


def test_reader_int8_is_written_only_when_it_reads_as_fp32(reader_fp32, mnist_dir, tmp_path):
    """The INT8 gate: at least 99.5% of rows read as FP32 reads them, at most 0.3 points of exact-row accuracy
    lost; a file that misses it is not written (and says by how much)."""
    from export.reader import MAX_ACCURACY_DROP, MIN_STRING_AGREEMENT, quantize_reader
    from export.verify import VerificationError

    assert MIN_STRING_AGREEMENT >= 0.995 and MAX_ACCURACY_DROP <= 0.003
    out = tmp_path / "reader-int8.onnx"
    try:
        _, _, _, p8 = quantize_reader(reader_fp32, out, mnist_dir)
    except VerificationError as e:
        assert "not written" in str(e) and not out.exists()
        pytest.xfail(f"known gap: the shipped reader's INT8 misses the parity floor: {e}")
    assert p8.string_agreement >= MIN_STRING_AGREEMENT and p8.reference_accuracy - p8.accuracy <= MAX_ACCURACY_DROP
