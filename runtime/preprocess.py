"""Turn a real photo of a handwritten digit into an MNIST-style model input.

MNIST was made by taking a clean bilevel scan of one digit, fitting it in a
20x20 box keeping its aspect ratio (anti-aliasing gives grey edges) and
centring it by its centre of mass in a 28x28 frame. A phone photo is far
from that: uneven light, shadows, paper texture, coloured ink, chalk on a
board, noise, blur and other marks. The steps here undo that:

1. ``to_working``: shrink (or enlarge) to a fixed working size so costs and
   kernel sizes do not depend on the camera.
2. ``estimate_background``: a large median filter per channel gives the
   paper/board colour under the local light. Median, not blur or closing,
   because it ignores thin strokes of *either* polarity and keeps the step
   edges of paper borders and shadows.
3. ``decide_polarity``: ink is the minority deviation from the background;
   whichever sign carries more strong deviation is the ink.
4. ``ink_map``: relative contrast to the background per channel (dividing
   by the background cancels the illumination), strongest channel kept so
   blue or red ink counts as much as black.
5. ``ink_mask``: hysteresis threshold between noise-based and Otsu levels.
6. ``find_components`` / ``select_digit``: drop specks, paper edges and
   shadow bands, keep the strongest mark and the fragments around it.
7. ``render_mnist``: crop the grey-level ink (not a binary mask), bring the
   stroke width into MNIST's range, fit in the 20x20 box, centre by mass.

Only numpy and OpenCV; every size comes from the model's metadata
(``size``), the 20/28 box ratio is the MNIST convention of the contract.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import NoDigitFound, RuntimeInputError
from .imageio import to_uint8

WORK_SIDE = 512  # long side of the working image, pixels
BG_SCALE = 4  # background is estimated at 1/BG_SCALE of the working size
BG_KERNEL_FRAC = 0.4  # median window, fraction of the short side (> 2x thickest stroke of a big digit)
RELATIVE_FLOOR = 0.15  # background level below which the contrast is no longer divided (dark boards)
MIN_CONTRAST = 0.06  # ink must differ from the background by at least this fraction
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

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    def merged(self, other: "Component") -> "Component":
        x, y = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        return Component(self.labels + other.labels, x, y, x1 - x, y1 - y, self.area + other.area,
                         self.mass + other.mass, self.touches_border or other.touches_border)


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


# ---------------------------------------------------------------- pipeline


def preprocess_digit(image: np.ndarray, size: int = 28) -> DigitCrop:
    """Find the one digit in ``image`` and return it MNIST-style.

    ``image``: any array ``imageio.to_uint8`` accepts. Raises
    ``NoDigitFound`` when there is no ink that could be a digit and
    ``RuntimeInputError`` for arrays that are not images.
    """
    image = to_uint8(image)
    passthrough = mnist_passthrough(image, size)
    if passthrough is not None:
        h, w = image.shape[:2]
        return DigitCrop(passthrough, (0, 0, w, h))
    analysis = analyse_ink(image)
    digit = select_digit(analysis)
    return DigitCrop(render_mnist(analysis, digit, size), analysis.to_input_box(digit))


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


def analyse_ink(image: np.ndarray) -> InkAnalysis:
    """Steps 1-6 up to the candidate marks, shared by digits and numbers."""
    work, scale = to_working(image)
    bg = estimate_background(work)
    grey, bg_grey = _luma(work), _luma(bg)
    polarity = decide_polarity(grey, bg_grey)
    ink, sigma = ink_map(work, bg, polarity)
    # Second pass: the first background estimate is pulled towards the ink
    # where strokes are thick and dense (a big bold digit); fill the ink with
    # that estimate and filter again for a cleaner background.
    first = ink > max(4 * sigma, MIN_CONTRAST)
    if first.mean() > 0.002:
        bg = estimate_background(work, exclude=first, previous=bg)
        ink, sigma = ink_map(work, bg, polarity)
    weak, strong = thresholds(ink, sigma)
    mask = hysteresis(ink, weak, strong)
    labels, components = find_components(mask, ink)
    return InkAnalysis(ink, labels, components, weak, scale, image.shape[:2], polarity)


def to_working(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Resize so the long side is WORK_SIDE; float32 [0, 1]."""
    h, w = image.shape[:2]
    scale = WORK_SIDE / max(h, w)
    # Very elongated inputs: keep at least 32 px on the short side.
    scale = max(scale, min(32 / min(h, w), 4 * WORK_SIDE / max(h, w)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    work = cv2.resize(image, size, interpolation=interp) if size != (w, h) else image
    scale = size[0] / w
    return work.astype(np.float32) / 255.0, scale


def estimate_background(work: np.ndarray, exclude: np.ndarray | None = None,
                        previous: np.ndarray | None = None) -> np.ndarray:
    """Paper/board colour under the local light, same shape as ``work``.

    Median filter at 1/BG_SCALE resolution with a window of BG_KERNEL_FRAC
    of the short side. ``exclude``: pixels known to be ink, replaced by
    ``previous`` before filtering so they do not bias the median.
    """
    h, w = work.shape[:2]
    small_size = (max(4, w // BG_SCALE), max(4, h // BG_SCALE))
    src = work
    if exclude is not None and previous is not None:
        grown = cv2.dilate(exclude.astype(np.uint8), _ellipse(5)).astype(bool)
        src = work.copy()
        src[grown] = previous[grown]
    small = cv2.resize(src, small_size, interpolation=cv2.INTER_AREA)
    small8 = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    k = int(BG_KERNEL_FRAC * min(small_size)) | 1
    k = max(3, k)
    med = cv2.medianBlur(small8, k)
    med = cv2.GaussianBlur(med, (0, 0), k / 6)  # smooth the median's blockiness
    return cv2.resize(med, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0


def decide_polarity(grey: np.ndarray, bg_grey: np.ndarray) -> str:
    """Dark ink on light paper, or light chalk/ink on a dark board.

    Noise is symmetric around the background, ink is not: compare the mass
    of strong deviations on each side. When that is inconclusive (very
    little ink), a light background means dark ink.
    """
    d = grey - bg_grey
    sigma = _robust_sigma(d)
    t = max(3 * sigma, 0.02)
    dark = float(np.clip(-d - t, 0, None).sum())
    light = float(np.clip(d - t, 0, None).sum())
    if dark > 1.5 * light:
        return "dark-ink"
    if light > 1.5 * dark:
        return "light-ink"
    return "dark-ink" if float(np.median(bg_grey)) >= 0.4 else "light-ink"


def ink_map(work: np.ndarray, bg: np.ndarray, polarity: str) -> tuple[np.ndarray, float]:
    """Ink strength (>= 0) and its noise level.

    Per channel, (pixel - background) / background, signed so ink is
    positive: dividing cancels the illumination (ink and paper are lit
    alike), so a shadowed stroke scores like a lit one. The strongest
    channel wins: blue ballpoint is dark in red and green only.
    """
    sign = -1.0 if polarity == "dark-ink" else 1.0
    rel = sign * (work - bg) / np.maximum(bg, RELATIVE_FLOOR)
    if rel.ndim == 3:
        rel = rel.max(axis=2)
    sigma = _robust_sigma(rel)
    return np.clip(rel - float(np.median(rel)), 0, None).astype(np.float32), sigma


def thresholds(ink: np.ndarray, sigma: float) -> tuple[float, float]:
    """(weak, strong) hysteresis levels.

    Strong: Otsu's split of the pixels above the noise (so it separates
    stroke cores from faint edges and texture), never below 5 sigma or
    MIN_CONTRAST. Weak: half of it, never below 3 sigma, so strokes grow
    into their faint, blurred or anti-aliased parts.
    """
    floor = max(5 * sigma, MIN_CONTRAST)
    tail = ink[ink > max(3 * sigma, MIN_CONTRAST / 2)]
    strong = floor
    if tail.size >= 16:
        top = float(np.percentile(tail, 99.5))
        if top > floor:
            t8 = np.clip(tail / top * 255, 0, 255).astype(np.uint8)
            otsu, _ = cv2.threshold(t8.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            strong = max(floor, float(otsu) / 255 * top)
    weak = max(0.5 * strong, 3 * sigma, MIN_CONTRAST / 2)
    return weak, strong


def hysteresis(ink: np.ndarray, weak: float, strong: float) -> np.ndarray:
    """Pixels above ``weak`` that are connected to a pixel above ``strong``."""
    weak_mask = (ink > weak).astype(np.uint8)
    n, labels = cv2.connectedComponents(weak_mask, connectivity=8)
    if n <= 1:
        return weak_mask
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels.ravel(), ink.ravel())
    keep = peak > strong
    keep[0] = False
    return keep[labels].astype(np.uint8)


def find_components(mask: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, list[Component]]:
    """Connected marks, without specks, paper edges and shadow bands."""
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n)
    min_area = max(6, int(2e-4 * h * w))
    comps = []
    for i in range(1, n):
        x, y, cw, ch, area = (int(v) for v in stats[i])
        if area < min_area:
            continue  # specks, dust, sensor noise
        touches = x == 0 or y == 0 or x + cw == w or y + ch == h
        if touches and (cw >= 0.5 * w or ch >= 0.5 * h):
            continue  # paper edge, table, shadow band: runs along the frame
        if area > 0.6 * cw * ch and area > 0.05 * h * w:
            continue  # a filled region, not a pen stroke (a dark object, a hand)
        comps.append(Component([i], x, y, cw, ch, area, float(mass[i]), touches))
    return labels, comps


def select_digit(analysis: InkAnalysis) -> Component:
    """The strongest plausible mark plus the fragments that belong to it."""
    h, w = analysis.ink.shape
    short = min(h, w)
    cands = [c for c in analysis.components if max(c.w, c.h) >= 0.04 * short]
    if not cands:
        raise NoDigitFound("no digit found (no ink)")
    # Marks cut by the frame edge are more likely a neighbouring object.
    cands.sort(key=lambda c: c.mass * (0.5 if c.touches_border else 1.0), reverse=True)
    digit = cands[0]
    digit = absorb_fragments(digit, [c for c in analysis.components if c is not digit])
    if max(digit.w, digit.h) < 0.05 * short or max(digit.w, digit.h) < 8:
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


def soft_ink(analysis: InkAnalysis, comp: Component, pad: int = 3) -> np.ndarray:
    """Grey-level ink of the component, cropped, 1.0 on the stroke cores.

    Keeps the anti-aliased edges (a hard mask would make jagged, too-thin
    strokes after shrinking) while zeroing every other mark in the crop.
    """
    H, W = analysis.ink.shape
    x0, y0 = max(0, comp.x - pad), max(0, comp.y - pad)
    x1, y1 = min(W, comp.x1 + pad), min(H, comp.y1 + pad)
    ink = analysis.ink[y0:y1, x0:x1]
    sel = np.isin(analysis.labels[y0:y1, x0:x1], comp.labels)
    core = ink[sel]
    lo = 0.5 * analysis.weak
    hi = float(np.percentile(core, 75)) if core.size else 1.0
    hi = max(hi, lo + 1e-3)
    soft = np.clip((ink - lo) / (hi - lo), 0, 1)
    keep = cv2.dilate(sel.astype(np.uint8), _ellipse(5))  # the stroke and its blurred rim
    return (soft * keep).astype(np.float32)


def fit_and_centre(soft: np.ndarray, size: int = 28) -> np.ndarray:
    """MNIST normalisation: stroke width, 20x20 box, centre of mass."""
    box = max(1, round(size * 20 / 28))
    soft = _crop_to_ink(soft)
    if soft is None:
        raise NoDigitFound("no digit found (empty crop)")
    h, w = soft.shape
    scale = CANONICAL_SIDE / max(h, w)
    canon = cv2.resize(soft, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canon = normalise_stroke(canon, box)
    canon = _crop_to_ink(canon)
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


def normalise_stroke(canon: np.ndarray, box: int) -> np.ndarray:
    """Thicken hair-thin strokes (ballpoint in a big photo) or thin marker
    strokes so that, once the digit is shrunk into the box, the stroke is as
    wide as MNIST's (about 2.3 px in 20 px)."""
    binary = (canon > 0.5).astype(np.uint8)
    area = int(binary.sum())
    if area < 4:
        return canon
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    if perimeter <= 0:
        return canon
    px_per_out = max(canon.shape) / box  # canonical pixels per output pixel
    width_out = 2.0 * area / perimeter / px_per_out
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


def _crop_to_ink(img: np.ndarray, level: float = 0.05) -> np.ndarray | None:
    ys, xs = np.nonzero(img > level)
    if ys.size == 0:
        return None
    return img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    return 0.114 * b + 0.587 * g + 0.299 * r


def _robust_sigma(values: np.ndarray) -> float:
    """Noise level from the median absolute deviation (ink is a minority,
    so it barely moves the median). Subsampled: the full image is not
    needed for a noise estimate."""
    v = values.ravel()
    if v.size > 200_000:
        v = v[:: v.size // 100_000]
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med))) + 1e-4


def _ellipse(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def check_size(size: int) -> int:
    if size < 8:
        raise RuntimeInputError(f"model input size {size} too small")
    return size
