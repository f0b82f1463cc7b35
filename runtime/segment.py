"""Read a number: a row of digits, left to right.

1. The ink analysis of ``preprocess`` gives the marks (specks, paper edges
   and shadows already dropped).
2. Fragments of one digit (the detached bar of a 5, a broken 4) are short
   and lie within or right beside a taller mark: merge them.
3. Keep the marks of the row: tall enough, near the line through the
   digits' centres (rows may be tilted), without big gaps between them.
4. A mark may be several touching digits. Cut it into 2..4 pieces along
   the cheapest top-to-bottom cuts through its ink (a cut may step
   sideways between rows, following slanted gaps and overhanging
   strokes), and let the model decide together with shape priors (how
   wide n digits are, how much ink a cut crosses): every piece of every
   hypothesis of every mark goes through one batched session call, and
   per mark the best joint score wins. A 1 written over its neighbour,
   which no such cut separates, is proposed as a straight band at either
   end of the mark (_one_strokes).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np

from .errors import NoDigitFound
from .imageio import to_uint8
from .preprocess import (Component, DigitCrop, InkAnalysis, analyse_ink, fit_and_centre, mean_stroke_width,
                         mnist_passthrough, soft_ink)

MAX_PIECES = 4  # per mark; more touching digits than that is a scribble
MAX_SPLITS = 8  # cut hypotheses per mark and number of pieces sent to the model (cheapest cuts first)
WIDE = 1.1  # piece wider than this times the row height: unlikely one digit
NARROW_ONE = 0.45  # piece narrower than this times the mark's height: may be a 1 (MNIST 1s: 0.44 median)
SPLIT_RATIO = 1.25  # marks this many typical digit widths wide may be several digits
SPLIT_ASPECT = 0.5  # or this much wider than tall (a touching 1 adds little width)
FRAGMENT_HEIGHT = 0.5  # marks shorter than this share of the digit height may be pieces of one
ASPECT_WEIGHT = 0.6  # weight of the mark's own shape against the row's widths (count_prior)
# Weight of the model's log-confidences against the shape priors. High
# because the shipped model is trained with label smoothing: its confidence
# tops out near 0.92, which compresses log-confidences; for the same reason
# a piece read with at least CONFIDENT costs nothing (else every extra
# piece would pay for the model's ceiling). The weights here were tuned on
# generated rows of other seeds than the benchmark's and the tests'
# (benchmarks/synth_photos.py, seeds 1 to 4).
MODEL_WEIGHT = 16.0
CONFIDENT = 0.9
CUT_WEIGHT = 2.0  # log-prior per stroke width of ink a cut crosses beyond the first
MAX_GAP = 1.2  # widest gap between digits of one number, in digit heights
MAX_CROSSING = 2.5  # cuts crossing more stroke widths of ink are not considered
MIN_PIECE_HEIGHT = 0.55  # of the mark's height: shorter pieces are parts of a digit
REACH = 0.16  # a cut stays within this share of the row height of where it starts
STEP = 0.06  # cuts start this share of the row height apart (and at projection minima)
JUMP_COST = 0.01  # per column a cut moves sideways through the paper between rows
# A piece between two cuts is framed less surely than a whole digit (a hook
# of the neighbour left on, a bit of its own cut off): its probabilities are
# averaged over the piece as framed, slightly smaller and larger, and turned
# a little either way, which steadies the confidences that pick the cuts
# (seeds 1-4 of benchmarks/synth_photos.py: the zooms +2 points of numbers
# with the model shipped then; the turns 3 rows of 1,200 with today's).
PIECE_VIEWS = ((0.9, 0.0), (1.1, 0.0), (1.0, 8.0), (1.0, -8.0))  # (scale, degrees)
# A 1 written over its neighbour (_one_strokes; seeds 1-4: 7 rows fixed, 1 broken):
ONE_COVER = 0.85  # a 1 is a straight stroke inked over this share of the mark's height
ONE_SLANT = 24  # degrees either way
ONE_BEYOND = 0.15  # ink beyond the stroke, as a share of the stroke's: more is a digit whose stem it is
ONE_REST = 0.8  # the digit under a 1 is about as tall as the mark (a 9's loop or a 4's arm is not)


@dataclass
class Hypothesis:
    crops: list[DigitCrop]
    aspect: float  # width / height of the mark
    ratio: float  # width of the mark / typical digit width of the row
    crossed: float = 0.0  # stroke widths of ink cut through, beyond one per cut
    too_wide: float = 0.0  # how much pieces exceed a digit's plausible width
    with_one: bool = False  # a piece is narrow enough to be a 1

    @property
    def prior(self) -> float:
        """Log prior of reading the mark as these pieces (see count_prior)."""
        return (count_prior(len(self.crops), self.aspect, self.ratio, self.with_one) - CUT_WEIGHT * self.crossed
                - 3.0 * self.too_wide)


@dataclass
class Slot:
    """One mark of the row and the ways to read it."""

    hypotheses: list[Hypothesis]


def read_numbers(classifier, images: list[np.ndarray]) -> list:
    """Read each image as a number; one session call for all of them."""
    size = classifier.input_size
    return resolve(classifier, [segment_number(im, size) for im in images])


def resolve(classifier, layouts: list[list[Slot]]) -> list:
    """Each layout read as a number (see choose)."""
    from .classifier import NumberReading

    return [NumberReading([pred for _, pred in chosen]) for chosen in choose(classifier, layouts)]


def choose(classifier, layouts: list[list[Slot]]) -> list[list[tuple[DigitCrop, object]]]:
    """Classify every crop of every hypothesis of every layout in one batch,
    then keep, per slot, the hypothesis with the best joint log-confidence
    plus prior. Per layout: its digits' (crop, prediction), left to right."""
    unique = [c for slots in layouts for c in unique_crops(slots)]
    preds = dict(zip(map(id, unique), classifier.predictions(unique, views=PIECE_VIEWS)))
    chosen = []
    for slots in layouts:
        digits = []
        for slot in slots:
            scored = []
            for h in slot.hypotheses:
                ps = [preds[id(c)] for c in h.crops]
                score = MODEL_WEIGHT * sum(min(np.log(max(p.confidence, 1e-6) / CONFIDENT), 0.0) for p in ps) + h.prior
                scored.append((score, list(zip(h.crops, ps))))
            digits.extend(max(scored, key=lambda t: t[0])[1])
        chosen.append(digits)
    return chosen


def unique_crops(slots: list[Slot]) -> list[DigitCrop]:
    """Every piece of every hypothesis of a layout, once (hypotheses of one
    mark share pieces: each is classified once)."""
    return list({id(c): c for s in slots for h in s.hypotheses for c in h.crops}.values())


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
    # The digits set the scale, not the edge of the paper or a shadow that
    # the frame cuts (unless nothing else is there: a tight crop).
    inner = [c for c in comps if not c.touches_border] or comps
    heavy = max(c.mass for c in inner)
    ref_h = max(c.h for c in inner if c.mass >= 0.2 * heavy)
    # Dots and dashes: too small to be part of a digit, or flat lines
    # (an underline, the rim of a shadow); and what is far taller than the
    # digits (the paper's edge).
    comps = [c for c in comps if max(c.w, c.h) >= 0.15 * ref_h and not (c.w > 3 * c.h and c.h < 0.3 * ref_h)
             and c.h <= 1.6 * ref_h]
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

    The model alone cannot decide (it is often sure that two touching
    digits are one odd digit), so a prior favours as many pieces as the
    mark is wide in typical digit widths, and every stroke a cut crosses
    costs. Per number of pieces only the MAX_SPLITS best-placed cut sets
    are read (the count prior is the same for all of them, so this ranks
    the cuts): how many digits the mark holds is for the model and the
    priors to decide together."""
    single = _crop(analysis, mark, None, size)
    height = max(row_h, float(mark.h))
    ratio = mark.w / digit_w
    aspect = mark.w / max(1, mark.h)
    out = [Hypothesis([single], aspect, ratio)]
    if aspect < SPLIT_ASPECT and ratio < SPLIT_RATIO:
        return out
    sel = np.isin(analysis.labels[mark.y:mark.y1, mark.x:mark.x1], mark.labels)
    ink = np.where(sel, np.minimum(analysis.ink[mark.y:mark.y1, mark.x:mark.x1] / max(mark.peak, 1e-6), 1.0), 0.0)
    stroke = max(1.0, mean_stroke_width(sel))
    paths = _cuts(ink, stroke, height)
    pieces = _Pieces(analysis, mark, sel, paths, size)
    for n_cuts in range(1, MAX_PIECES):
        candidates = _split_candidates(paths, n_cuts, mark.w, height, stroke, aspect, ratio)
        for hyp in _first_readable(candidates, pieces, MAX_SPLITS):
            # Now that the pieces are known: is one of them as narrow as a 1?
            hyp.with_one = any(c.box[2] < NARROW_ONE * single.box[3] for c in hyp.crops)
            out.append(hyp)
    for side, one, rest in _one_strokes(sel, stroke):
        crops = [_crop(analysis, mark, one, size), _crop(analysis, mark, rest, size)]
        if all(c is not None for c in crops):
            out.append(Hypothesis(crops if side == "left" else crops[::-1], aspect, ratio, with_one=True))
    return out


def _one_strokes(sel: np.ndarray, stroke: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A 1 written over its neighbour: no top-to-bottom cut separates them,
    but the 1 is a straight stroke at one end of the mark. Per end, the
    outermost straight band (slanted up to ONE_SLANT degrees) inked over
    ONE_COVER of the mark's height: (side, the band's pixels, the pixels
    on the inner side of it)."""
    h, w = sel.shape
    half = 0.75 * stroke + 0.5  # half width of the band a stroke fills
    bands = _straight_bands(sel, half)
    if not bands:
        return []
    out = []
    for side, (t, centre) in (("left", min(bands, key=lambda b: b[1])), ("right", max(bands, key=lambda b: b[1]))):
        line = centre + (np.arange(h) - (h - 1) / 2) * t  # the stroke's column per row
        offset = np.arange(w)[None, :] - line[:, None]
        if side == "right":
            offset = -offset
        one = sel & (np.abs(offset) <= half)
        rest = sel & (offset > half)
        # Little may lie beyond the 1 (a flag, a speck: it belongs to neither
        # piece); more is a digit of its own, and the band its straight stroke.
        beyond = np.count_nonzero(sel & (offset < -half))
        # The digit under the 1 is as tall as the mark away from the band too
        # (the stem of a 9 leaves bits beside the band; its loop is short).
        away = _rows(sel & (offset > 3 * half))
        if away >= ONE_REST * h and beyond <= ONE_BEYOND * np.count_nonzero(one):
            out.append((side, one, rest))
    return out


def _straight_bands(sel: np.ndarray, half: float) -> list[tuple[float, float]]:
    """Straight bands ``2 * half`` wide inked over ONE_COVER of the rows, per
    slant the leftmost and the rightmost: (tan of the slant, column of the
    band's centre at mid-height). The mask is sheared so that the band
    stands upright, and a dilation along rows tells each column's cover."""
    h, _ = sel.shape
    ys, xs = np.nonzero(sel)
    if ys.size == 0:
        return []
    k = 2 * int(np.ceil(half)) + 1
    bands = []
    for t in np.tan(np.radians(np.arange(-ONE_SLANT, ONE_SLANT + 1, 4))):
        u = xs - (ys - (h - 1) / 2) * t
        lo = int(np.floor(u.min())) - 1
        cols = np.round(u - lo).astype(np.int64)
        occupied = np.zeros((h, int(cols.max()) + 2), np.uint8)
        occupied[ys, cols] = 1
        cover = cv2.dilate(occupied, np.ones((1, k), np.uint8)).sum(axis=0) / h
        good = np.nonzero(cover >= ONE_COVER)[0]
        if good.size:
            runs = np.split(good, np.nonzero(np.diff(good) > 1)[0] + 1)
            bands += [(float(t), (r[0] + r[-1]) / 2 + lo) for r in (runs[0], runs[-1])]
    return bands


def _first_readable(candidates: list, pieces: "_Pieces", limit: int) -> list[Hypothesis]:
    """The first ``limit`` candidates whose pieces all make digit crops."""
    out = []
    for hyp, cuts in candidates:
        bounds = [None, *cuts, None]
        crops = [pieces.crop(left, right) for left, right in zip(bounds[:-1], bounds[1:])]
        if all(c is not None for c in crops):
            hyp.crops = crops
            out.append(hyp)
            if len(out) == limit:
                break
    return out


def _cuts(ink: np.ndarray, stroke: float, height: float) -> dict[int, tuple[np.ndarray, float]]:
    """Candidate cuts through a mark, keyed by their median column: (column
    per row, ink crossed)."""
    h, w = ink.shape
    profile = _smooth(ink.sum(axis=0), max(1, h // 25))
    margin = max(2, int(0.12 * height))
    # Start cuts at the projection's minima and on a grid across the mark (a
    # junction of slanted strokes need not be a minimum of the vertical
    # projection), each kept near its start: a free cut would rather slip
    # through the thin top and bottom of an 0 than through the junction
    # beside it.
    step = max(2, int(STEP * height))
    starts = _minima(profile, margin, margin) + list(range(margin, w - margin, step))
    paths: dict[int, tuple[np.ndarray, float]] = {}
    for xs, cost in zip(*_cut_paths(ink, starts, max(2, int(REACH * height)))):
        if cost / stroke > MAX_CROSSING:
            continue  # cuts through a digit, whatever it is next to
        key = int(np.median(xs))
        if key not in paths or cost < paths[key][1]:
            paths[key] = (xs, cost)
    return paths


def _split_candidates(paths: dict, n_cuts: int, width: int, height: float, stroke: float, aspect: float,
                      ratio: float) -> list[tuple[Hypothesis, tuple[int, ...]]]:
    """Every way to cut the mark with ``n_cuts`` of the cuts into pieces of
    plausible widths, best prior first (crops still to be made)."""
    out = []
    for cuts in combinations(sorted(paths), n_cuts):
        widths = np.diff([0, *cuts, width]) / height
        if widths.min() < 0.12 or widths.max() > 1.2:
            continue
        # Touching digits share about one stroke's width of ink; a cut
        # through more is cutting a digit.
        crossed = sum(max(0.0, paths[c][1] / stroke - 1.0) for c in cuts)
        too_wide = float(np.clip(widths - WIDE, 0, None).sum())
        with_one = bool(widths.min() < NARROW_ONE)  # a first guess, for ranking
        out.append((Hypothesis([None] * (n_cuts + 1), aspect, ratio, crossed, too_wide, with_one), cuts))
    out.sort(key=lambda t: -t[0].prior)
    return out


class _Pieces:
    """The crops between two cuts of a mark, each made once: split
    hypotheses share most of their pieces (and the classifier sees each
    once, see resolve)."""

    def __init__(self, analysis: InkAnalysis, mark: Component, sel: np.ndarray, paths: dict, size: int):
        self.analysis, self.mark, self.sel, self.paths, self.size = analysis, mark, sel, paths, size
        self.cache: dict = {}

    def crop(self, left: int | None, right: int | None) -> DigitCrop | None:
        """The piece between the cuts keyed ``left`` and ``right`` (None: the
        mark's edge); None when it is no digit."""
        if (left, right) not in self.cache:
            self.cache[left, right] = self._make(left, right)
        return self.cache[left, right]

    def _make(self, left: int | None, right: int | None) -> DigitCrop | None:
        h, w = self.sel.shape
        lo = np.full(h, -1) if left is None else self.paths[left][0]
        hi = np.full(h, w) if right is None else self.paths[right][0]
        cols = np.arange(w)[None, :]
        piece = self.sel & (cols > lo[:, None]) & (cols <= hi[:, None])
        # Every digit is about as tall as its neighbours: a piece that is
        # only a bar or a tail is part of a digit, not one.
        if _rows(piece) < MIN_PIECE_HEIGHT * h:
            return None
        return _crop(self.analysis, self.mark, piece, self.size)


def _cut_paths(ink: np.ndarray, starts: list[int], reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest top-to-bottom cut through ``ink`` within ``reach`` columns of
    each start (dynamic programming, all starts at once).

    A cut is one column per row: left of it is one piece, right of it the
    other. It may jump sideways between rows, and then separates the
    pixels passed over from those above them: free through the paper,
    costly along a stroke. So a cut can follow a slanted gap or slip under
    an overhanging bar (the flag of a 5 over the next digit), and what it
    costs is the ink it cuts through either way. Returns each cut's column
    per row [starts, h] and the ink it cuts."""
    h, w = ink.shape
    if not starts:
        return np.zeros((0, h), np.int64), np.zeros(0)
    n = 2 * reach + 1
    wall = 1e6  # columns beyond the mark
    padded = np.pad(ink, ((0, 0), (reach, reach)), constant_values=wall)
    cols = np.asarray(starts)[:, None] + np.arange(n)[None, :]
    cost = padded[:, cols] + 0.01  # [h, starts, n]; a small cost per pixel keeps the cut short
    # Ink cut by a sideways jump between rows y-1 and y: what is inked in
    # both rows, summed over the columns jumped (prefix sums), plus a
    # small cost per column.
    joined = np.minimum(cost[1:], cost[:-1]) - 0.01 + JUMP_COST
    prefix = np.cumsum(joined, axis=2)
    path = _cheapest_paths(cost, prefix)
    rows = np.arange(len(starts))
    xs = np.asarray(starts)[:, None] - reach + path
    # The ink under the cut plus the ink its jumps cut, without the small
    # costs per pixel and per column.
    crossed = cost[np.arange(h)[None, :], rows[:, None], path].sum(axis=1) - 0.01 * h
    p_at = np.take_along_axis(prefix.transpose(1, 0, 2), path[:, 1:, None], 2)[..., 0]
    p_from = np.take_along_axis(prefix.transpose(1, 0, 2), path[:, :-1, None], 2)[..., 0]
    crossed += (np.abs(p_at - p_from) - JUMP_COST * np.abs(path[:, 1:] - path[:, :-1])).sum(axis=1)
    return xs, crossed


def _cheapest_paths(cost: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """Per window, the column per row of the cheapest top-to-bottom path
    through ``cost`` [h, windows, n] where jumping from column a to b
    between rows y-1 and y costs |prefix[y-1, b] - prefix[y-1, a]|. The
    best predecessor of every column comes from running minima from the
    left and from the right: linear in the width per row."""
    h, windows, n = cost.shape
    acc = cost[0].copy()
    back = np.zeros((h, windows, n), np.int64)
    for y in range(1, h):
        p = prefix[y - 1]
        from_left, arg_left = _running_min(acc - p)
        from_right, arg_right = _running_min((acc + p)[:, ::-1])
        from_left = from_left + p
        from_right = from_right[:, ::-1] - p
        arg_right = n - 1 - arg_right[:, ::-1]
        left_wins = from_left <= from_right
        acc = np.where(left_wins, from_left, from_right) + cost[y]
        back[y] = np.where(left_wins, arg_left, arg_right)
    rows = np.arange(windows)
    path = np.empty((windows, h), np.int64)
    path[:, -1] = np.argmin(acc, axis=1)
    for y in range(h - 1, 0, -1):
        path[:, y - 1] = back[y, rows, path[:, y]]
    return path


def _running_min(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running minimum along the last axis and where it was reached."""
    low = np.minimum.accumulate(values, axis=1)
    k = np.arange(values.shape[1])
    arg = np.maximum.accumulate(np.where(values <= low, k, 0), axis=1)
    return low, arg


def _rows(mask: np.ndarray) -> int:
    """Height of the rows a mask covers (first to last)."""
    rows = np.nonzero(mask.any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def _smooth(values: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1  # one noisy column is not a gap
    return np.convolve(values, np.ones(k) / k, mode="same")


def count_prior(n: int, aspect: float, ratio: float, with_one: bool = False) -> float:
    """Log prior that a mark holds n digits, from its shape.

    ``aspect`` (width / height of the mark): one handwritten digit is
    0.76 as wide as tall (median of MNIST test digits rotated up to 15
    degrees, log-spread 0.26); n touching digits about n times that. But
    a 1 adds little width, so a group containing one is narrower: when
    one of the pieces is narrow enough to be a 1 (``with_one``), n digits
    are n - 1 digits and a stroke wide, else they are n full digits (one
    digit in ten is a 1). ``ratio`` (width / this row's typical digit
    width): n digits are about 0.95 n typical widths (a 1 about 0.3),
    spread 0.4 sqrt(n). The two are blended (touching digits are rarer
    than separate ones, but a cost per extra digit did not pay: the
    spreads, which widen with n, already hold splitting back)."""
    x = float(np.log(max(aspect, 1e-3)))
    if n == 1:
        by_aspect = _log_normal(x, np.log(0.76), 0.26)
    elif with_one:
        by_aspect = np.log(1 - 0.9 ** n) + _log_normal(x, np.log(0.76 * (n - 1) + 0.2), 0.3)
    else:
        by_aspect = n * np.log(0.9) + _log_normal(x, np.log(0.76 * n), 0.26 / np.sqrt(n / 2))
    sd_r = 0.4 * np.sqrt(n)
    expected = 0.95 * (n - 1) + 0.3 if with_one else 0.95 * n
    by_ratio = -0.5 * ((ratio - expected) / sd_r) ** 2 - float(np.log(sd_r))
    return ASPECT_WEIGHT * float(by_aspect) + (1 - ASPECT_WEIGHT) * by_ratio


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
