"""Find the rows of digits in an image and cut each out as the row reader's input.

1. The ink analysis of ``preprocess`` gives the marks (specks, paper edges,
   shadow bands and paper texture already dropped). Rows that span the frame
   (a tight crop: too little paper around the writing for its background) are
   found again with the image framed in its own paper (``framed_rows``).
2. Marks of one row lie side by side and overlap vertically: marks linked
   that way (and no further apart than MAX_GAP digit heights) form a row,
   which may be tilted. Several rows, or several numbers on one line, are
   read separately, top to bottom then left to right.
3. A row is turned level (a line through its marks' centres), cut out of the
   ink map with all the ink in its band (the bar of a 5 or a broken stroke is
   in the band without being merged), scaled so its tall marks are
   INK_HEIGHT of the reader's height, and its ink level normalised.

Only numpy and OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import NoDigitFound
from .preprocess import (
    FRAMED_SPAN,
    Component,
    InkAnalysis,
    Working,
    analyse_ink,
    framed,
    mnist_passthrough,
    working_scale,
)

INK_HEIGHT = 24 / 32  # share of the reader's input height taken by the row's tall marks
PAD = 8  # background columns added at both ends of a row, in reader pixels
MAX_GAP = 1.5  # widest gap between digits of one number, in digit heights (a "1" between two digits in
# MNIST-like 28-pixel frames leaves up to 1.3)
OVERLAP = 0.4  # neighbours in a row overlap vertically by this share of the smaller one's height
TALL = 0.5  # marks this share of a row's tallest one set its band (shorter ones: bars, dots, specks)
MAX_TILT = 20.0  # degrees
LINES = (0.5, 0.0)  # runs over half the frame's width are lines (preprocess.without_lines): a number is wide
WIDE_MARK = 1.5  # a mark this many times wider than tall holds several digits
MAX_MARKS = 80  # the heaviest marks considered: more is texture, not writing
# Marks and rows under this share of the most contrasted one's peak are not writing (a shadow's rim, a stain,
# paper texture): they are never kept as rows, nor set the height and weight that writing is judged by.
FAINT = 0.55
MAX_ROW_WIDTH = 4096  # reader pixels: about 200 digits
# Long side of the ink analysis' working image: 384 reads as many numbers of benchmarks.synth_photos
# seeds 1-2 as 512 (160 and 159 of 210) in 0.56x the pixels; 320 (also 159) splits a 30-digit row
# in a 2200x150 frame (tests/test_reader_runtime.py) into several.
WORK_SIDE = 384
# Frames under half of WORK_SIDE are enlarged up to 3x (single digits: 2x, preprocess.MAX_ENLARGE): the rows of
# a small frame keep more of their strokes' shape. Numbers in frames under 200 px of photo seeds 1-4: 131 ->
# 142 of 184 read (4x: 140).
ENLARGE = 3.0
# Rows whose tall marks are under the reader's ink height in the working image are analysed again in a crop
# around them when it shows them this many times larger (rows.zoomed_rows).
ZOOM = 1.5
ZOOM_MARGIN = 3  # digit heights of the frame kept on each side of those rows


@dataclass
class RowImage:
    """One row as the reader's input, and how to map its columns back to the input image."""

    pixels: np.ndarray  # float32 [height, width] in [0, 1], light ink on dark
    to_input: np.ndarray  # 2x3 affine map from row pixels to input-image pixels
    input_shape: tuple[int, int]  # (H, W) of the input image
    main: bool = True  # the image's heaviest row (others must read surely to count: see reader)

    def box(self, x0: float, x1: float) -> tuple[int, int, int, int]:
        """(x, y, w, h) in the input image of the ink between row columns x0 and x1."""
        first = max(0, int(x0))
        band = self.pixels[:, first:max(first + 1, int(np.ceil(x1)))] > 0.3
        ys, xs = np.nonzero(band.any(axis=1))[0], np.nonzero(band.any(axis=0))[0]
        y0, y1 = (ys[0], ys[-1] + 1) if ys.size else (0, self.pixels.shape[0])
        if xs.size:
            x0, x1 = first + xs[0], first + xs[-1] + 1
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ self.to_input.T
        H, W = self.input_shape
        lo = np.clip(np.floor(corners.min(axis=0)), 0, [W - 1, H - 1]).astype(int)
        hi = np.clip(np.ceil(corners.max(axis=0)), lo + 1, [W, H]).astype(int)
        return int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])


def find_row_images(image: np.ndarray, height: int) -> list[RowImage]:
    """Every row of marks in ``image`` (uint8 grey or BGR), top to bottom, as reader inputs."""
    passthrough = mnist_passthrough(image, 28)
    if passthrough is not None:  # an MNIST digit is a row of one
        return [level_row(passthrough, np.zeros(0, bool), passthrough > 0.3, 0.0, 1.0, height, image.shape[:2])]
    analysis, rows = analyse_rows(image, Working.of(image, WORK_SIDE, enlarge=ENLARGE))
    framed_images = framed_rows(image, height, analysis.polarity) if _tight(analysis, rows) else None
    return framed_images or _cut(image, analysis, rows, height)


def _cut(image: np.ndarray, analysis: InkAnalysis, rows: list[list[Component]], height: int) -> list[RowImage]:
    """The rows as reader inputs, from a closer look where they are small (``zoomed_rows``). A row whose marks
    all touch the frame's edge (a table's or the paper's edge, a dark corner, writing cut off) is left out while
    another row lies inside the frame."""
    if not rows:
        raise NoDigitFound("no number found (no ink)")
    rows = [row for row in rows if not all(c.touches_border for c in row)] or rows
    return zoomed_rows(image, analysis, rows, height) or cut_rows(analysis, rows, height)


def _tight(analysis: InkAnalysis, rows: list[list[Component]]) -> bool:
    """Whether the rows span FRAMED_SPAN of the frame both ways: a tight crop (see preprocess.FRAMED_SPAN)."""
    marks = [c for row in rows for c in row]
    if not marks:
        return False
    h, w = analysis.ink.shape
    return (max(c.y1 for c in marks) - min(c.y for c in marks) >= FRAMED_SPAN * h
            and max(c.x1 for c in marks) - min(c.x for c in marks) >= FRAMED_SPAN * w)


def framed_rows(image: np.ndarray, height: int, polarity: str) -> list[RowImage] | None:
    """The rows of ``image`` framed in its own paper (``preprocess.framed``), in ``image``'s pixels; None when
    that finds none. The frame adds no ink: the ``polarity`` found in ``image`` stays (decided again, a frame of
    the median colour beside paper under uneven light made its lighter half read as light ink)."""
    padded, m = framed(image)
    analysis, rows = analyse_rows(padded, Working.of(padded, WORK_SIDE, enlarge=ENLARGE), polarity)
    if not rows:
        return None
    images = _cut(padded, analysis, rows, height)
    for row_image in images:  # framed pixels -> input pixels
        row_image.to_input[:, 2] -= m
        row_image.input_shape = image.shape[:2]
    return images


def cut_rows(analysis: InkAnalysis, rows: list[list[Component]], height: int) -> list[RowImage]:
    """Each row cut out (cut_row), the heaviest one marked main."""
    images = [cut_row(analysis, row, height) for row in rows]
    heaviest = max(range(len(rows)), key=lambda k: sum(c.mass for c in rows[k]))
    for k, row_image in enumerate(images):
        row_image.main = k == heaviest
    return images


def analyse_rows(image: np.ndarray, working: Working,
                 polarity: str | None = None) -> tuple[InkAnalysis, list[list[Component]]]:
    """The ink analysis of ``image`` and its rows; with the other polarity when the first finds none (unless
    ``polarity`` is given)."""
    analysis = analyse_ink(image, polarity, lines=LINES, working=working)
    rows = find_rows(analysis)
    if not rows and analysis.doubt is not None:
        analysis = analyse_ink(image, analysis.doubt, lines=LINES, working=analysis.working)
        rows = find_rows(analysis)
    return analysis, rows


def zoomed_rows(image: np.ndarray, analysis: InkAnalysis, rows: list[list[Component]],
                height: int) -> list[RowImage] | None:
    """The rows cut again from a second analysis of the part of ``image`` that holds them, when they are
    small in the first one's working image (a number a few percent of a big photo: its digits a few
    working pixels high, enlarged and blurred for the reader) and the crop shows them ZOOM times larger
    or more. None when that does not apply or finds no rows."""
    tallest = max(c.h for row in rows for c in row)
    if tallest >= INK_HEIGHT * height:
        return None
    H, W = image.shape[:2]
    boxes = [analysis.to_input_box(c) for row in rows for c in row]
    # Context for the background and polarity estimates, and along the rows room for digits too small
    # or faint for the first analysis to keep as marks.
    digit = max(8, max(h for _, _, _, h in boxes))
    mx, my = ZOOM_MARGIN * digit, digit
    x0, y0 = max(0, min(x for x, _, _, _ in boxes) - mx), max(0, min(y for _, y, _, _ in boxes) - my)
    x1, y1 = min(W, max(x + w for x, _, w, _ in boxes) + mx), min(H, max(y + h for _, y, _, h in boxes) + my)
    crop = image[y0:y1, x0:x1]
    if working_scale(*crop.shape[:2], WORK_SIDE, ENLARGE) < ZOOM * analysis.scale:
        return None
    analysis, rows = analyse_rows(crop, Working.of(crop, WORK_SIDE, enlarge=ENLARGE))
    if not rows:
        return None
    images = cut_rows(analysis, rows, height)
    for row_image in images:  # crop pixels -> input pixels
        row_image.to_input[:, 2] += (x0, y0)
        row_image.input_shape = (H, W)
    return images


def find_rows(analysis: InkAnalysis) -> list[list[Component]]:
    """Marks grouped into rows (see the module docstring), top to bottom, then left to right."""
    h, w = analysis.ink.shape
    marks = [c for c in analysis.components if max(c.w, c.h) >= 0.02 * min(h, w)]
    marks = sorted(marks, key=lambda c: -c.mass)[:MAX_MARKS]
    if not marks:
        return []
    # The reference height comes from contrasted marks alone: a large faint shadow or smudge would
    # otherwise make a small number in a big frame look like specks beside it.
    top_peak = max(c.peak for c in marks)
    contrasted = [c for c in marks if c.peak >= FAINT * top_peak]
    inner = [c for c in contrasted if not c.touches_border] or contrasted
    heavy = max(c.mass for c in inner)
    ref_h = max(c.h for c in inner if c.mass >= 0.2 * heavy)
    # Flat dashes (an underline, a ruled line's piece, a shadow's rim) and what is far taller than
    # the writing (a paper edge) link nothing: they would join rows or stretch their band.
    marks = [c for c in marks if not (c.w > 3 * c.h and c.h < 0.3 * ref_h) and c.h <= 1.6 * ref_h]
    rows = [(group, max(c.h for c in group), sum(c.mass for c in group), max(c.peak for c in group))
            for group in _linked(marks)]
    if not rows:
        return []
    top_peak = max(r[3] for r in rows)
    top_h, top_mass = (max(r[k] for r in rows if r[3] >= FAINT * top_peak) for k in (1, 2))
    # Rows written with another pen than the strongest (much fainter), or of much smaller or lighter
    # marks than the strongest rows (specks), are not rows of digits.
    keep = [g for g, t, m, p in rows if t >= 0.5 * top_h and m >= 0.1 * top_mass and p >= FAINT * top_peak]
    return sorted(keep, key=lambda g: (round(min(c.y for c in g) / (0.5 * top_h)), min(c.x for c in g)))


def _linked(marks: list[Component]) -> list[list[Component]]:
    """Groups of marks joined by chains of side-by-side neighbours that overlap vertically."""
    n = len(marks)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        a = marks[i]
        for j in range(i + 1, n):
            b = marks[j]
            small = min(a.h, b.h)
            overlap = min(a.y1, b.y1) - max(a.y, b.y)
            gap = max(a.x, b.x) - min(a.x1, b.x1)
            if overlap >= OVERLAP * small and gap <= MAX_GAP * max(a.h, b.h):
                parent[root(i)] = root(j)
    groups: dict[int, list[Component]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(marks[i])
    return list(groups.values())


def cut_row(analysis: InkAnalysis, row: list[Component], height: int) -> RowImage:
    """The row turned level and scaled to the reader's height, with the ink of its band."""
    tall = [c for c in row if c.h >= TALL * max(m.h for m in row)]
    # Work on the row's box and a little around it (the band's ends and the reader's margins): label
    # masks of the whole frame would cost more than the rest of the row together.
    H, W = analysis.ink.shape
    x0, x1 = min(c.x for c in row), max(c.x1 for c in row)
    y0, y1 = min(c.y for c in row), max(c.y1 for c in row)
    margin = int(0.25 * (y1 - y0)) + 2
    window = (slice(max(0, y0 - margin), min(H, y1 + margin)), slice(max(0, x0 - margin), min(W, x1 + margin)))
    labels = analysis.labels[window]
    chosen = np.zeros(int(labels.max()) + 1, bool)
    chosen[[i for c in tall for i in c.labels]] = True
    mark = chosen[labels]
    chosen[[i for c in row for i in c.labels]] = True
    whole = chosen[labels]
    angle = _tilt(tall) if len(tall) > 1 else _ink_tilt(mark, tall[0])
    image = level_row(analysis.ink[window], mark, whole, angle, 1.0 / analysis.scale, height,
                      analysis.input_shape, analysis.weak)
    # The window's offset, in input pixels, completes the map back to the input image.
    image.to_input[:, 2] += np.array([window[1].start, window[0].start]) / analysis.scale
    return image


def level_row(ink: np.ndarray, tall: np.ndarray, row: np.ndarray, angle: float, to_input_scale: float,
              height: int, input_shape: tuple[int, int], weak: float = 0.0) -> RowImage:
    """Cut the band of ``row`` (a mask over ``ink``) turned by ``angle`` degrees: its tall marks
    (``tall``; all of the row when empty) fill INK_HEIGHT of ``height``."""
    ys, xs = np.nonzero(tall if tall.any() else row)
    cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    cx, cy = float(xs.mean()), float(ys.mean())
    v = -(xs - cx) * sin + (ys - cy) * cos  # across the row
    top, bottom = np.percentile(v, [0.5, 99.5]) if v.size > 50 else (v.min(), v.max())
    ys, xs = np.nonzero(row)
    u = (xs - cx) * cos + (ys - cy) * sin  # along the row
    left, right = float(u.min()), float(u.max())
    scale = INK_HEIGHT * height / max(float(bottom - top) + 1.0, 2.0)
    width = int(np.ceil((right - left + 1) * scale)) + 2 * PAD
    if width > MAX_ROW_WIDTH:
        raise NoDigitFound(f"no number found (a row {width} reader pixels long: over {MAX_ROW_WIDTH})")
    # Row pixel (x, y) <- ink pixel: x = scale * (u - left) + PAD, y = scale * (v - top) + margin.
    margin = (height - INK_HEIGHT * height) / 2
    forward = np.array([[scale * cos, scale * sin, 0.0], [-scale * sin, scale * cos, 0.0]])
    forward[:, 2] = [PAD - scale * left, margin - scale * top] - forward[:, :2] @ [cx, cy]
    source, warp = ink, forward
    if scale < 0.7:  # shrink by area first (no aliasing of thin strokes), then only turn
        size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
        source = cv2.resize(ink, size, interpolation=cv2.INTER_AREA)
        warp = forward @ np.diag([ink.shape[1] / size[0], ink.shape[0] / size[1], 1.0])
    pixels = cv2.warpAffine(source, warp, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    core = ink[row]
    lo = 0.5 * weak
    hi = max(float(np.percentile(core, 75)) if core.size else 1.0, lo + 1e-3)
    pixels = np.clip((pixels - lo) / (hi - lo), 0, 1).astype(np.float32)
    return RowImage(pixels, cv2.invertAffineTransform(forward) * to_input_scale, input_shape)


def _ink_tilt(mask: np.ndarray, mark: Component) -> float:
    """Degrees of one mark's slope: a line through its columns' centres of ink. Touching or overlapping
    digits merge into one mark, whose tilt no line through mark centres can give; a mark not much
    wider than tall is a single digit, whose columns say nothing of a row's slope (0)."""
    if mark.w < WIDE_MARK * mark.h:
        return 0.0
    ys, xs = np.nonzero(mask)
    counts = np.bincount(xs)
    cols = np.flatnonzero(counts)
    centres = np.bincount(xs, weights=ys)[cols] / counts[cols]
    slope = np.polyfit(cols, centres, 1, w=np.sqrt(counts[cols]))[0]
    return float(np.clip(np.degrees(np.arctan(slope)), -MAX_TILT, MAX_TILT))


def _tilt(marks: list[Component]) -> float:
    """Degrees of the line through the marks' centres (0 for one mark), weighted by their mass."""
    if len(marks) < 2:
        return 0.0
    xs = np.array([c.x + c.w / 2 for c in marks])
    ys = np.array([c.y + c.h / 2 for c in marks])
    if np.ptp(xs) < 1:
        return 0.0
    slope = np.polyfit(xs, ys, 1, w=np.sqrt([c.mass for c in marks]))[0]
    return float(np.clip(np.degrees(np.arctan(slope)), -MAX_TILT, MAX_TILT))
