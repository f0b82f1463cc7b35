"""Turn a real photo of a handwritten digit into an MNIST-style model input.

MNIST was made by taking a clean bilevel scan of one digit, fitting it in a
20x20 box keeping its aspect ratio (anti-aliasing gives grey edges) and
centring it by its centre of mass in a 28x28 frame. A phone photo is far
from that: uneven light, shadows, paper texture, coloured ink, chalk on a
board, noise, blur and other marks. The steps here undo that:

1. ``to_working``: shrink (or enlarge, at most 2x) to a fixed working size
   so costs and kernel sizes do not depend on the camera.
2. ``decide_polarity``: dark ink on paper or chalk on a board. Ink is the
   minority deviation from a wide median (which ignores strokes of either
   polarity); deviations are compared as log ratios, so a shadow (a
   bounded factor) weighs less than ink.
3. ``median_background`` then ``morph_background``: the paper/board colour
   under the local light. A wide median first finds the strokes however
   thick; their width then sizes a closing (opening for light ink) a few
   strokes wide, which removes the strokes but keeps shadows and the
   table beyond the paper's edge as background.
4. ``ink_map``: relative contrast to the background in luminance
   (dividing by the background cancels the illumination); luminance
   because JPEG blurs colour into blocks, and blue, red or black ink are
   all clearly darker than paper in it.
5. ``ink_mask``: per-mark threshold at a fraction of the mark's own peak
   contrast, above a noise floor measured on the image.
6. ``find_components`` / ``select_digit``: drop specks, paper edges,
   shadow bands and texture, keep the strongest mark and the fragments
   around it written with the same pen.
7. ``render_mnist``: crop the grey-level ink (not a binary mask), bring the
   stroke width into MNIST's range, fit in the 20x20 box, centre by mass.

Writing a few percent of a big photo gets two more looks: the whole image
at twice the working size when the first look finds no plain digit
(``_finer_look``), then the part around a small digit (``_closer_look``).
A tight crop of a digit gets one in a frame of its own paper (``framed``).

Only numpy and OpenCV; every size comes from the model's metadata
(``size``), the 20/28 box ratio is the MNIST convention of the contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .errors import NoDigitFound
from .imageio import to_uint8

# Long side of a single digit's working image, pixels (numbers: rows.WORK_SIDE). 288: the 1,200
# digit photos of benchmarks.synth_photos seeds 1-2 (600 each, realworld's mix of files) read
# 1,175 right at 288 with the quick working image (Working.quick), 1,168 at 256, and 1,171 at 320
# before it; 0.81x the pixels of 320 for every step after it.
WORK_SIDE = 288
# A digit under ZOOM_BELOW pixels high (or wide) in the working image is found again in the part of the image around
# it (ZOOM_MARGIN of its size on each side) when that part shows it ZOOM times larger or more (_closer_look).
ZOOM_BELOW = 40
ZOOM = 1.5
ZOOM_MARGIN = 1.5
# Writing a few percent of a big photo is specks at WORK_SIDE, and a shadow's or the paper's edge outweighs it
# there. When the first look finds no digit, or a mark that is not plainly one (_doubt: under FINE_BELOW pixels,
# fainter than FINE_PEAK, filled over FINE_FILL of its box like a blob, or on the frame's edge and under
# FINE_EDGE_BELOW), and ink off the frame's edge reaches FINE_GATE contrast, the whole image is looked at again
# at FINE_SIDE for small contrasted marks (FINE_LOOK); a faint first mark gives way only to one FINE_RATIO as
# contrasted. Chosen on photo seeds 1-2 (docs/EXPERIMENTS.md): it fires on ~5% of the usual photos.
FINE_SIDE = 2 * WORK_SIDE
FINE_BELOW = 40
FINE_PEAK = 0.4
FINE_FILL = 0.6
FINE_EDGE_BELOW = 120
FINE_RATIO = 0.8
FINE_GATE = 0.15
# A digit cropped tightly leaves too little paper around it for the backgrounds above (a wide median over a
# frame the strokes fill is ink), and pieces of it are taken for the digit. When the first look finds no digit,
# or a mark spanning FRAMED_SPAN of the frame, or the classifier reads its crop unsurely (``unsure``), the image is
# read again framed in FRAME_MARGIN of its short side of its own paper colour, and the classifier keeps the surer
# reading (an alternative). The mark found there must span FRAMED_SPAN of the frame and peak at FRAMED_LEAST_PEAK
# or more: framed noise or blank paper is a faint mark the frame's size. Photo seeds 1-2 (docs/EXPERIMENTS.md):
# 578 crops of their digits with margins of 0-10% of the digit's height 515 -> 548 read right, the usual 1,200
# photos 1,174 -> 1,174; it fires on 10% of those (classifier.UNSURE).
FRAMED_SPAN = 0.8
FRAMED_LEAST_PEAK = 0.5
FRAME_MARGIN = 0.4
BG_SCALE = 4  # polarity is judged at 1/BG_SCALE of the working size
POLARITY_KERNEL_FRAC = 0.3  # median window for the polarity decision, fraction of the short side
WIDE_KERNEL_FRAC = 0.5  # first background window, fraction of the short side (> 2x thickest stroke)
MIN_KERNEL_FRAC = 0.04  # narrowest second-pass window
PEAK_FRACTION = 0.35  # a mark keeps its pixels above this fraction of its peak contrast
FAINT_FRACTION = 0.3  # marks fainter than this fraction of the strongest are not ink
RELATIVE_FLOOR = 0.15  # background level below which the contrast is no longer divided (dark boards)
DIGIT_PX = 8  # the least long side of a digit in the working image
MIN_CONTRAST = 0.06  # ink must differ from the background by at least this fraction
# Slopes (rise per column) at which ruled lines are looked for: a sheet photographed a little askew. With a
# pixel of tolerance between two slopes, lines up to about 2.9 degrees are found (steeper ones: not measured).
LINE_SLOPES = (0.0, -0.02, 0.02, -0.04, 0.04)
# Lines lifted from a single digit's frame: runs over 0.7 of its width, and only those with no other ink in a
# tenth of their columns, because in a tight crop a digit's own bar spans the frame too, with the rest of the
# digit under it. Photo seeds 1-2, 600 single digits / the same on ruled paper / 500 crops of 7, 5, 2, 4, 3 with a
# pixel of margin: nothing lifted 591 / 319 / 495; runs over half the width 583 / 575 / -; over 0.7 590 / 579 /
# 485; over 0.7 with the bare tenth 591 / 541 / 492 (a bare 0.05: 590 / 560 / 489; 0.2: 591 / 509 / 492).
DIGIT_LINES = (0.7, 0.1)  # (share of the width, share of a line's columns bare of other ink)
# Choosing the digit among the marks: mass (size x contrast) weighted by
# (peak contrast / strongest peak) ** CONTRAST_POWER. Mass alone lets a
# large faint mark (a shadow's edge, a paper strip) beat a smaller but
# fully inked digit; one pen gives every stroke the same contrast.
# (seeds 1-4 of train/synth_photos.py: 60 -> 52 wrong of 2,400.)
CONTRAST_POWER = 2.0
SIGMA_SAMPLES = 10_000  # pixels a noise level is measured on, at most (a MAD over 10k values varies by about 1.5%)
# Small digit crops are enlarged at most 2x: more would only smear their noise over many pixels, where it
# looks like faint strokes. (Rows of digits in small frames gain from more: runtime.rows.ENLARGE.)
MAX_ENLARGE = 2.0
CANONICAL_SIDE = 80  # digit long side when its stroke width is measured and adjusted
MNIST_STROKE = (1.6, 3.6, 2.3)  # stroke width range in a 20 px box (5th..95th pct of MNIST) and target


@dataclass
class Component:
    """A connected mark in the working image (possibly several merged)."""

    labels: list[int]
    x: int
    y: int
    w: int
    h: int
    area: int
    mass: float  # sum of ink strength: big and contrasted marks weigh most
    touches_border: bool
    peak: float = 0.0  # contrast of the stroke cores

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    def merged(self, other: Component) -> Component:
        x, y = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        return Component(self.labels + other.labels, x, y, x1 - x, y1 - y, self.area + other.area,
                         self.mass + other.mass, self.touches_border or other.touches_border,
                         max(self.peak, other.peak))


@dataclass(frozen=True)
class MarkLimits:
    """Which marks may be the digit: long sides as shares of the working image's short side, peak contrast."""

    least: float = 0.04  # a candidate's
    speck: float = 2e-4  # area of a mark, share of the working image's, under which it is a speck (or 6 pixels)
    digit: float = 0.05  # the digit's, its fragments absorbed (and DIGIT_PX pixels)
    most: float = float("inf")  # a candidate's
    peak: float = 0.0  # a candidate's
    edge: bool = True  # whether a candidate may touch the frame's edge


FIRST_LOOK = MarkLimits()
# Small marks off the frame's edge only: the first look saw larger ones, and blank paper's texture, a shadow's
# or the paper's edge give large faint ones or ones along the frame.
FINE_LOOK = MarkLimits(least=0.015, speck=0.5e-4, digit=0.02, most=0.2, peak=0.25, edge=False)


@dataclass
class Working:
    """The input at the working size, made once per image: both polarities' analyses use it."""

    grey: np.ndarray  # float32 [h, w] in [0, 1], luminance
    half: np.ndarray  # float32 [h / 2, w / 2], the same (the first pass, the morphological background)
    small8: np.ndarray  # uint8 [h / BG_SCALE, w / BG_SCALE], the same, for the wide medians
    scale: float  # working pixels per input pixel
    input_shape: tuple[int, int]  # (H, W) of the input image
    # small8's smoothed wide medians by window: pass 1 (at half size) and a median pass 2 (at full
    # size) ask for the same window on the same small image, and each polarity's analysis too.
    medians: dict[int, np.ndarray] = field(default_factory=dict)
    quick: bool = False  # made by to_working(quick=True); then also decide_polarity's and median_background's

    @classmethod
    def of(cls, image: np.ndarray, side: int = WORK_SIDE, input_shape: tuple[int, int] | None = None,
           quick: bool = False, enlarge: float = MAX_ENLARGE) -> Working:
        """``input_shape``: (H, W) of the image ``image`` was decoded from at a reduced
        size (``imageio.decode_image_sized``), whose pixels the boxes are then given in.
        ``quick``: see ``to_working`` and ``decide_polarity`` (single digits: the number
        path reads fewer numbers with it, 276 against 284 of 350 on seed 1)."""
        grey, scale = to_working(image, side, quick, enlarge)
        if input_shape is None:
            input_shape = image.shape[:2]
        else:
            scale *= image.shape[1] / input_shape[1]
        return cls(grey, _half(grey), _small8(grey), scale, (int(input_shape[0]), int(input_shape[1])), quick=quick)


@dataclass
class InkAnalysis:
    """The ink found in one image, in working coordinates."""

    ink: np.ndarray  # float32 [h, w], relative contrast to the background (0 = paper)
    labels: np.ndarray  # int32 [h, w], connected components of the ink mask
    components: list[Component]  # plausible marks (specks and border artefacts removed)
    weak: float  # lower hysteresis threshold, in ink units
    scale: float  # working pixels per input pixel
    input_shape: tuple[int, int]  # (H, W) of the input image
    polarity: str  # "dark-ink" or "light-ink"
    doubt: str | None = None  # the other polarity, when the choice was uncertain
    working: Working | None = None  # what a second analysis of the same image can start from

    def to_input_box(self, c: Component) -> tuple[int, int, int, int]:
        """(x, y, w, h) of a component in input-image pixels."""
        H, W = self.input_shape
        x0 = int(np.floor(c.x / self.scale))
        y0 = int(np.floor(c.y / self.scale))
        x1 = min(W, int(np.ceil(c.x1 / self.scale)))
        y1 = min(H, int(np.ceil(c.y1 / self.scale)))
        return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


@dataclass
class DigitCrop:
    """One model-ready digit: [size, size] float32 in [0, 1], light on dark."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]  # x, y, w, h in the input image
    # The same image read with the other ink polarity, when it was unclear
    # which is right (e.g. a bold digit filling the frame); the classifier
    # keeps whichever reading it is surer of.
    alternatives: tuple[DigitCrop, ...] = ()


# ---------------------------------------------------------------- pipeline


def preprocess_digit(image: np.ndarray, size: int = 28, input_shape: tuple[int, int] | None = None,
                     finer=None, unsure=None) -> DigitCrop:
    """Find the one digit in ``image`` and return it MNIST-style.

    ``image``: any array ``imageio.to_uint8`` accepts. Raises
    ``NoDigitFound`` when there is no ink that could be a digit and
    ``RuntimeInputError`` for arrays that are not images.
    ``input_shape``: (H, W) of the full-size image when ``image`` was decoded
    reduced (``imageio.read_image_sized`` with ``min_side=WORK_SIDE``): the
    box is then given in its pixels. ``finer``: returns the image decoded
    again with FINE_SIDE pixels or more, and the (H, W) its boxes are to be
    given in, when ``image`` was decoded with fewer (for ``_finer_look``).
    ``unsure``: tells whether a crop reads unsurely (the classifier's judge), which earns it a look in
    a frame of paper too (``_framed_look``).
    """
    image = to_uint8(image)
    passthrough = mnist_passthrough(image, size)
    if passthrough is not None:
        h, w = image.shape[:2] if input_shape is None else input_shape
        return DigitCrop(passthrough, (0, 0, w, h))
    first = _analysis(image, WORK_SIDE, input_shape)
    try:
        analysis, crop, digit = _find_digit(image, size, first)
    except NoDigitFound as e:
        analysis, crop, digit, missing = None, None, None, e
    doubt = "none" if digit is None else _doubt(digit)
    contrasted = _contrasted_inside(first)  # else blank paper, mostly: spared a second look for nothing found
    fine = None
    if doubt and contrasted:
        fine = _finer_look(image, size, input_shape, finer, first.scale)
        # A faint or filled mark (a shadow; a 1 fills its box too) is only traded for a more contrasted one.
        if fine is not None and (doubt != "faint" or fine.digit.peak > FINE_RATIO * digit.peak):
            image, input_shape, analysis, crop = fine.image, fine.input_shape, fine.analysis, fine.crop
        else:
            fine = None
    if crop is not None:
        crop = _closer_look(image, size, input_shape, analysis.scale, crop) or crop
    # Small writing the finer look found is no tight crop.
    if fine is None and (_tight(first, digit, contrasted) or (crop is not None and unsure and unsure(crop))):
        look = _framed_look(image, size, input_shape)
        if look is not None:
            crop = look if crop is None else replace(crop, alternatives=(*crop.alternatives, look, *look.alternatives))
    if crop is None:
        raise missing
    return crop


def _tight(first: InkAnalysis, digit: Component | None, contrasted: bool) -> bool:
    """Whether the first look's digit may come from a tight crop (see FRAMED_SPAN); when it found none, whether
    its ink was ``contrasted`` (``_contrasted_inside``)."""
    h, w = first.ink.shape
    return contrasted if digit is None else digit.h >= FRAMED_SPAN * h or digit.w >= FRAMED_SPAN * w


def framed(image: np.ndarray, margin: float = FRAME_MARGIN) -> tuple[np.ndarray, int]:
    """``image`` in a frame ``margin`` of its short side wide, of its median colour (its paper's, where the
    writing covers less than half of it), and the frame's width in pixels."""
    h, w = image.shape[:2]
    m = max(1, round(margin * min(h, w)))
    step = max(1, int(np.sqrt(h * w / SIGMA_SAMPLES)))  # a sample's median is the paper's as well
    sample = image[::step, ::step].reshape(-1, 1 if image.ndim == 2 else image.shape[2])
    paper = np.median(sample, axis=0).tolist()
    return cv2.copyMakeBorder(image, m, m, m, m, cv2.BORDER_CONSTANT, value=paper), m


def _framed_look(image: np.ndarray, size: int, input_shape: tuple[int, int] | None) -> DigitCrop | None:
    """The digit found in ``image`` framed in its own paper (``framed``); None when none is."""
    padded, m = framed(image)
    try:
        analysis, crop, digit = _find_digit(padded, size, _analysis(padded, WORK_SIDE, None))
    except NoDigitFound:
        return None
    # Noise and blank paper framed are a mark the frame's size too, but a faint one.
    inner = (1 - 2 * m / np.array(padded.shape[:2])) * analysis.ink.shape
    if digit.peak < FRAMED_LEAST_PEAK or max(digit.h / inner[0], digit.w / inner[1]) < FRAMED_SPAN:
        return None
    return _placed(crop, -m, -m, image, input_shape)


def _placed(crop: DigitCrop, x0: int, y0: int, image: np.ndarray,
            input_shape: tuple[int, int] | None) -> DigitCrop:
    """``crop`` (and its alternatives), found in an image whose origin lies at (x0, y0) in ``image``'s pixels,
    with its box in the input image's pixels (``input_shape``, or ``image``'s own), clipped to it."""
    H, W = input_shape or image.shape[:2]
    k = image.shape[1] / W  # image pixels per input pixel
    bx, by, bw, bh = crop.box
    x, y = min(W - 1, max(0, int((x0 + bx) / k))), min(H - 1, max(0, int((y0 + by) / k)))
    x1, y1 = min(W, round((x0 + bx + bw) / k)), min(H, round((y0 + by + bh) / k))
    return DigitCrop(crop.pixels, (x, y, max(1, x1 - x), max(1, y1 - y)),
                     tuple(_placed(a, x0, y0, image, input_shape) for a in crop.alternatives))


@dataclass
class _Look:
    """What a second look found, and in which image."""

    image: np.ndarray
    input_shape: tuple[int, int] | None
    analysis: InkAnalysis
    crop: DigitCrop
    digit: Component


def _finer_look(image: np.ndarray, size: int, input_shape: tuple[int, int] | None, finer,
                scale: float) -> _Look | None:
    """The digit looked for in the whole image at FINE_SIDE among small marks (FINE_LOOK), when that shows it
    ZOOM times larger or more than the first look (``scale`` working pixels per input pixel); None when that
    does not apply or finds none."""
    shape = input_shape or image.shape[:2]
    if finer is not None:
        image, input_shape = finer()
    if working_scale(*image.shape[:2], FINE_SIDE) * image.shape[1] / shape[1] < ZOOM * scale:
        return None
    try:
        found = _find_digit(image, size, _analysis(image, FINE_SIDE, input_shape, FINE_LOOK), FINE_LOOK)
    except NoDigitFound:
        return None
    return _Look(image, input_shape, *found)


def _analysis(image: np.ndarray, side: int, input_shape: tuple[int, int] | None,
              limits: MarkLimits = FIRST_LOOK) -> InkAnalysis:
    return analyse_ink(image, working=Working.of(image, side, input_shape, quick=True), speck=limits.speck)


def _find_digit(image: np.ndarray, size: int, analysis: InkAnalysis,
                limits: MarkLimits = FIRST_LOOK) -> tuple[InkAnalysis, DigitCrop, Component]:
    """The digit among ``analysis``'s marks, read with the other polarity too when that was in doubt: the
    analysis it was found in, its crop and its mark."""
    try:
        crop, digit = _digit_crop(analysis, size, limits)
    except NoDigitFound:
        if analysis.doubt is None:
            raise
        analysis = analyse_ink(image, analysis.doubt, working=analysis.working, speck=limits.speck)
        crop, digit = _digit_crop(analysis, size, limits)
        return analysis, crop, digit
    if analysis.doubt is not None:
        try:
            other = analyse_ink(image, analysis.doubt, working=analysis.working, speck=limits.speck)
            crop.alternatives = (_digit_crop(other, size, limits)[0],)
        except NoDigitFound:
            pass
    return analysis, crop, digit


def _contrasted_inside(analysis: InkAnalysis) -> bool:
    """Whether ink off the frame's edge reaches FINE_GATE contrast anywhere (blurred as the marks' peaks are)."""
    h, w = analysis.ink.shape
    m = max(2, int(0.03 * min(h, w)))
    inside = analysis.ink[m:-m, m:-m]
    return inside.size > 0 and float(cv2.GaussianBlur(inside, (0, 0), 0.8).max()) >= FINE_GATE


def _doubt(digit: Component) -> str:
    """Why the first look's mark may not be the digit (FINE_*): "small", "edge", "faint" (or filled like a blob);
    "" when it plainly is one."""
    side = max(digit.w, digit.h)
    if side < FINE_BELOW:
        return "small"
    if digit.touches_border and side < FINE_EDGE_BELOW:
        return "edge"
    filled = digit.area > FINE_FILL * digit.w * digit.h and min(digit.w, digit.h) > 0.3 * side
    return "faint" if digit.peak < FINE_PEAK or filled else ""


def _closer_look(image: np.ndarray, size: int, input_shape: tuple[int, int] | None, scale: float,
                 crop: DigitCrop) -> DigitCrop | None:
    """The digit found again in the part of ``image`` around it, when it is under ZOOM_BELOW working pixels
    (``scale`` of them per input pixel) and that part shows it ZOOM times larger or more: a digit a few
    percent of a big photo keeps its strokes' shape. None when that does not apply or finds no digit."""
    x, y, w, h = crop.box
    if max(w, h) * scale >= ZOOM_BELOW:
        return None
    k = image.shape[1] / (input_shape or image.shape[:2])[1]  # image pixels per input pixel
    side = max(w, h) * k
    x0, y0 = max(0, int(x * k - ZOOM_MARGIN * side)), max(0, int(y * k - ZOOM_MARGIN * side))
    x1 = min(image.shape[1], int((x + w) * k + ZOOM_MARGIN * side) + 1)
    y1 = min(image.shape[0], int((y + h) * k + ZOOM_MARGIN * side) + 1)
    part = image[y0:y1, x0:x1]
    if working_scale(*part.shape[:2]) * k < ZOOM * scale:
        return None
    try:
        _, closer, _ = _find_digit(part, size, _analysis(part, WORK_SIDE, None))
    except NoDigitFound:
        return None
    return _placed(closer, x0, y0, image, input_shape)


def _digit_crop(analysis: InkAnalysis, size: int, limits: MarkLimits = FIRST_LOOK) -> tuple[DigitCrop, Component]:
    digit = select_digit(analysis, limits)
    return DigitCrop(render_mnist(analysis, digit, size), analysis.to_input_box(digit)), digit


def mnist_passthrough(image: np.ndarray, size: int) -> np.ndarray | None:
    """An image that already is a model input (size x size, grey, dark
    border, some light ink) is used as is: re-deriving it could only lose
    information, and the model must answer exactly as on the raw digit."""
    if image.shape[:2] != (size, size) or image.ndim != 2:
        return None
    border = np.concatenate([image[:2].ravel(), image[-2:].ravel(), image[:, :2].ravel(), image[:, -2:].ravel()])
    if border.mean() > 0.1 * 255 or image.max() < 0.3 * 255:
        return None
    return image.astype(np.float32) / 255.0


def analyse_ink(image: np.ndarray, polarity: str | None = None, lines: tuple[float, float] = DIGIT_LINES,
                working: Working | None = None, speck: float = FIRST_LOOK.speck) -> InkAnalysis:
    """Steps 1-6 up to the candidate marks, shared by digits and numbers.
    ``polarity``: "dark-ink" or "light-ink" to skip deciding it; the
    analysis's ``doubt`` is the other polarity when the decision was
    uncertain. ``lines``: lift nearly horizontal runs (ruled paper, an
    underline) out of the marks, so that digits written on them stay
    marks of their own: ``without_lines``' share and bare (share 0: none).
    ``working``: the image at the working size (``Working.of``; default:
    at WORK_SIDE), or an earlier analysis's (``InkAnalysis.working``) to
    analyse it again with the other polarity without redoing it. ``speck``:
    see ``find_components``."""
    if working is None:
        working = Working.of(image)
    work = working.grey
    short = min(work.shape[:2])
    doubt = None
    if polarity is None:
        polarity, doubt = decide_polarity(work, working.small8, working.quick)
    # Pass 1: a wide median finds the strokes, even thick ones, and is not
    # fooled by shadows (a closing this wide would fill them in as "ink")...
    # It only measures the stroke width that sizes pass 2's window, so it runs
    # at half the working size (a quarter of the pixels) and its width is doubled.
    k1 = _odd(WIDE_KERNEL_FRAC * short)
    half = working.half
    bg = median_background(half, k1 / 2, working.small8, working.medians, working.quick)
    ink, sigma = ink_map(half, bg, polarity)
    mask, _ = _ink_mask(ink, sigma)
    width = 2 * stroke_width(mask, ink)
    # ...pass 2: a closing/opening a few stroke widths wide, so that shadow
    # and paper edges (wider than a stroke) stay background, and the light
    # is followed closely. (Strokes too wide for that: pass 1 at full size.)
    k2 = _odd(max(3.5 * width + 4, MIN_KERNEL_FRAC * short))
    bg = (morph_background(work, polarity, k2, half) if k2 < 0.6 * k1
          else median_background(work, k1, working.small8, working.medians, working.quick))
    ink, sigma = ink_map(work, bg, polarity)
    mask, smooth = _ink_mask(ink, sigma)
    if lines[0]:
        mask = without_lines(mask, width, *lines)
    labels, components = find_components(mask, ink, smooth, speck)
    return InkAnalysis(ink, labels, components, _mask_floor(sigma), working.scale, working.input_shape, polarity,
                       doubt, working)


def working_scale(h: int, w: int, side: int = WORK_SIDE, enlarge: float = MAX_ENLARGE) -> float:
    """Working pixels per image pixel: the long side made ``side``, a small image enlarged at most ``enlarge``
    times, and a very elongated one keeping at least 32 pixels on its short side."""
    return max(min(side / max(h, w), enlarge), min(32 / min(h, w), 4 * side / max(h, w)))


def to_working(image: np.ndarray, side: int = WORK_SIDE, quick: bool = False,
               enlarge: float = MAX_ENLARGE) -> tuple[np.ndarray, float]:
    """Luminance resized so the long side is ``side`` (small images: enlarged at most ``enlarge`` times);
    float32 [0, 1].

    Luminance only: JPEG keeps it at full resolution and quality while
    colour is subsampled into blocks, and blue, red or black ink are all
    well darker than paper in it. Made grey and resized in uint8 (a third
    of the pixels to resize, no float copy of the input).

    ``quick``: shrink by averaging whole f x f blocks first (OpenCV's fast
    INTER_AREA path; at a fractional factor INTER_AREA is over ten times
    slower), then interpolate linearly by less than 2x, where a 2x2
    average is all that is needed. The few rows and columns past the last
    whole block are left out: less than one working pixel."""
    image = _luma(image)
    h, w = image.shape[:2]
    scale = working_scale(h, w, side, enlarge)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    work = image
    if not quick:
        if size != (w, h):
            work = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    else:
        f = int(1 / scale) if scale < 0.5 else 1
        if f >= 2 and h >= 2 * f and w >= 2 * f:
            h, w = h - h % f, w - w % f
            work = cv2.resize(image[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)
        if size != work.shape[1::-1]:
            work = cv2.resize(work, size, interpolation=cv2.INTER_LINEAR)
    scale = size[0] / w
    return np.multiply(work, np.float32(1 / 255), dtype=np.float32), scale


def decide_polarity(grey: np.ndarray, small8: np.ndarray | None = None, quick: bool = False) -> tuple[str, str | None]:
    """Dark ink on light paper, or light chalk/ink on a dark board.

    Returns the polarity and, when in doubt, the other one to try as well.

    The paper is the majority: ink is what deviates from it strongly.
    Deviations are taken as log ratios: light falls on ink and paper
    alike, so a shadow or a bright patch is a bounded factor, while ink is
    a large one (dark ink reflects a fraction of what paper does, chalk
    several times what a board does). Count the deviations above half of
    the strongest, on each side, against two references: a wide median
    (follows uneven light, ignores strokes of either polarity, but is
    fooled by a very bold digit filling the frame) and the whole image's
    median (the reverse). When they disagree, both are worth a try.
    ``small8``: ``grey`` at 1/BG_SCALE in uint8 (``Working.small8``), when already made.
    ``quick``: the wide median is at least 17 px (OpenCV's median is constant-time per pixel
    from 17 px up on small images; narrower windows take a per-window path there, 3x slower
    at the 15 px of a 256 px working image).
    """
    if small8 is None:
        small8 = _small8(grey)
    short = min(small8.shape)
    k = _odd(POLARITY_KERNEL_FRAC * short)
    if quick and k < 17 <= short:
        k = 17
    bg8 = cv2.medianBlur(small8, k)
    log_small = cv2.LUT(small8, _LOG_LEVEL)  # a table of the 256 levels' logs instead of a log per pixel
    level = _median8(small8) / 255
    local = _ink_side(cv2.subtract(log_small, cv2.LUT(bg8, _LOG_LEVEL)), _median8(bg8) / 255)
    whole = _ink_side(log_small - np.float32(np.log(level + 0.02)), level)
    return local, (whole if whole != local else None)


_LOG_LEVEL = np.log(np.arange(256, dtype=np.float32) / 255 + np.float32(0.02)).astype(np.float32)


def _ink_side(d: np.ndarray, background: float) -> str:
    """Which side of the reference the strong deviations ``d`` lie on."""
    # One sort of the (small) map gives both tails' percentiles and, below, the mass beyond t on
    # each side as sums of its ends.
    v = np.sort(d, axis=None)
    lo, hi = _percentiles(v, (0.1, 99.9), ordered=True)
    top = max(-lo, hi)
    t = max(3 * _robust_sigma(cv2.subtract(d, cv2.GaussianBlur(d, (0, 0), 2))), 0.5 * top, 0.05)
    dark = v[:np.searchsorted(v, -t)]
    light = v[np.searchsorted(v, t, side="right"):]
    dark_mass = -float(dark.sum(dtype=np.float64)) - t * dark.size
    light_mass = float(light.sum(dtype=np.float64)) - t * light.size
    if dark_mass > 1.5 * light_mass:
        return "dark-ink"
    if light_mass > 1.5 * dark_mass:
        return "light-ink"
    return "dark-ink" if background >= 0.4 else "light-ink"


def median_background(work: np.ndarray, k: float, small8: np.ndarray | None = None,
                      medians: dict[int, np.ndarray] | None = None, quick: bool = False) -> np.ndarray:
    """Paper/board colour from a k-wide median (at 1/BG_SCALE resolution).

    Ignores strokes of either polarity up to almost k/2 wide and follows
    smooth light gradients, but rounds off the edges of shadows.
    ``small8``: ``work`` at 1/BG_SCALE in uint8 (``Working.small8``), when already
    made; or the working image at 1/BG_SCALE when ``work`` is smaller (``Working.half``).
    ``medians``: ``Working.medians``, the smoothed medians of ``small8`` already made, by window.
    ``quick``: smoothed in float32 (``Working.quick``; within a grey level of the exact uint8 one)."""
    h, w = work.shape[:2]
    if small8 is None:
        small8 = _small8(work)
    ks = _odd(k * small8.shape[1] / w)
    med = medians.get(ks) if medians is not None else None
    if med is None:
        med = cv2.medianBlur(small8, ks)
        sigma = max(0.5, ks / 6)  # smooth the median's blockiness
        if quick:
            # Into float32, the 1/255 scaling in the kernel: OpenCV's exact uint8 Gaussian is
            # several times slower for kernels this wide.
            kernel = cv2.getGaussianKernel(int(round(6 * sigma + 1)) | 1, sigma, cv2.CV_32F)
            med = cv2.sepFilter2D(med, cv2.CV_32F, kernel, kernel * np.float32(1 / 255))
        else:
            med = cv2.GaussianBlur(med, (0, 0), sigma)
        if medians is not None:
            medians[ks] = med
    if med.dtype == np.float32:
        return cv2.resize(med, (w, h), interpolation=cv2.INTER_LINEAR)
    # Enlarged in uint8 (a quarter of the bytes), then one scaling pass to float.
    return np.multiply(cv2.resize(med, (w, h), interpolation=cv2.INTER_LINEAR), np.float32(1 / 255),
                       dtype=np.float32)


def morph_background(work: np.ndarray, polarity: str, k: int, half: np.ndarray | None = None) -> np.ndarray:
    """Paper/board colour under the local light, same shape as ``work``.

    A closing (dark ink) or opening (light ink) with a k x k window
    removes every stroke narrower than k and keeps larger shapes: the
    paper's light gradient, a shadow, the table beyond the paper's edge.
    Done at half resolution on a lightly smoothed image (smoothing keeps
    noise peaks from biasing the max/min filters). ``half``: ``work`` at half
    size (``Working.half``), when already made.
    """
    h, w = work.shape[:2]
    if half is None:
        half = _half(work)
    half = cv2.GaussianBlur(half, (0, 0), 1.0)
    kh = max(3, _odd(k / 2))
    op = cv2.MORPH_CLOSE if polarity == "dark-ink" else cv2.MORPH_OPEN
    bg = cv2.morphologyEx(half, op, cv2.getStructuringElement(cv2.MORPH_RECT, (kh, kh)))
    bg = _soften(bg, max(1.0, kh / 6), polarity)
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)


def _soften(bg: np.ndarray, sigma: float, polarity: str) -> np.ndarray:
    """Blur away a filter's blocky plateaus without inventing ink.

    Blurring spills bright paper into the dark side of a sharp shadow
    edge, and that spill would read as a band of dark ink. Keeping the
    darker of blurred and unblurred (the lighter, for light ink) only ever
    errs towards "less ink"."""
    blurred = cv2.GaussianBlur(bg, (0, 0), sigma)
    return np.minimum(bg, blurred) if polarity == "dark-ink" else np.maximum(bg, blurred)


def ink_map(work: np.ndarray, bg: np.ndarray, polarity: str) -> tuple[np.ndarray, float]:
    """Ink strength (>= 0) and its noise level.

    (pixel - background) / background, signed so ink is positive:
    dividing cancels the illumination (ink and paper are lit alike), so a
    shadowed stroke scores like a lit one. ``work`` is grey (luminance).
    """
    rel = cv2.subtract(bg, work) if polarity == "dark-ink" else cv2.subtract(work, bg)
    rel = cv2.divide(rel, cv2.max(bg, RELATIVE_FLOOR))
    # Noise from the fine-scale residual: a morphological background sits on
    # the noise peaks, so the map's own spread would overstate it.
    sigma = _robust_sigma(cv2.subtract(rel, cv2.GaussianBlur(rel, (0, 0), 2))) * 1.2
    return np.maximum(rel, np.float32(0), out=rel), sigma


def _mask_floor(sigma: float) -> float:
    return max(3 * sigma, MIN_CONTRAST / 2)


def ink_mask(ink: np.ndarray, sigma: float) -> np.ndarray:
    return _ink_mask(ink, sigma)[0]


def _ink_mask(ink: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary ink mask with a threshold per mark.

    Each mark (connected above the noise floor) must peak above a seed
    level, and keeps the pixels above a fraction of its own peak: a faint
    pencil digit and a bold marker each get cut at their own half-height,
    and one strong shape elsewhere (a table edge) does not raise the bar
    for the digit, as a global threshold would. Also returns the lightly
    smoothed map the peaks are taken on (``find_components`` uses it too).
    """
    floor = _mask_floor(sigma)
    seed = max(6 * sigma, MIN_CONTRAST)
    # Peak of a lightly smoothed map: one noisy pixel does not set the level.
    smooth = cv2.GaussianBlur(ink, (0, 0), 0.8)
    above = ink > floor
    n, labels = cv2.connectedComponents(above.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(ink.shape, np.uint8), smooth
    # Only the pixels above the floor can be ink (a few percent of the image): work on them alone.
    at = np.flatnonzero(above)
    lab = labels.take(at)  # take: faster than fancy indexing for the same gather
    peak = _label_max(lab, smooth.take(at), n)
    level = np.maximum(floor, PEAK_FRACTION * peak)
    level[peak < seed] = np.inf
    mask = np.zeros(ink.size, np.uint8)
    mask[at] = ink.take(at) > level.take(lab)
    return mask.reshape(ink.shape), smooth


def without_lines(mask: np.ndarray, stroke: float, share: float, bare: float = 0.0) -> np.ndarray:
    """The mask without long, nearly horizontal runs (ruled lines, underlines, a table's edge: over
    ``share`` of its width, tilted up to LINE_SLOPES' steepest, with no other ink in at least ``bare`` of
    their columns), except where a stroke crosses them: there the gap is bridged again, so a digit written
    across a line stays whole."""
    h, w = mask.shape
    length = max(15, int(w * share))
    run = cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1))
    lines = np.zeros_like(mask)
    for slope in LINE_SLOPES:
        # Shear the mask so a line of this slope lies level; a line between two sampled slopes drifts by
        # a pixel or two along a run, so it is thickened by that first. (Stopping at the first slope that
        # finds a line reads fewer tilted pages: a level run catches a piece of a line a little askew.)
        shear = np.float32([[1, 0, 0], [slope, 1, -slope * w / 2]])  # output row = y - slope * (x - w/2)
        level = mask
        if slope:
            level = cv2.warpAffine(mask, shear, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            level = cv2.dilate(level, np.ones((3, 1), np.uint8))
        # The opening is one pixel row high, so it runs on the rows that can hold a run at all: most
        # frames have none, and the opening of the whole mask would cost most of this function.
        rows = np.flatnonzero(cv2.reduce(level, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() >= length)
        if not rows.size:
            continue
        found = np.zeros_like(level)
        found[rows] = cv2.morphologyEx(level[rows], cv2.MORPH_OPEN, run)
        if slope:
            found = cv2.warpAffine(found, shear, (w, h), flags=cv2.INTER_NEAREST)
        lines |= found & mask
    if not lines.any():
        return mask
    lines = cv2.dilate(lines, np.ones((3, 1), np.uint8))  # and the line's blurred rims
    rest = mask & ~lines
    if bare:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
        empty = cv2.reduce(rest, 0, cv2.REDUCE_MAX).ravel() == 0  # columns with no other ink
        keep = np.array([False] + [empty[x:x + cw].mean() >= bare for x, cw in stats[1:, [0, 2]]])
        lines = keep[labels].astype(np.uint8)
        if not lines.any():
            return mask
        rest = mask & ~lines
    reach = max(5, int(round(2 * stroke)) + 3)
    bridged = cv2.morphologyEx(rest, cv2.MORPH_CLOSE, np.ones((reach, 1), np.uint8))
    return rest | (lines & bridged & mask)


def stroke_width(mask: np.ndarray, ink: np.ndarray) -> float:
    """Typical stroke width (pixels) of the writing: 2 * area / perimeter
    (exact for long strokes) of the biggest marks, after closing pinholes
    (grainy chalk). Measured on the high-contrast core of the ink, so that
    a shadow merged with the digit does not count as a wide stroke; marks
    on the frame's edge (the table, a shadow) are left out unless they are
    all there is."""
    h, w = mask.shape
    inked = ink.take(np.flatnonzero(mask > 0))  # (boolean indexing is several times slower)
    if inked.size == 0:
        return 0.0
    strong = ((ink >= 0.5 * _percentiles(inked, (99.5,))[0]) & (mask > 0)).astype(np.uint8)
    n, labels, stats, _ = _components_with_stats(strong)
    if n <= 1:
        return 0.0
    x, y, cw, ch, area = (stats[:, i] for i in range(5))
    ids = np.arange(1, n)
    inner = ids[(x[ids] > 0) & (y[ids] > 0) & (x[ids] + cw[ids] < w) & (y[ids] + ch[ids] < h)]
    if inner.size and area[inner].max() >= 0.1 * area[ids].max():
        ids = inner
    ids = ids[np.argsort(area[ids])[::-1][:3]]
    big = _selected(labels, ids.tolist())
    return mean_stroke_width(cv2.morphologyEx(big, cv2.MORPH_CLOSE, _ellipse(3)))


def mean_stroke_width(mask: np.ndarray) -> float:
    """2 * area / perimeter of a mask: the width of its strokes (exact for long strokes); 0 when it has no outline."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * float(np.count_nonzero(mask)) / perimeter if perimeter > 0 else 0.0


def find_components(mask: np.ndarray, ink: np.ndarray, smooth: np.ndarray | None = None,
                    speck: float = FIRST_LOOK.speck) -> tuple[np.ndarray, list[Component]]:
    """Connected marks, without specks (``speck``: MarkLimits.speck), paper edges, shadow bands and
    paper texture. ``smooth``: ``ink`` blurred as ``ink_mask`` does, when already made."""
    h, w = mask.shape
    short = min(h, w)
    n, labels, stats, _ = _components_with_stats(mask)
    if smooth is None:
        smooth = cv2.GaussianBlur(ink, (0, 0), 0.8)
    at = np.flatnonzero(labels > 0)  # the marks' pixels only (a few percent of the image; nonzero is fastest on bool)
    lab = labels.take(at)
    mass = np.bincount(lab, weights=ink.take(at), minlength=n)
    peak = _label_max(lab, smooth.take(at), n).astype(np.float64)
    x, y, cw, ch, area = (stats[:, k].astype(np.int64) for k in range(5))
    touches = (x == 0) | (y == 0) | (x + cw == w) | (y + ch == h)
    keep = area >= max(6, int(speck * h * w))  # not specks, dust, sensor noise
    keep &= ~(((x == 0) & (x + cw == w)) | ((y == 0) & (y + ch == h)))  # nor a band or line crossing the frame
    keep &= ~((area > 0.8 * cw * ch) & (area > 0.2 * h * w))  # nor a filled region (a dark object, a hand)
    keep[0] = False
    for i in np.flatnonzero(keep & touches):
        if border_contact(labels, int(i), (int(x[i]), int(y[i]), int(cw[i]), int(ch[i]))) >= 0.35:
            keep[i] = False  # paper edge, table, shadow: runs along the frame
    # Strokes written with one pen have about the same contrast; marks much
    # fainter than the strongest sizeable one are paper texture or stains.
    sizeable = keep & (np.maximum(cw, ch) >= 0.04 * short) & ~touches
    if sizeable.any():
        keep &= peak >= FAINT_FRACTION * peak[sizeable].max()
    comps = [Component([i], int(x[i]), int(y[i]), int(cw[i]), int(ch[i]), int(area[i]), float(mass[i]),
                       bool(touches[i]), float(peak[i])) for i in np.flatnonzero(keep).tolist()]
    return labels, comps


def border_contact(labels: np.ndarray, i: int, box: tuple[int, int, int, int]) -> float:
    """Largest fraction of one frame side that component ``i`` lies on.

    The table beyond a paper edge or a shadow band runs along a side; a
    digit in a tight crop only touches it over a stroke's width."""
    h, w = labels.shape
    x, y, cw, ch = box
    best = 0.0
    if y == 0:
        best = max(best, np.count_nonzero(labels[0, x:x + cw] == i) / w)
    if y + ch == h:
        best = max(best, np.count_nonzero(labels[h - 1, x:x + cw] == i) / w)
    if x == 0:
        best = max(best, np.count_nonzero(labels[y:y + ch, 0] == i) / h)
    if x + cw == w:
        best = max(best, np.count_nonzero(labels[y:y + ch, w - 1] == i) / h)
    return best


def select_digit(analysis: InkAnalysis, limits: MarkLimits = FIRST_LOOK) -> Component:
    """The strongest plausible mark plus the fragments that belong to it."""
    h, w = analysis.ink.shape
    short = min(h, w)
    cands = [c for c in analysis.components
             if limits.least * short <= max(c.w, c.h) <= limits.most * short and c.peak >= limits.peak
             and (limits.edge or not c.touches_border)]
    if not cands:
        raise NoDigitFound("no digit found (no ink)")
    # Marks cut by the frame edge are more likely a neighbouring object.
    top = max(c.peak for c in cands)
    cands.sort(key=lambda c: c.mass * (c.peak / top) ** CONTRAST_POWER * (0.5 if c.touches_border else 1.0),
               reverse=True)
    digit = cands[0]
    digit = absorb_fragments(digit, [c for c in analysis.components if c is not digit])
    if max(digit.w, digit.h) < limits.digit * short or max(digit.w, digit.h) < DIGIT_PX:
        raise NoDigitFound("no digit found (only specks)")
    return digit


def absorb_fragments(digit: Component, others: list[Component]) -> Component:
    """Merge pieces of a broken stroke (the bar of a 5, a faint join) that lie
    next to the main mark, but not specks or a neighbouring digit."""
    changed = True
    pool = list(others)
    while changed:
        changed = False
        side = max(digit.w, digit.h)
        gap = 0.12 * side
        for c in pool:
            if c.area < 0.03 * digit.area or max(c.w, c.h) < 0.12 * side:
                continue
            if c.peak < 0.5 * digit.peak:
                continue  # written with the same pen: as dark as the rest
            if c.touches_border and not digit.touches_border:
                continue  # the table's edge or a shadow entering the frame
            dx = max(0, max(c.x, digit.x) - min(c.x1, digit.x1))
            dy = max(0, max(c.y, digit.y) - min(c.y1, digit.y1))
            if dx > gap or dy > gap:
                continue
            union = digit.merged(c)
            if union.w > 1.4 * union.h and union.w > 1.2 * digit.w:
                continue  # would make a wide blob: that is a neighbour, not a fragment
            digit = union
            pool.remove(c)
            changed = True
            break
    return digit


def render_mnist(analysis: InkAnalysis, comp: Component, size: int = 28) -> np.ndarray:
    """The MNIST rendition of one (possibly merged) component."""
    soft = soft_ink(analysis, comp)
    return fit_and_centre(soft, size)


def soft_ink(analysis: InkAnalysis, comp: Component, pad: int = 3,
             piece: np.ndarray | None = None) -> np.ndarray:
    """Grey-level ink of the component, cropped, 1.0 on the stroke cores.

    Keeps the anti-aliased edges (a hard mask would make jagged, too-thin
    strokes after shrinking) while zeroing every other mark in the crop.
    ``piece``: boolean mask over the component's box selecting the pixels
    of one digit cut out of touching neighbours; the neighbours' pixels
    are zeroed, rim included.
    """
    H, W = analysis.ink.shape
    x0, y0 = max(0, comp.x - pad), max(0, comp.y - pad)
    x1, y1 = min(W, comp.x1 + pad), min(H, comp.y1 + pad)
    ink = analysis.ink[y0:y1, x0:x1]
    labels = analysis.labels[y0:y1, x0:x1]
    sel = _selected(labels, comp.labels)  # uint8 0/1, as OpenCV takes it
    mark = None
    if piece is not None:
        mark = sel.view(bool)
        placed = np.zeros_like(mark)
        oy, ox = comp.y - y0, comp.x - x0
        placed[oy:oy + comp.h, ox:ox + comp.w] = piece
        sel = (mark & placed).view(np.uint8)
    core = ink.take(np.flatnonzero(sel))  # (boolean indexing is several times slower)
    lo = 0.5 * analysis.weak
    hi = _percentiles(core, (75,))[0] if core.size else 1.0
    hi = max(hi, lo + 1e-3)
    soft = np.subtract(ink, np.float32(lo))
    np.divide(soft, np.float32(hi - lo), out=soft)
    np.clip(soft, 0, 1, out=soft)
    # Inside the mask the stroke is ink even where a very thick stroke made
    # the background estimate sag (its core would come out hollow).
    np.maximum(soft, cv2.erode(sel, _ellipse(3)), out=soft)
    keep = cv2.dilate(sel, _ellipse(5))  # the stroke and its blurred rim
    if mark is not None:
        # A cut is a hard edge: nothing of the neighbour, not even its rim.
        others = cv2.dilate((mark & ~sel.view(bool)).view(np.uint8), _ellipse(3)).view(bool)
        keep = (keep.view(bool) & (~others | sel.view(bool))).view(np.uint8)
    return np.multiply(soft, keep, out=soft)


def fit_and_centre(soft: np.ndarray, size: int = 28) -> np.ndarray:
    """MNIST normalisation: stroke width, 20x20 box, centre of mass."""
    box = max(1, round(size * 20 / 28))
    soft = crop_to_ink(soft)
    if soft is None:
        raise NoDigitFound("no digit found (empty crop)")
    h, w = soft.shape
    scale = CANONICAL_SIDE / max(h, w)
    canon = cv2.resize(soft, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canon = normalise_stroke(canon, box)
    canon = crop_to_ink(canon)
    if canon is None:
        raise NoDigitFound("no digit found (empty crop)")
    h, w = canon.shape
    scale = box / max(h, w)
    small = cv2.resize(canon, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), np.float32)
    sh, sw = small.shape
    oy, ox = (size - sh) // 2, (size - sw) // 2
    out[oy:oy + sh, ox:ox + sw] = small
    out = centre_by_mass(out)
    peak = float(out.max())
    if peak <= 0:
        raise NoDigitFound("no digit found (empty crop)")
    return np.clip(out / peak, 0, 1)  # MNIST strokes reach full white


def viewed(pixels: np.ndarray, scale: float, degrees: float = 0.0) -> np.ndarray:
    """A model input scaled by ``scale`` and turned by ``degrees``
    (counter-clockwise) about the frame's centre."""
    size = pixels.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, scale)
    return cv2.warpAffine(pixels, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def normalise_stroke(canon: np.ndarray, box: int) -> np.ndarray:
    """Thicken hair-thin strokes (ballpoint in a big photo) or thin marker
    strokes so that, once the digit is shrunk into the box, the stroke is as
    wide as MNIST's (about 2.3 px in 20 px)."""
    binary = canon > 0.5
    area = np.count_nonzero(binary)
    if area < 4:
        return canon
    width = mean_stroke_width(binary)
    if width <= 0:
        return canon
    px_per_out = max(canon.shape) / box  # canonical pixels per output pixel
    width_out = width / px_per_out
    lo, hi, target = MNIST_STROKE
    if width_out < lo:
        r = round((target - width_out) * px_per_out / 2)
        if r >= 1:
            canon = cv2.dilate(canon, _ellipse(2 * r + 1))
    elif width_out > hi:
        r = round((width_out - target) * px_per_out / 2)
        if r >= 1:
            eroded = cv2.erode(canon, _ellipse(2 * r + 1))
            if (eroded > 0.5).sum() > 0.3 * area:  # do not erase the digit
                canon = eroded
    return canon


def centre_by_mass(img: np.ndarray) -> np.ndarray:
    """Shift so the intensity centre of mass is at pixel (size/2, size/2),
    as MNIST's centroids are (mean 14.0, 14.0 in a 28 frame)."""
    total = float(img.sum())
    if total <= 0:
        return img
    size = img.shape[0]
    idx = np.arange(size, dtype=np.float64)
    cy = float((img.sum(axis=1) * idx).sum() / total)
    cx = float((img.sum(axis=0) * idx).sum() / total)
    dy, dx = round(size / 2 - cy), round(size / 2 - cx)  # whole pixels keep edges sharp
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)


# ---------------------------------------------------------------- helpers


def crop_to_ink(img: np.ndarray, level: float = 0.05) -> np.ndarray | None:
    """The image cropped to its pixels above ``level``; None when there are none."""
    above = img > level
    ys, xs = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if ys.size == 0:
        return None
    return img[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]


def _selected(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """uint8 mask (0/1) of the pixels whose label is one of ``ids``: a comparison per label for
    a few (a digit is one to a few marks), else a lookup table (fancy indexing costs several
    comparisons per pixel; np.isin sorts)."""
    if not ids:
        return np.zeros(labels.shape, np.uint8)
    if len(ids) <= 4:
        sel = labels == ids[0]
        for i in ids[1:]:
            sel |= labels == i
        return sel.view(np.uint8)
    chosen = np.zeros(max(int(labels.max()), max(ids)) + 1, np.uint8)
    chosen[ids] = 1
    return chosen[labels]


def _components_with_stats(mask: np.ndarray):
    """cv2.connectedComponentsWithStats (8-connected) with Grana's algorithm: the same labels
    and stats (both number components in raster order) in less than half the time of the
    default algorithm's statistics pass here."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)


def _label_max(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per label, for the labelled pixels given (flat, label > 0); 0 for the others."""
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels, values)
    return peak


def _half(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape[:2]
    return cv2.resize(grey, (max(4, w // 2), max(4, h // 2)), interpolation=cv2.INTER_AREA)


def _small8(grey: np.ndarray) -> np.ndarray:
    """``grey`` (float32 [0, 1]) at 1/BG_SCALE, uint8."""
    h, w = grey.shape[:2]
    small = cv2.resize(grey, (max(4, w // BG_SCALE), max(4, h // BG_SCALE)), interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(small, alpha=255.0)  # rounds and saturates to uint8 in one pass


def _luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # 0.299 R + 0.587 G + 0.114 B


def _robust_sigma(values: np.ndarray) -> float:
    """Noise level from the median absolute deviation (ink is a minority,
    so it barely moves the median). Subsampled: the full image is not
    needed for a noise estimate."""
    v = values.ravel()
    if v.size > SIGMA_SAMPLES:
        # An odd step: a multiple of 8 would sample the same place of every JPEG block.
        v = v[:: -(-v.size // SIGMA_SAMPLES) | 1]
    return float(1.4826 * _median(np.abs(v - _median(v)))) + 1e-4


def _median8(img: np.ndarray) -> float:
    """np.median of a uint8 image, from its histogram (no sort)."""
    cum = np.cumsum(np.bincount(img.ravel(), minlength=256))
    n = int(cum[-1])
    lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))
    hi = int(np.searchsorted(cum, n // 2, side="right"))
    return (lo + hi) / 2


def _percentiles(values: np.ndarray, qs: tuple[float, ...], ordered: bool = False) -> list[float]:
    """np.percentile(values, qs) (linear interpolation) from one partition, without its overhead.
    ``ordered``: ``values`` is already sorted."""
    v = values.ravel()
    idx = [(v.size - 1) * q / 100 for q in qs]
    below = [int(np.floor(i)) for i in idx]
    kth = sorted({k for b in below for k in (b, min(b + 1, v.size - 1))})
    part = v if ordered else np.partition(v, kth)
    out = []
    for i, b in zip(idx, below):
        a, c = float(part[b]), float(part[min(b + 1, v.size - 1)])
        out.append(a + (c - a) * (i - b))
    return out


def _median(v: np.ndarray) -> float:
    """The upper median of a 1-D array (one partition; np.median's extra work is not needed here)."""
    k = v.size // 2
    return float(np.partition(v, k)[k])


def _ellipse(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _odd(x: float) -> int:
    return max(3, int(x) | 1)
