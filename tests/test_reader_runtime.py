"""The runtime's number path: rows found in photos and read by the shipped row reader (no torch)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime import (
    DEFAULT_MODEL,
    DEFAULT_READER,
    DigitClassifier,
    ModelError,
    NoDigitFound,
    NumberReader,
    RuntimeInputError,
)
from runtime.reader import ctc_log_likelihood
from runtime.rows import find_row_images
from train.idx import load_split


@pytest.fixture(scope="module")
def reader():
    return NumberReader(threads=1)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_split(mnist_dir, "test")


def paper_row(images, picks, gap=4, height=120, canvas=(300, 900)) -> np.ndarray:
    """Dark digits on light paper, side by side with ``gap`` pixels between their 28x28 frames."""
    row = np.hstack([np.pad(images[i], ((0, 0), (gap // 2, gap - gap // 2))) for i in picks])
    strip = cv2.resize(255 - row, (round(row.shape[1] * height / 28), height), interpolation=cv2.INTER_CUBIC)
    page = np.full(canvas, 225, np.uint8)
    y, x = (canvas[0] - height) // 2, 40
    page[y:y + height, x:x + strip.shape[1]] = np.minimum(page[y:y + height, x:x + strip.shape[1]], strip)
    return page


def label_of(labels, picks) -> str:
    return "".join(str(int(labels[i])) for i in picks)


def synth_number(mnist, seed: int, i: int, tight: bool = False):
    """Small number ``i`` of ``synth_photos.generate_set(seed=seed, n_small=...)`` (``tight``: its tight crop of a
    number ``i``, ``n_tight=...``), made alone."""
    from train.synth_photos import make_number, tight_crop

    images, labels = mnist
    rng = np.random.default_rng([seed, 7 if tight else 5, i])  # generate_set's streams for these sets
    ks = rng.integers(len(images), size=int(rng.integers(3, 7)))
    sample = make_number(rng, [images[k] for k in ks], [labels[k] for k in ks], small=not tight)
    return tight_crop(rng, sample) if tight else sample


def numbers_read_right(reader, samples) -> int:
    right = 0
    for sample in samples:
        try:
            right += reader.read([sample.image])[0].number == sample.label
        except NoDigitFound:
            pass
    return right


def test_reads_synthetic_photos_of_numbers(reader, mnist):
    """Camera-like photos of test digits (seed 20240, never tuned on), 60 rows of which a sixth have touching
    digits. The shipped reader reads 53 of them (0.88); the guard is what the cut search it replaced read
    here (0.85), so a reader worse than the old path fails."""
    from train.synth_photos import generate_set

    images, labels = mnist
    samples = generate_set(images, labels, n_digits=0, n_numbers=60, seed=20240, max_side=800)
    right = numbers_read_right(reader, samples) / len(samples)
    assert right >= 0.85, f"numbers {right:.3f}"


def test_digits_have_boxes_left_to_right_inside_the_image(reader, mnist):
    images, labels = mnist
    picks = [3, 2, 1, 0, 4]
    page = paper_row(images, picks)
    reading = reader.read([page])[0]
    assert reading.number == label_of(labels, picks)
    xs = [d.box[0] for d in reading.digits]
    assert xs == sorted(xs)
    for d in reading.digits:
        x, y, w, h = d.box
        assert 0 <= x and 0 <= y and x + w <= page.shape[1] and y + h <= page.shape[0]
        assert 60 <= y + h / 2 <= 240  # on the row, not the whole page
        assert 0.3 < d.confidence <= 1.0


def test_a_small_number_in_a_big_frame_is_read_from_a_closer_look(reader, mnist):
    """Digits about 3% of a 1600x1200 page's height are 8 pixels high in the analysis' working image; the
    rows are cut again from a second analysis of the part of the page around them (rows.zoomed_rows),
    and the digits' boxes still come back in the page's pixels. (Read "9069" before.)"""
    images, labels = mnist
    picks = [7, 8, 9, 10, 11, 12]
    page = paper_row(images, picks, height=48, canvas=(1200, 1600))
    cv2.setRNGSeed(0)
    grain = np.empty(page.shape, np.float32)
    cv2.randn(grain, 0, 4)
    page = np.clip(page + grain, 0, 255).astype(np.uint8)
    reading = reader.read([page])[0]
    assert reading.number == label_of(labels, picks)
    for d in reading.digits:
        x, y, w, h = d.box
        # Inside the strip paper_row drew: 48 px high in the middle of the page, 32 / 28 * 48 px a digit from x=40.
        assert 576 <= y and y + h <= 624 and 40 <= x and x + w <= 40 + len(picks) * 32 * 48 / 28


def test_a_faint_shadow_does_not_hide_a_small_number(reader, mnist):
    """Small numbers of the tuning seeds 11 and 12 in frames where a large faint shadow or smudge set the height
    and weight the writing was judged by: before rows.FAINT all 7 read as nothing or as one stray digit."""
    cases = [(11, 1), (11, 6), (11, 18), (12, 10), (12, 17), (12, 30), (12, 38)]
    right = numbers_read_right(reader, [synth_number(mnist, seed, i) for seed, i in cases])
    assert right >= 5, f"{right} of {len(cases)} read right"


def test_marks_at_the_frames_edge_are_not_a_row_beside_the_number(reader, mnist):
    """Small numbers of tuning seed 11 that came back with a second row read from marks at or near the frame's
    edge ("93722 42", "578 700"; read unsurely, heavier than the number: "348356 70", "928 775377")."""
    assert numbers_read_right(reader, [synth_number(mnist, 11, i) for i in (9, 34, 24, 35)]) == 4


def test_a_bold_number_cropped_tightly_is_read(reader, mnist):
    """Marker digits cut out with 3 px of paper around them: framed in their own paper (rows.framed_rows) 19 of
    these 20 read right, 16 before; the boxes lie in the crop's pixels."""
    images, labels = mnist
    right = 0
    for k in range(20):
        picks = list(range(5 * k, 5 * k + 5))
        bold = cv2.erode(paper_row(images, picks, gap=2), np.ones((9, 9), np.uint8))
        ys, xs = np.nonzero(bold < 150)
        crop = bold[max(0, ys.min() - 3):ys.max() + 4, max(0, xs.min() - 3):xs.max() + 4]
        try:
            reading = reader.read([crop])[0]
        except NoDigitFound:
            continue
        right += reading.number == label_of(labels, picks)
        for d in reading.digits:
            x, y, w, h = d.box
            assert 0 <= x and 0 <= y and x + w <= crop.shape[1] and y + h <= crop.shape[0]
    assert right >= 18


def test_a_tight_crop_keeps_the_polarity_of_its_ink(reader, mnist):
    """Tight crops of numbers (synth_photos, tuning seeds 11, 13 and 14) whose framed look decided the polarity
    again and read the lighter half of unevenly lit paper as light ink ("619", "53", "269")."""
    for seed, i in [(11, 35), (13, 115), (14, 165)]:
        sample = synth_number(mnist, seed, i, tight=True)
        assert reader.read([sample.image])[0].number == sample.label, (seed, i)


def test_two_rows_are_read_top_to_bottom(reader, mnist):
    images, labels = mnist
    # The first seven test digits. (Digits 7-13 were used before; digit 8, a 5 whose top stroke stands apart,
    # reads as 5 or nothing at about even odds with the reader of 2026-12-02 when cut from this page.)
    top, bottom = [0, 1, 2], [3, 4, 5, 6]
    page = np.vstack([paper_row(images, top, canvas=(200, 900)), paper_row(images, bottom, canvas=(200, 900))])
    reading = reader.read([page])[0]
    assert reading.numbers == [label_of(labels, top), label_of(labels, bottom)]
    assert reading.number == f"{label_of(labels, top)} {label_of(labels, bottom)}"
    assert [d.row for d in reading.digits] == [0] * 3 + [1] * 4


def test_batched_rows_read_as_alone(reader, mnist):
    """Rows of one batch are padded to the widest: one digit, an odd width and a very wide row read the
    same strings batched as alone."""
    images, _ = mnist
    pages = [paper_row(images, [5], canvas=(200, 300)), paper_row(images, [14, 15, 16], gap=5, canvas=(200, 700)),
             paper_row(images, list(range(20, 50)), height=60, canvas=(150, 2200))]
    rows = [reader.rows(p) for p in pages]
    assert len({r.pixels.shape[1] for rs in rows for r in rs}) == 3
    alone = [reader.read_rows([r])[0].numbers for r in rows]
    together = [r.numbers for r in reader.read_rows(rows)]
    assert together == alone
    assert len(alone[2][0]) >= 28  # a 30-digit row is read, not refused


@pytest.mark.parametrize("labels", [(), (3,), (1, 1), (4, 2, 4, 4, 0), (7, 7, 7)])
def test_ctc_log_likelihood_is_torchs(labels):
    """The runtime's numpy forward algorithm against torch's CTC loss (its negative log-likelihood)."""
    torch = pytest.importorskip("torch")
    log_probs = torch.log_softmax(torch.randn(13, 1, 11, generator=torch.Generator().manual_seed(len(labels))), 2)
    loss = torch.nn.functional.ctc_loss(log_probs, torch.tensor([labels], dtype=torch.long).reshape(1, -1),
                                        [13], [len(labels)], blank=10, reduction="sum")
    assert ctc_log_likelihood(log_probs[:, 0].numpy(), labels, 10) == pytest.approx(-loss.item(), rel=1e-4)


def test_phases_that_disagree_answer_the_string_likeliest_in_both(reader, mnist):
    """Two phases of one row: the first reads "12" but is nearly as sure of "1 2 2"'s third digit; the second
    reads "122" surely. The string both find likelier is answered, with the second phase's boxes."""
    images, _ = mnist
    row = reader.rows(paper_row(images, [2, 1, 1], canvas=(200, 500)))[0]
    steps = row.pixels.shape[1] // 2
    blank, one, two = 10, 1, 2
    first, second = np.full((steps, 11), 1e-4), np.full((steps, 11), 1e-4)
    first[:, blank] = second[:, blank] = 1.0
    for probs, peaks in ((first, {5: one, 15: two}), (second, {5: one, 15: two, 25: two})):
        for step, cls in peaks.items():
            probs[step] = 1e-4
            probs[step, cls] = 1.0
    first[25, blank], first[25, two] = 0.55, 0.45  # the first phase's blank wins narrowly
    first, second = (p / p.sum(axis=1, keepdims=True) for p in (first, second))
    assert [d.index for d in reader.best_phase([first], row)] == [one, two]
    reading = reader.best_phase([first, second], row)
    assert [d.index for d in reading] == [one, two, two]
    assert reading[2].box == reader.digits(second, reader.peaks(second), row, shift=1)[2].box


@pytest.mark.parametrize("slope", [0.0, 0.02, -0.035])
def test_digits_on_a_tilted_ruled_line_are_read(reader, mnist, slope):
    """A sheet photographed a little askew: its ruled lines cross the page at a slope, one along the
    foot of digits in pencil. Lines are lifted at slopes up to about 2.9 degrees, so the row stays the
    digits' (lifting only level lines, each tilted page here read wrong)."""
    images, labels = mnist
    picks = [3, 18, 61, 7, 92]
    page = paper_row(images, picks, height=90, canvas=(360, 800))
    page = cv2.cvtColor(np.where(page < 225, np.maximum(page, 90), page).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for middle in (32, 122, 212, 302):  # rows where the lines cross the page's middle; 212: the digits' foot
        cv2.line(page, (0, round(middle - 400 * slope)), (799, round(middle + 399 * slope)), (200, 150, 110), 2)
    reading = reader.read([page])[0]
    assert reading.number == label_of(labels, picks)


@pytest.mark.parametrize("kind", ["blank", "ruled line", "scribble"])
def test_no_digits_is_no_number_found(reader, kind):
    page = np.full((240, 640, 3), 215, np.uint8)
    if kind == "ruled line":
        cv2.line(page, (0, 150), (639, 153), (190, 150, 120), 2)
    elif kind == "scribble":
        xs = np.arange(80, 560)
        ys = (120 + 25 * np.sin(xs / 9.0)).astype(np.int32)
        cv2.polylines(page, [np.stack([xs, ys], 1)], False, (40, 40, 40), 3)
    with pytest.raises(NoDigitFound, match="no number found"):
        reader.read([page])


@pytest.mark.parametrize("shape, row", [((60, 300), 5), ((40, 20000), 30), ((5, 300), 5)],
                         ids=["5px row", "20000px wide", "5px image"])
def test_extreme_shapes_answer_or_refuse_clearly(reader, mnist, shape, row):
    images, _ = mnist
    page = np.full(shape, 220, np.uint8)
    strip = 255 - cv2.resize(np.hstack([images[i] for i in range(6)]), (6 * row, row), interpolation=cv2.INTER_AREA)
    top = (shape[0] - row) // 2
    page[top:top + row, 5:5 + strip.shape[1]] = strip
    try:
        reading = reader.read([page])[0]
        assert all(d.label.isdigit() for d in reading.digits)
    except RuntimeInputError as e:  # "no number found", or the image refused as too small
        assert "no number found" in str(e) or "too small" in str(e)


def test_mnist_digit_is_a_number_of_one(reader, mnist):
    images, labels = mnist
    assert reader.read([images[0]])[0].number == str(labels[0])


def test_models_are_checked_for_their_task():
    with pytest.raises(ModelError, match="not a row reader"):
        NumberReader(DEFAULT_MODEL)
    with pytest.raises(ModelError, match="not a digit classifier"):
        DigitClassifier(DEFAULT_READER)


def test_rows_of_a_tilted_number_come_out_level(mnist):
    images, _ = mnist
    page = paper_row(images, [1, 2, 3, 4, 5], canvas=(500, 900))
    turned = cv2.warpAffine(page, cv2.getRotationMatrix2D((450, 250), 12, 1.0), (900, 500), borderValue=225)
    (row,) = find_row_images(turned, 32)
    ink_rows = np.nonzero(row.pixels.max(axis=1) > 0.3)[0]
    assert ink_rows.max() - ink_rows.min() < 30  # level: not the tilted band's height


def test_a_tilted_row_of_overlapping_digits_comes_out_level(mnist):
    """Overlapping digits are one mark: its tilt comes from its ink, not from a line through marks. A row
    cut tilted is scaled by its slanted band's height and comes out too short."""
    images, labels = mnist
    picks = [int(np.flatnonzero(labels == d)[0]) for d in (0, 2, 3, 5, 8)]
    row = np.zeros((28, 28 + 13 * (len(picks) - 1)), np.uint8)
    for k, i in enumerate(picks):  # frames 13 px apart: the strokes of neighbours overlap
        np.maximum(row[:, 13 * k:13 * k + 28], images[i], out=row[:, 13 * k:13 * k + 28])
    strip = cv2.resize(255 - row, (row.shape[1] * 4, 112), interpolation=cv2.INTER_CUBIC)
    page = np.full((500, 900), 225, np.uint8)
    page[194:306, 200:200 + strip.shape[1]] = strip
    turned = cv2.warpAffine(page, cv2.getRotationMatrix2D((450, 250), 12, 1.0), (900, 500), borderValue=225)
    (level,), (tilted,) = find_row_images(page, 32), find_row_images(turned, 32)
    assert abs(tilted.pixels.shape[1] - level.pixels.shape[1]) < 0.1 * level.pixels.shape[1]
