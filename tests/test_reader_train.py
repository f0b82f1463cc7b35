"""The row reader's training side: synthetic rows, CTC decoding, a short run end to end, its export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.__main__ import main as train_main
from train.checkpoint import load
from train.models import RowReader
from train.reader import BLANK, ctc_loss, greedy_decode
from train.rows import MAX_DIGITS, ROW_HEIGHT, RowMaker


@pytest.fixture(scope="module")
def maker(mnist_dir):
    from train.idx import load_split

    images, labels = load_split(mnist_dir, "test")
    return RowMaker(torch.from_numpy(images[:2000].copy()), torch.from_numpy(labels[:2000].astype(np.int64)))


def test_rows_hold_their_digits_left_to_right(maker):
    batch = maker.batch(64, torch.Generator().manual_seed(1))
    assert batch.images.shape[:3] == (64, 1, ROW_HEIGHT) and batch.images.shape[3] % RowReader.WIDTH_MULTIPLE == 0
    assert 0 <= float(batch.images.min()) and float(batch.images.max()) <= 1
    assert int(batch.lengths.sum()) == len(batch.targets) and int(batch.lengths.max()) <= MAX_DIGITS
    for image, width, n in zip(batch.images, batch.widths.tolist(), batch.lengths.tolist()):
        assert width <= image.shape[-1]
        assert float(image[..., width:].abs().sum()) == 0  # the batch's padding is background
        if n:
            assert float(image[..., :width].max()) > 0.3  # digits are drawn


def test_clean_rows_have_no_effects_and_a_fixed_count(maker):
    batch = maker.batch(16, torch.Generator().manual_seed(2), effects=False, count=5)
    assert batch.lengths.tolist() == [5] * 16
    # No noise: the background between strokes is exactly 0 in most of each row.
    assert all(float((img == 0).float().mean()) > 0.5 for img in batch.images)


def _widest_inner_gap(image: torch.Tensor) -> int:
    """Longest run of inkless columns between a row's first and last ink."""
    cols = (image[0] > 0.3).any(0).tolist()
    inked = [i for i, c in enumerate(cols) if c]
    run = best = 0
    for c in cols[inked[0]:inked[-1] + 1]:
        run = 0 if c else run + 1
        best = max(best, run)
    return best


def test_spaced_rows_leave_wide_gaps(maker, monkeypatch):
    """Digits written far apart (as in MNIST's own cells) are in the training rows: with every row
    spaced, nearly every pair of digits leaves a third of the ink height or more between them; with
    none, few do."""
    import train.rows as rows

    def share_wide(spaced: float) -> float:
        monkeypatch.setattr(rows, "SPACED", spaced)
        monkeypatch.setattr(rows, "HURRIED", 0.0)
        batch = maker.batch(200, torch.Generator().manual_seed(4), effects=False, count=2)
        heights = [int((img[0] > 0.3).any(1).sum()) for img in batch.images]
        return float(np.mean([_widest_inner_gap(img) >= 0.35 * h for img, h in zip(batch.images, heights)]))

    spaced, unspaced = share_wide(1.0), share_wide(0.0)
    assert spaced > 0.9 and unspaced < spaced - 0.3


def test_bent_digits_keep_their_ink_and_the_measured_rows(maker):
    """Bending (training rows only) moves strokes by at most BEND_PIXELS and keeps each digit's ink;
    with no bending the rows are drawn exactly as before, so measured rows stay put."""
    import train.rows as rows

    def batch(bend: float):
        made = RowMaker(maker.digits[:, 0].mul(255).round().to(torch.uint8), maker.labels, bend=bend)
        return made.batch(64, torch.Generator().manual_seed(5), effects=False, count=1)

    plain, bent = batch(0.0), batch(1.0)
    assert torch.equal(plain.images, maker.batch(64, torch.Generator().manual_seed(5), effects=False, count=1).images)
    assert torch.equal(bent.targets, plain.targets)
    ink_ratio = bent.images.flatten(1).sum(1) / plain.images.flatten(1).sum(1)
    assert 0.7 < float(ink_ratio.min()) and float(ink_ratio.max()) < 1.4  # not torn or smeared

    fields = rows._bend_fields(500, 1.0, torch.Generator().manual_seed(6)).abs().mul(14)  # source pixels
    largest = fields.flatten(1).amax(1)
    assert float(largest.max()) <= rows.BEND_PIXELS and float(largest.median()) > 0.3 * rows.BEND_PIXELS
    assert not rows._bend_fields(500, 0.0, torch.Generator().manual_seed(6)).any()


def test_placed_digits_are_the_labelled_ones(maker):
    """One digit, no effects, drawn large: the digit in the row is the source digit (same ink
    profile after the affine map), so the labels line up with what is drawn."""
    gen = torch.Generator().manual_seed(3)
    batch = maker.batch(400, gen, effects=False, count=1)
    ink = batch.images[:, 0].sum(1)  # column profile of each row
    widths = (ink > 0.5).sum(1).float()
    assert float(widths[batch.targets == 1].mean()) < float(widths[batch.targets == 0].mean())  # 1s are narrow


def test_greedy_decode_merges_repeats_and_drops_blanks():
    steps = [BLANK, 3, 3, BLANK, 3, 1, 1, BLANK, BLANK, 7]
    logits = torch.full((1, len(steps) + 2, BLANK + 1), -10.0)
    for t, c in enumerate(steps):
        logits[0, t, c] = 10.0
    logits[0, len(steps):, 5] = 10.0  # steps past the row's width are padding
    assert greedy_decode(logits, torch.tensor([len(steps) * 2]), stride=2) == ["3317"]


def test_ctc_loss_prefers_the_right_reading(maker):
    batch = maker.batch(8, torch.Generator().manual_seed(4), effects=False, count=3)
    steps = batch.images.shape[-1] // 4  # stride 4
    right = torch.full((8, steps, BLANK + 1), -5.0)
    right[:, :, BLANK] = 5.0
    offset = 0
    for row, n in enumerate(batch.lengths.tolist()):
        for k, digit in enumerate(batch.targets[offset:offset + n].tolist()):
            right[row, 2 + 3 * k, digit] = 20.0
        offset += n
    wrong = right.roll(1, dims=2)
    assert float(ctc_loss(right, batch)) < 0.1 < float(ctc_loss(wrong, batch))


def test_reader_trains_exports_and_quantizes(tmp_path, mnist_dir, monkeypatch, capsys):
    """A short run on real digits: the loss falls, the checkpoint loads safely, the export command writes a
    verified FP32 file, and the quantizer writes an INT8 file only if it passes its gate (a barely trained
    reader is unsure of most rows, so it may not: then one line says why and no file is left)."""
    import export.reader as export_reader
    import train.reader as train_reader
    from export.quantize import main as quantize_main
    from export.to_onnx import main as export_main

    monkeypatch.setattr(export_reader, "TEST_ROWS", 300)
    monkeypatch.setattr(export_reader, "CALIBRATION_ROWS", 64)
    monkeypatch.setattr(train_reader, "EVAL_ROWS", 300)  # validation and test rows: what they show is tested above
    out = tmp_path / "run"
    assert train_main(["--recipe", "reader", "--epochs", "1", "--train-subset", "6000", "--batch-size", "32",
                       "--eval-interval", "20", "--data-dir", str(mnist_dir), "--out", str(out)]) == 0
    ckpt = load(out / "best.pt")
    assert ckpt["arch"] == "reader" and ckpt["input"]["task"] == "row-reader"
    history = __import__("json").loads((out / "metrics.json").read_text())["train"]
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    fp32 = tmp_path / "reader-fp32.onnx"
    assert export_main([str(out / "best.pt"), "-o", str(fp32), "--data-dir", str(mnist_dir)]) == 0
    capsys.readouterr()
    code = quantize_main([str(tmp_path / "reader-fp32.onnx"), "--data-dir", str(mnist_dir)])
    int8 = tmp_path / "reader-int8.onnx"
    if code == 0:
        assert int8.stat().st_size < (tmp_path / "reader-fp32.onnx").stat().st_size / 2
    else:
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and "not written" in err[0] and not int8.exists()
    # The whole chain on the checkpoint: the calibration method asked for is the one used.
    from export.pipeline import main as pipeline_main

    assert pipeline_main(["--checkpoint", str(out / "best.pt"), "--method", "percentile", "--out",
                          str(tmp_path / "chain"), "--data-dir", str(mnist_dir)]) == 0
    assert "calibrated\n  (percentile) on" in (tmp_path / "chain" / "parity.md").read_text()


@pytest.mark.parametrize("stride", [4, 2])
def test_reader_gives_one_output_per_stride_columns(stride):
    """Stride 2 splits each 4-column step's head into two outputs, in order: the first output of a
    step answers for its left half. Checked on a head that copies a column marker through."""
    model = RowReader(widths=(4, 4, 4, 4), stride=stride).eval()
    out = model(torch.rand(3, 1, RowReader.HEIGHT, 48))
    assert out.shape == (3, 48 // stride, BLANK + 1)
    if stride == 2:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.cat([torch.zeros(BLANK + 1), torch.ones(BLANK + 1)]))
        out = model(torch.rand(1, 1, RowReader.HEIGHT, 48))
        assert out[0, 0::2].abs().max() == 0 and (out[0, 1::2] == 1).all()


def _reader_checkpoint(path, widths=(16, 32, 64, 96), seed=0):
    from dataclasses import asdict

    from train.checkpoint import make_checkpoint, save
    from train.config import TrainConfig
    from train.reader import reader_input

    torch.manual_seed(seed)
    model = RowReader(widths=widths, stride=2)
    save(make_checkpoint(model, "reader", {"widths": list(widths), "stride": 2}, mean=0.5, std=0.5,
                         classes=[str(d) for d in range(10)], dataset="mnist",
                         train_config=asdict(TrainConfig.from_recipe("reader", seed=seed)),
                         metrics={"iterations": 10, "train_seconds": 1.5, "parameters": 1},
                         input_spec=reader_input(2)), path)


def test_soup_is_the_mean_of_its_readers_and_is_measured(tmp_path, mnist_dir, monkeypatch, capsys):
    import train.reader as train_reader
    import train.soup as soup

    monkeypatch.setattr(train_reader, "EVAL_ROWS", 50)
    a, b, out = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "soup.pt"
    _reader_checkpoint(a, seed=1)
    _reader_checkpoint(b, seed=2)
    assert soup.main([str(a), str(b), "--out", str(out), "--data-dir", str(mnist_dir)]) == 0
    mixed, ca, cb = load(out), load(a), load(b)
    key = "features.0.weight"
    assert torch.allclose(mixed["state_dict"][key], (ca["state_dict"][key] + cb["state_dict"][key]) / 2)
    assert not torch.equal(ca["state_dict"][key], cb["state_dict"][key])
    m = mixed["metrics"]
    assert m["iterations"] == 20 and m["train_seconds"] == 3.0
    assert all(0.0 <= m[k] <= 1.0 for k in ("val_accuracy", "test_row_accuracy", "clean_5_digit_row_accuracy"))
    assert [i["checkpoint"] for i in mixed["train_config"]["soup_of"]] == [str(a), str(b)]
    # A soup may hold a soup (docs/EXPERIMENTS.md: soupKL): the card's settings name every ingredient, nested.
    from export.reader import reader_settings

    again = tmp_path / "again.pt"
    assert soup.main([str(out), str(a), "--out", str(again), "--data-dir", str(mnist_dir)]) == 0
    settings = reader_settings(load(again)["train_config"])
    assert settings.count("the mean of the weights of") == 2 and settings.count(str(a)) == 2 and str(b) in settings


def test_soup_refuses_readers_of_other_shapes(tmp_path, mnist_dir, capsys):
    import train.soup as soup

    a, b, out = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "soup.pt"
    _reader_checkpoint(a)
    _reader_checkpoint(b, widths=(8, 16, 32, 48))
    assert soup.main([str(a), str(b), "--out", str(out), "--data-dir", str(mnist_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(b) in err[0] and "differs" in err[0] and not out.exists()
