"""Read a number: a row of digits, left to right.

1. The ink analysis of ``preprocess`` gives the marks (specks, paper edges
   and shadows already dropped).
2. Fragments of one digit (the detached bar of a 5, a broken 4) are short
   and lie within or right beside a taller mark: merge them.
3. Keep the marks of the row: tall enough, near the line through the
   digits' centres (rows may be tilted), without big gaps between them.
4. A mark may be several touching digits. Cut it into 2..4 pieces along
   the cheapest top-to-bottom paths through its ink, and let the model
   decide together with shape priors (how wide n digits are, how much ink
   a cut crosses): every hypothesis of every mark goes through one
   batched session call, and per mark the best joint score wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np

from .errors import NoDigitFound
from .imageio import to_uint8
from .preprocess import Component, DigitCrop, InkAnalysis, analyse_ink, fit_and_centre, soft_ink, mnist_passthrough

MAX_PIECES = 4  # per mark; more touching digits than that is a scribble
MAX_SPLITS = 10  # cut hypotheses per mark sent to the model (best priors first)
WIDE = 1.1  # piece wider than this times the row height: unlikely one digit
SPLIT_RATIO = 1.25  # marks this many typical digit widths wide may be several digits
SPLIT_ASPECT = 0.6  # or this much wider than tall (a touching 1 adds little width)
FRAGMENT_HEIGHT = 0.5  # marks shorter than this share of the digit height may be pieces of one
ASPECT_WEIGHT = 0.6  # weight of the mark's own shape against the row's widths (count_prior)
EXTRA_DIGIT_COST = 0.25  # log-prior cost of each extra digit in a mark (touching is rare)
# Weight of the model's log-confidences against the shape priors. High
# because the shipped model is trained with label smoothing: its confidence
# tops out near 0.92, which compresses log-confidences. The weights here
# were tuned on generated rows of other seeds than the benchmark's and the
# tests' (benchmarks/synth_photos.py): 16 beat 8 on both seeds 1 and 2.
MODEL_WEIGHT = 16.0
# A 1 cut off a touching neighbour adds little width, so the count prior
# (which expects n digits to be about n digit widths wide) undercounts such
# marks; a split piece the model reads as 1 and that is as narrow as a 1
# earns this back. Narrow: box under NARROW_ONE of its height (MNIST 1s are
# 0.44 wide, median; other digits 0.7 and more).
NARROW_ONE = 0.3
ONE_BONUS = 3.0
CUT_WEIGHT = 2.0  # log-prior per stroke width of ink a cut crosses beyond the first
MAX_GAP = 1.2  # widest gap between digits of one number, in digit heights
MAX_CROSSING = 2.5  # cuts crossing more stroke widths of ink are not considered
MIN_PIECE_HEIGHT = 0.55  # of the mark's height: shorter pieces are parts of a digit


@dataclass
class Hypothesis:
    crops: list[DigitCrop]
    aspect: float  # width / height of the mark
    ratio: float  # width of the mark / typical digit width of the row
    crossed: float = 0.0  # stroke widths of ink cut through, beyond one per cut
    too_wide: float = 0.0  # how much pieces exceed a digit's plausible width

    @property
    def prior(self) -> float:
        """Log prior of reading the mark as these pieces (see count_prior)."""
        return count_prior(len(self.crops), self.aspect, self.ratio) - CUT_WEIGHT * self.crossed - 3.0 * self.too_wide


@dataclass
class Slot:
    """One mark of the row and the ways to read it."""

    hypotheses: list[Hypothesis]


def read_numbers(classifier, images: list[np.ndarray]) -> list:
    """Read each image as a number; one session call for all of them."""
    size = classifier.input_size
    return resolve(classifier, [segment_number(im, size) for im in images])


def resolve(classifier, layouts: list[list[Slot]]) -> list:
    """Classify every crop of every hypothesis of every layout in one batch,
    then keep, per slot, the hypothesis with the best joint log-confidence
    plus prior."""
    from .classifier import NumberReading

    crops = [c for slots in layouts for s in slots for h in s.hypotheses for c in h.crops]
    preds = iter(classifier.predictions(crops))
    readings = []
    for slots in layouts:
        digits = []
        for slot in slots:
            scored = []
            for h in slot.hypotheses:
                ps = [next(preds) for _ in h.crops]
                score = MODEL_WEIGHT * sum(np.log(max(p.confidence, 1e-6)) for p in ps) + h.prior
                if len(ps) > 1:
                    score += ONE_BONUS * sum(_narrow_one(p) for p in ps)
                scored.append((score, ps))
            digits.extend(max(scored, key=lambda t: t[0])[1])
        readings.append(NumberReading(digits))
    return readings


def _narrow_one(p) -> bool:
    """Whether a piece reads as a 1 and is shaped like one (see ONE_BONUS)."""
    if p.label != "1" or p.box is None:
        return False
    _, _, w, h = p.box
    return w < NARROW_ONE * max(1, h)


def segment_number(image: np.ndarray, size: int = 28) -> list[Slot]:
    """The row's marks, left to right, each with its reading hypotheses."""
    image = to_uint8(image)
    passthrough = mnist_passthrough(image, size)
    if passthrough is not None:  # a single MNIST digit is a one-digit number
        h, w = image.shape[:2]
        return [Slot([Hypothesis([DigitCrop(passthrough, (0, 0, w, h))], 1.0, 1.0)])]
    analysis = analyse_ink(image)
    marks = row_marks(analysis)
    if not marks:
        raise NoDigitFound("no digit found (no ink)")
    row_h = float(np.median([m.h for m in marks if m.h >= 0.6 * max(m.h for m in marks)]))
    # Typical digit width of this writer (marks not wider than tall are
    # single digits), kept within what handwriting does: MNIST digits are
    # 0.75 of their height wide (median), and a row of 1s must not make a 0
    # look like three digits.
    single = [m.w for m in marks if m.w <= max(row_h, m.h)]
    digit_w = float(np.median(single)) if single else 0.75 * row_h
    digit_w = float(np.clip(digit_w, 0.55 * row_h, 0.95 * row_h))
    return [Slot(hypotheses(analysis, m, row_h, digit_w, size)) for m in marks]


def row_marks(analysis: InkAnalysis) -> list[Component]:
    """Marks that belong to the row of digits, left to right."""
    h, w = analysis.ink.shape
    comps = [c for c in analysis.components if max(c.w, c.h) >= 0.02 * min(h, w)]
    if not comps:
        return []
    heavy = max(c.mass for c in comps)
    ref_h = max(c.h for c in comps if c.mass >= 0.2 * heavy)
    # Dots and dashes: too small to be part of a digit, or flat lines
    # (an underline, the rim of a shadow).
    comps = [c for c in comps if max(c.w, c.h) >= 0.15 * ref_h and not (c.w > 3 * c.h and c.h < 0.3 * ref_h)]
    marks = merge_fragments(sorted(comps, key=lambda c: -c.h), ref_h)
    marks = [m for m in marks if m.h >= 0.35 * ref_h and m.mass >= 0.05 * heavy]
    marks = on_row_line(marks, ref_h)
    return chain(sorted(marks, key=lambda m: m.x + m.w / 2), ref_h)


def chain(marks: list[Component], ref_h: float) -> list[Component]:
    """The run of marks around the heaviest one with no gap wider than
    MAX_GAP digit heights: digits of one number are written close
    together; a mark far off to the side (the table beyond the paper,
    a stain) is not part of it."""
    if len(marks) < 2:
        return marks
    k = max(range(len(marks)), key=lambda i: marks[i].mass)
    lo = hi = k
    while lo > 0 and marks[lo].x - marks[lo - 1].x1 <= MAX_GAP * ref_h:
        lo -= 1
    while hi < len(marks) - 1 and marks[hi + 1].x - marks[hi].x1 <= MAX_GAP * ref_h:
        hi += 1
    return marks[lo:hi + 1]


def merge_fragments(comps: list[Component], ref_h: float) -> list[Component]:
    """Merge pieces of one digit (the detached bar of a 5, a broken 4) into it.

    A fragment is short (under half the digit height) and lies mostly
    within a taller mark's columns, or right next to it; a full-height
    mark is a digit of its own even when slanted strokes make its box
    overlap its neighbour's (touching digits are cut apart later)."""
    marks: list[Component] = []
    for c in comps:  # tallest first
        best, best_score = None, 0.0
        fragment = c.h < FRAGMENT_HEIGHT * ref_h
        for i, m in enumerate(marks):
            ov = min(c.x1, m.x1) - max(c.x, m.x)
            frac = ov / max(1, c.w)  # share of the fragment's columns inside the mark
            vgap = max(0, max(c.y, m.y) - min(c.y1, m.y1))
            if vgap > 0.25 * ref_h:
                continue
            if (fragment and frac >= 0.5) or frac >= 0.9:
                score = 1.0 + frac
            elif fragment and -ov <= 0.1 * ref_h:
                score = 1.0 - max(0, -ov) / (0.1 * ref_h + 1e-6)  # detached piece right next to it
            else:
                continue
            if score > best_score:
                best, best_score = i, score
        if best is None:
            marks.append(c)
        else:
            marks[best] = marks[best].merged(c)
    return marks


def on_row_line(marks: list[Component], ref_h: float) -> list[Component]:
    """Drop marks far from the line through the digits' centres (rows may
    be tilted; stray marks must not tilt the line, so the worst one is
    dropped and the line refitted until all fit)."""
    marks = list(marks)
    while len(marks) >= 3:
        xs = np.array([m.x + m.w / 2 for m in marks])
        ys = np.array([m.y + m.h / 2 for m in marks])
        weights = np.sqrt(np.array([m.mass for m in marks]))
        slope = float(np.clip(np.polyfit(xs, ys, 1, w=weights)[0], -0.4, 0.4))  # up to ~20 degrees
        icpt = float(np.median(ys - slope * xs))
        resid = np.abs(ys - (slope * xs + icpt))
        worst = int(np.argmax(resid))
        if resid[worst] <= 0.6 * ref_h:
            break
        marks.pop(worst)
    return marks


def hypotheses(analysis: InkAnalysis, mark: Component, row_h: float, digit_w: float,
               size: int) -> list[Hypothesis]:
    """Ways to read one mark: as one digit, or cut into 2..MAX_PIECES.

    Cuts start at minima of the column projection and follow the
    cheapest path through the ink from top to bottom (touching digits
    lean, and one's stroke often overhangs the other). The model alone
    cannot decide (it is often sure that two touching digits are one odd
    digit), so a prior favours as many pieces as the mark is wide in
    typical digit widths, and every stroke a cut crosses costs."""
    single = _crop(analysis, mark, None, size)
    height = max(row_h, float(mark.h))
    ratio = mark.w / digit_w
    aspect = mark.w / max(1, mark.h)
    out = [Hypothesis([single], aspect, ratio)]
    if aspect < SPLIT_ASPECT and ratio < SPLIT_RATIO:
        return out
    sel = np.isin(analysis.labels[mark.y:mark.y1, mark.x:mark.x1], mark.labels)
    ink = np.where(sel, np.minimum(analysis.ink[mark.y:mark.y1, mark.x:mark.x1] / max(mark.peak, 1e-6), 1.0), 0.0)
    stroke = max(1.0, 2.0 * float(sel.sum()) / max(1.0, _perimeter(sel)))
    profile = _smooth(ink.sum(axis=0), max(1, mark.h // 25))
    paths = {}
    margin = max(2, int(0.12 * height))
    # Start cuts at the projection's minima and on a grid across the mark (a
    # junction of slanted strokes need not be a minimum of the vertical
    # projection), each path free to bend only a little: a free path would
    # rather slip through the thin top and bottom of an 0 than through
    # the junction beside it.
    step = max(2, int(0.06 * height))
    starts = _minima(profile, margin, margin) + list(range(margin, mark.w - margin, step))
    for c in starts:
        xs, cost = _cut_path(ink, c, max(2, int(0.12 * height)))
        if cost / stroke > MAX_CROSSING:
            continue  # cuts through a digit, whatever it is next to
        key = int(np.median(xs))
        if key not in paths or cost < paths[key][1]:
            paths[key] = (xs, cost)
    candidates = []
    for n_cuts in range(1, MAX_PIECES):
        for cuts in combinations(sorted(paths), n_cuts):
            bounds = [0, *cuts, mark.w]
            widths = np.diff(bounds) / height
            if widths.min() < 0.12 or widths.max() > 1.2:
                continue
            # Touching digits share about one stroke's width of ink; a cut
            # through more is cutting a digit.
            crossed = sum(max(0.0, paths[c][1] / stroke - 1.0) for c in cuts)
            too_wide = float(np.clip(widths - WIDE, 0, None).sum())
            h = Hypothesis([None] * (n_cuts + 1), aspect, ratio, crossed, too_wide)
            candidates.append((h.prior, cuts, h))
    cols = np.arange(mark.w)[None, :]
    candidates.sort(key=lambda t: -t[0])
    for _, cuts, hyp in candidates[:MAX_SPLITS]:
        edges = [np.full(mark.h, -1)] + [paths[c][0] for c in cuts] + [np.full(mark.h, mark.w)]
        pieces = [sel & (cols > left[:, None]) & (cols <= right[:, None]) for left, right in zip(edges[:-1], edges[1:])]
        # Every digit is about as tall as its neighbours: a piece that is
        # only a bar or a tail is part of a digit, not one.
        if any(_rows(p) < MIN_PIECE_HEIGHT * mark.h for p in pieces):
            continue
        crops = [_crop(analysis, mark, p, size) for p in pieces]
        if all(c is not None for c in crops):
            hyp.crops = crops
            out.append(hyp)
    return out


def _cut_path(ink: np.ndarray, start: int, reach: int) -> tuple[np.ndarray, float]:
    """Cheapest top-to-bottom path through ``ink`` within ``reach`` columns of
    ``start``, moving at most one column per row (dynamic programming).
    Returns the path's column per row and the ink it crosses."""
    h, w = ink.shape
    lo, hi = max(0, start - reach), min(w, start + reach + 1)
    cost = ink[:, lo:hi] + 0.01  # a small cost per pixel keeps the path short
    n = hi - lo
    acc = cost[0].copy()
    back = np.zeros((h, n), np.int8)
    inf = np.float64(1e9)
    for y in range(1, h):
        left = np.concatenate(([inf], acc[:-1])) + 0.005  # diagonal steps cost a little more
        right = np.concatenate((acc[1:], [inf])) + 0.005
        stack = np.stack([left, acc, right])
        step = np.argmin(stack, axis=0)
        acc = stack[step, np.arange(n)] + cost[y]
        back[y] = step - 1
    xs = np.empty(h, np.int64)
    xs[-1] = int(np.argmin(acc))
    for y in range(h - 1, 0, -1):
        xs[y - 1] = xs[y] + back[y, xs[y]]
    crossed = float(ink[np.arange(h), lo + xs].sum())
    return lo + xs, crossed


def _rows(mask: np.ndarray) -> int:
    """Height of the rows a mask covers (first to last)."""
    rows = np.nonzero(mask.any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def _perimeter(mask: np.ndarray) -> float:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, True) for c in contours))


def _smooth(values: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1  # one noisy column is not a gap
    return np.convolve(values, np.ones(k) / k, mode="same")


def count_prior(n: int, aspect: float, ratio: float) -> float:
    """Log prior that a mark holds n digits, from its shape.

    ``aspect`` (width / height of the mark): one handwritten digit is
    0.76 as wide as tall (median of MNIST test digits rotated up to 15
    degrees, log-spread 0.26); n touching digits about n times that, but
    a 1 adds little width, so a group containing one is narrower (a
    mixture: one digit in ten is a 1). ``ratio`` (width / this row's
    typical digit width): n digits are about 0.95 n typical widths,
    spread 0.4 sqrt(n). The two are blended; touching digits are rarer
    than separate ones, hence a cost per extra digit."""
    x = float(np.log(max(aspect, 1e-3)))
    if n == 1:
        by_aspect = _log_normal(x, np.log(0.76), 0.26)
    else:
        with_one = 1 - 0.9 ** n  # chance that one of the n is a 1
        by_aspect = np.logaddexp(np.log(1 - with_one) + _log_normal(x, np.log(0.76 * n), 0.26 / np.sqrt(n / 2)),
                                 np.log(with_one) + _log_normal(x, np.log(0.76 * (n - 1) + 0.2), 0.3))
    sd_r = 0.4 * np.sqrt(n)
    by_ratio = -0.5 * ((ratio - 0.95 * n) / sd_r) ** 2 - float(np.log(sd_r))
    return -EXTRA_DIGIT_COST * (n - 1) + ASPECT_WEIGHT * float(by_aspect) + (1 - ASPECT_WEIGHT) * by_ratio


def _log_normal(x: float, mu: float, sd: float) -> float:
    return -0.5 * ((x - mu) / sd) ** 2 - float(np.log(sd))


def _minima(profile: np.ndarray, spacing: int, margin: int) -> list[int]:
    """Local minima of the column profile at least ``margin`` columns from
    both ends (a piece narrower than that is no digit), the lowest first
    (at most 6), at least ``spacing`` apart; returned left to right."""
    w = len(profile)
    chosen: list[int] = []
    for c in np.argsort(profile, kind="stable"):
        c = int(c)
        if c < margin or c > w - 1 - margin:
            continue
        lo, hi = max(0, c - spacing), min(w, c + spacing + 1)
        if profile[c] > profile[lo:hi].min():
            continue  # not a local minimum
        if all(abs(c - d) >= spacing for d in chosen):
            chosen.append(c)
        if len(chosen) == 6:
            break
    return sorted(chosen)


def _crop(analysis: InkAnalysis, mark: Component, piece: np.ndarray | None, size: int) -> DigitCrop | None:
    """The model input for a mark, or for the pixels ``piece`` (a mask over
    the mark's box) of it; None when that piece holds too little ink."""
    if piece is None:
        return DigitCrop(fit_and_centre(soft_ink(analysis, mark), size), analysis.to_input_box(mark))
    ys, xs = np.nonzero(piece)
    if ys.size < max(4, 0.03 * mark.area):
        return None
    try:
        pixels = fit_and_centre(soft_ink(analysis, mark, piece=piece), size)
    except NoDigitFound:
        return None
    box = Component(mark.labels, mark.x + int(xs.min()), mark.y + int(ys.min()), int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1), 0, 0.0, False)
    return DigitCrop(pixels, analysis.to_input_box(box))
