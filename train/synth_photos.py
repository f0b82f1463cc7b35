"""Deterministic camera-like photos of handwritten digits and numbers.

Built from the MNIST digits it is given, with cv2 and numpy (no torch): the
benchmarks give it **test** digits only, train.photo_crops and
train.photo_rows **training** digits only. It draws
paper or chalkboard, ink colour applied through the digit's mask, pen
widths from hair-thin ballpoint to marker, rotation, uneven light,
shadows, paper edges, specks, blur, sensor noise and JPEG artefacts, at
frame sizes from tiny crops to 4000x3000 photos.

Every sample is drawn from its own generator seeded by (seed, index), so a
sample does not change when the set grows or the order of generation does.

    samples = generate_set(images, labels, n_digits=200, n_numbers=50, seed=0)
    for s in samples: s.image (BGR uint8), s.label ("7" or "4096"), s.kind
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Sample:
    image: np.ndarray  # BGR uint8
    label: str  # "7", or "40961" for a number
    kind: str  # "digit" or "number"
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------ ink shapes


def _zhang_suen(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a binary mask (Zhang-Suen thinning, vectorised)."""
    img = np.pad((mask > 0).astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            n = [np.roll(np.roll(p, dy, 0), dx, 1) for dy, dx in
                 ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))]
            # neighbours P2..P9 clockwise from north: roll by +1 brings the north pixel down
            p2, p3, p4, p5, p6, p7, p8, p9 = n
            b = sum(n)
            seq = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (p == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if remove.any():
                img = img.copy()
                img[remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def digit_alpha(rng: np.random.Generator, digit: np.ndarray, height: int, pen: dict) -> np.ndarray:
    """Ink coverage [0, 1] of one MNIST digit drawn ``height`` px tall."""
    ys, xs = np.nonzero(digit > 30)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
    ch, cw = crop.shape
    scale = height / ch
    width = max(2, round(cw * scale))
    pad = max(4, int(0.1 * height))
    if pen["mode"] == "pen":
        # Re-draw the skeleton with the chosen pen width: real pens are
        # thinner than MNIST's strokes, relative to the digit's height.
        up = 4
        big = cv2.resize(crop, (cw * up, ch * up), interpolation=cv2.INTER_CUBIC)
        skel = _zhang_suen(big > 0.45)
        dist = cv2.distanceTransform((1 - skel).astype(np.uint8), cv2.DIST_L2, 5)
        dist = np.pad(dist, up, constant_values=dist.max() + up)
        d = cv2.resize(dist, (width + 2 * round(scale), height + 2 * round(scale)), interpolation=cv2.INTER_LINEAR)
        d = d * (scale / up)
        alpha = np.clip(pen["width"] * height / 2 - d + 0.5, 0, 1)
    else:
        big = cv2.resize(np.pad(crop, 1), (width + 2 * round(scale), height + 2 * round(scale)),
                         interpolation=cv2.INTER_CUBIC)
        soft = max(0.05, min(0.3, 1.5 / scale))
        alpha = np.clip((big - 0.45) / soft + 0.5, 0, 1)
        if pen["mode"] == "marker":
            r = max(1, round(pen["grow"] * height))
            alpha = cv2.dilate(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return np.pad(alpha, pad).astype(np.float32)


def random_pen(rng: np.random.Generator) -> dict:
    u = rng.random()
    if u < 0.4:
        return {"mode": "orig"}
    if u < 0.85:
        return {"mode": "pen", "width": float(rng.uniform(0.03, 0.09))}
    return {"mode": "marker", "grow": float(rng.uniform(0.015, 0.04))}


def rotate(alpha: np.ndarray, angle: float, flags: int = cv2.INTER_LINEAR) -> np.ndarray:
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(alpha, m, (nw, nh), flags=flags, borderValue=0)


def trim(alpha: np.ndarray) -> np.ndarray:
    return alpha[ink_window(alpha)]


def ink_window(alpha: np.ndarray) -> tuple[slice, slice]:
    ys, xs = np.nonzero(alpha > 0.02)
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


# ------------------------------------------------------------ scene


def _low_freq(rng, h, w, cells, channels=1):
    """Smooth random field in about [-1, 1]."""
    g = rng.standard_normal((max(2, cells), max(2, round(cells * w / h)), channels)).astype(np.float32)
    f = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return f.reshape(h, w, channels)


def frame_size(rng: np.random.Generator, kind: str, max_side: int = 4000, least: int = 0) -> tuple[int, int]:
    """(width, height): crops, phone-preview, and full photos; a few
    4000x3000. ``max_side`` caps the long side (quick test sets); ``least``:
    a smaller frame is enlarged to this long side (a distant view), within ``max_side``."""
    w, h = _frame_size(rng, kind, max_side)
    k = max(1.0, min(least, max_side) / max(w, h))
    return round(w * k), round(h * k)


def _frame_size(rng: np.random.Generator, kind: str, max_side: int) -> tuple[int, int]:
    u = rng.random()
    if max_side >= 4000 and u < 0.03:
        return (4000, 3000) if rng.random() < 0.5 else (3000, 4000)
    if u < 0.18:
        long = int(rng.uniform(40, 200))
    elif u < 0.65:
        long = int(rng.uniform(200, 1000))
    else:
        long = int(rng.uniform(1000, 2000))
    long = min(long, max_side)
    if kind == "number":
        aspect = float(rng.choice([4 / 3, 16 / 9, 2.0, 3.0]))
        return long, max(16, round(long / aspect))
    aspect = float(rng.choice([4 / 3, 3 / 4, 1.0, 16 / 9, 9 / 16]))
    return (long, max(16, round(long / aspect))) if aspect >= 1 else (max(16, round(long * aspect)), long)


def background(rng, h, w, chalk: bool):
    """Reflectance of the surface [h, w, 3] (BGR in 0..1) and the ink colour."""
    if chalk:
        base = np.array([rng.uniform(0.12, 0.25), rng.uniform(0.2, 0.35), rng.uniform(0.08, 0.18)]) \
            if rng.random() < 0.6 else np.full(3, rng.uniform(0.06, 0.16))
        surf = np.ones((h, w, 3), np.float32) * base.astype(np.float32)
        smudge = np.clip(_low_freq(rng, h, w, int(rng.integers(2, 6))), 0, None) * rng.uniform(0.0, 0.12)
        surf = surf + smudge
        ink = np.full(3, rng.uniform(0.75, 0.95)) * np.array([rng.uniform(0.9, 1.0), 1.0, 1.0])
    else:
        tint = rng.choice(4)
        base = [np.array([0.95, 0.95, 0.95]), np.array([0.80, 0.92, 0.96]),  # white, cream
                np.array([0.85, 0.85, 0.85]), np.array([0.97, 0.93, 0.90])][tint]  # grey, bluish
        base = base * rng.uniform(0.85, 1.05)
        surf = np.ones((h, w, 3), np.float32) * base.astype(np.float32)
        surf *= 1 + 0.03 * _low_freq(rng, h, w, int(rng.integers(3, 12)))
        if rng.random() < 0.6:
            ink = np.array([rng.uniform(0.45, 0.8), rng.uniform(0.15, 0.4), rng.uniform(0.02, 0.2)])  # blue pen
        else:
            ink = np.full(3, rng.uniform(0.05, 0.25)) + rng.uniform(-0.03, 0.03, 3)  # black pen/pencil
    return np.clip(surf, 0, 1), np.clip(ink, 0, 1).astype(np.float32)


def paper_edge(rng, surf, box):
    """Part of the frame beyond a straight line shows the table; the line
    stays clear of the writing (nobody writes over the paper's edge)."""
    h, w = surf.shape[:2]
    x0, y0, bw, bh = box
    room = [y0 / h, (h - y0 - bh) / h, x0 / w, (w - x0 - bw) / w]  # free space per side
    side = int(np.argmax(np.array(room) * rng.uniform(0.5, 1.0, 4)))
    if room[side] < 0.06:
        return surf, np.zeros((h, w), bool)
    depth = rng.uniform(0.03, min(0.14, room[side] - 0.03))
    tilt = rng.uniform(-0.02, 0.02)
    yy, xx = np.ogrid[0:h, 0:w]
    if side == 0:
        outside = yy < depth * h + tilt * (xx - w / 2)
    elif side == 1:
        outside = yy > (1 - depth) * h + tilt * (xx - w / 2)
    elif side == 2:
        outside = xx < depth * w + tilt * (yy - h / 2)
    else:
        outside = xx > (1 - depth) * w + tilt * (yy - h / 2)
    table = np.array(rng.choice([[0.15, 0.25, 0.35], [0.1, 0.1, 0.1], [0.35, 0.4, 0.45], [0.5, 0.5, 0.5]]), np.float32)
    table = table * (1 + 0.1 * _low_freq(rng, h, w, 20)[..., :1])
    surf = np.where(outside[..., None], table, surf)
    return surf, outside


def lighting(rng, h, w):
    """Illumination [h, w, 1]: gradient, vignetting and soft/hard shadows.

    Drawn at most 480 px wide then enlarged: light varies smoothly, and
    this keeps 4000x3000 frames cheap.
    """
    f = min(1.0, 480 / max(h, w))
    sh, sw = max(2, round(h * f)), max(2, round(w * f))
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    t = ((xx / sw - 0.5) * np.cos(ang) + (yy / sh - 0.5) * np.sin(ang))
    light = rng.uniform(0.7, 1.0) + rng.uniform(0.0, 0.5) * t
    r2 = ((xx / sw - 0.5) ** 2 + (yy / sh - 0.5) ** 2)
    light = light * (1 - rng.uniform(0.0, 0.4) * r2)
    if rng.random() < 0.45:
        # Shadow of a hand/phone: a band or a blob, soft or fairly sharp.
        mask = np.zeros((sh, sw), np.float32)
        if rng.random() < 0.5:
            a = rng.uniform(0, np.pi)
            off = rng.uniform(-0.4, 0.4) * max(sh, sw)
            width = rng.uniform(0.1, 0.5) * max(sh, sw)
            dist = (xx - sw / 2) * np.cos(a) + (yy - sh / 2) * np.sin(a) - off
            mask[np.abs(dist) < width / 2] = 1
        else:
            c = (int(rng.uniform(0, sw)), int(rng.uniform(0, sh)))
            axes = (int(rng.uniform(0.2, 0.7) * sw), int(rng.uniform(0.2, 0.7) * sh))
            cv2.ellipse(mask, c, axes, rng.uniform(0, 180), 0, 360, 1, -1)
        soft = rng.uniform(0.005, 0.08) * max(sh, sw)
        mask = cv2.GaussianBlur(mask, (0, 0), soft)
        light = light * (1 - rng.uniform(0.25, 0.55) * mask)
    light = cv2.resize(np.clip(light, 0.15, 1.3).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return light[..., None]


def specks(rng, h, w, alpha_img):
    """Dust, pencil dots and crumbs in the ink layer."""
    n = int(rng.integers(0, 25))
    short = min(h, w)
    for _ in range(n):
        r = rng.uniform(0.4, max(0.6, 0.004 * short))
        if rng.random() < 0.1:
            r *= 2.5
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(alpha_img, c, max(1, int(round(r))), float(rng.uniform(0.3, 0.9)), -1, lineType=cv2.LINE_AA)


def camera(rng, img: np.ndarray) -> tuple[np.ndarray, dict]:
    """Blur, sensor noise and JPEG round trip on a float BGR image in 0..1."""
    h, w = img.shape[:2]
    # Blur in pixels grows with the resolution; small images are mostly
    # downscaled crops, sharper per pixel.
    blur = rng.uniform(0, 1.6) * float(np.clip(min(h, w) / 400, 0.4, None))
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise = rng.uniform(0.004, 0.035)
    img = img + rng.standard_normal(img.shape).astype(np.float32) * noise
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(30, 96))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out, {"blur": round(float(blur), 2), "noise": round(float(noise), 3), "jpeg_q": q}


def ruled_lines(rng, surf, box):
    """Light blue lines of ruled paper under the writing: one near the digits' foot, the others
    a line height apart, slightly tilted, printed over the whole sheet."""
    h, w = surf.shape[:2]
    x0, y0, bw, bh = box
    spacing = bh * rng.uniform(1.0, 1.6)
    foot = y0 + bh * rng.uniform(0.85, 1.05)
    tilt = rng.uniform(-0.015, 0.015)
    width = max(1.0, bh * rng.uniform(0.015, 0.04))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = np.mod(yy - foot - tilt * (xx - w / 2) + spacing / 2, spacing) - spacing / 2
    line = np.clip(width / 2 + 0.5 - np.abs(phase), 0, 1)[..., None]
    colour = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.55, 0.8), rng.uniform(0.4, 0.7)], np.float32)  # BGR
    return surf * (1 - line * (1 - colour))


def compose(rng, alpha: np.ndarray, kind: str, max_side: int, ruled: bool = False,
            small: bool = False) -> tuple[np.ndarray, dict]:
    """Place an ink mask (already drawn at a nominal height) in a photo; ``ruled``: on ruled paper;
    ``small``: a few percent of a frame SMALL_FRAME pixels long or more."""
    w, h = frame_size(rng, kind, max_side, SMALL_FRAME if small else 0)
    lo, hi = SMALL if small else (0.2, 0.8)
    if max(w, h) < 100:
        lo = max(lo, 0.5)  # a tiny image is a crop around the digit, not a distant view
    frac = rng.uniform(lo, hi)
    ah, aw = alpha.shape
    scale = frac * h / ah
    if aw * scale > 0.92 * w:
        scale = 0.92 * w / aw
    nw, nh = max(1, round(aw * scale)), max(1, round(ah * scale))
    alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x0 = int(rng.uniform(0.02 * w, max(0.02 * w + 1, w - nw - 0.02 * w)))
    y0 = int(rng.uniform(0.02 * h, max(0.02 * h + 1, h - nh - 0.02 * h)))
    layer = np.zeros((h, w), np.float32)
    layer[y0:y0 + nh, x0:x0 + nw] = alpha[: h - y0, : w - x0]
    chalk = rng.random() < 0.15 and not ruled
    surf, ink = background(rng, h, w, chalk)
    if ruled:
        surf = ruled_lines(rng, surf, (x0, y0, nw, nh))
    meta = {"size": [w, h], "frac": round(float(nh / h), 3), "chalk": bool(chalk), "box": [x0, y0, nw, nh],
            **({"ruled": True} if ruled else {}), **({"small": True} if small else {})}
    if chalk:
        # Chalk leaves grainy, partly covered strokes.
        grain = np.clip(0.55 + 0.45 * rng.random((h, w)).astype(np.float32), 0, 1)
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7)
        layer = layer * grain
    else:
        layer = layer * rng.uniform(0.75, 1.0)
    specks(rng, h, w, layer)
    if not chalk and rng.random() < 0.3:
        surf, outside = paper_edge(rng, surf, (x0, y0, nw, nh))
        layer[outside] = 0
        meta["paper_edge"] = True
    refl = surf * (1 - layer[..., None]) + ink * layer[..., None]
    light = lighting(rng, h, w)
    img, cam = camera(rng, refl * light)
    meta.update(cam)
    return img, meta


def make_digit(rng: np.random.Generator, digit: np.ndarray, label: int, max_side: int = 4000,
               small: bool = False) -> Sample:
    pen = random_pen(rng)
    alpha = trim(rotate(digit_alpha(rng, digit, 120, pen), rng.uniform(-15, 15)))
    img, meta = compose(rng, alpha, "digit", max_side, small=small)
    meta["pen"] = pen["mode"]
    return Sample(img, str(int(label)), "digit", meta)


TOUCHING = 0.15  # share of neighbouring digits that touch


def make_number(rng: np.random.Generator, digits: list[np.ndarray], labels: list[int], max_side: int = 4000,
                overlap: tuple[float, float] | None = None, ruled: bool = False, small: bool = False) -> Sample:
    """3-6 digits in a row, varied spacing, some slightly touching.

    Spacing is measured between the inks, row by row (slanted digits'
    boxes overlap long before their strokes do): a gap of g means the
    closest strokes are g apart; a touching pair overlaps by at most 3% of
    the digit height where the strokes meet. ``overlap=(lo, hi)``: instead,
    every neighbour's strokes reach into the previous digit's by lo..hi of
    the two digits' mean width (a hurried writer's touching digits)."""
    pen = random_pen(rng)
    H = 120
    parts = [trim(digit_alpha(rng, d, int(H * rng.uniform(0.9, 1.1)), pen)) for d in digits]
    if overlap is None:
        gaps = [float(rng.uniform(-0.03, 0.0)) if rng.random() < TOUCHING else float(rng.uniform(0.05, 0.45))
                for _ in parts[1:]]
    else:  # in pixels of the drawn row, then as a share of H like the gaps above
        gaps = [-float(rng.uniform(*overlap)) * (a.shape[1] + b.shape[1]) / 2 / H for a, b in zip(parts, parts[1:])]
    height = max(p.shape[0] for p in parts) + int(0.2 * H) + 20
    width = sum(p.shape[1] for p in parts) + int(0.5 * H * len(parts)) + 20
    row = np.zeros((height, width), np.float32)
    owner = np.zeros((height, width), np.uint8)  # 1 + index of the digit whose ink is there
    x = 10
    for i, p in enumerate(parts):
        ph, pw = p.shape
        y = 10 + int(rng.uniform(0, 0.15) * H) + (height - 20 - int(0.2 * H) - ph) // 2
        if i > 0:
            # Kept inside the canvas (a rare odd digit pair would otherwise fall off its left edge).
            x = min(max(0, _touching_x(row, p, y) + int(round(gaps[i - 1] * H))), width - pw)
        row[y:y + ph, x:x + pw] = np.maximum(row[y:y + ph, x:x + pw], p)
        owner[y:y + ph, x:x + pw][p > 0.3] = i + 1
    angle = rng.uniform(-15, 15) * (0.5 if len(parts) > 4 else 1.0)
    rotated = rotate(row, angle)
    window = ink_window(rotated)
    img, meta = compose(rng, rotated[window], "number", max_side, ruled=ruled, small=small)
    meta["pen"] = pen["mode"]
    meta["gaps"] = [round(g, 3) for g in gaps]
    meta["digit_boxes"] = digit_boxes(rotate(owner, angle, cv2.INTER_NEAREST)[window], meta["box"], len(parts))
    return Sample(img, "".join(str(int(d)) for d in labels), "number", meta)


def digit_boxes(owner: np.ndarray, box: list[int], count: int) -> list[list[int]]:
    """[x, y, w, h] of each digit's ink in the photo, from the owner map of
    the row as placed at ``box`` (compose's [x0, y0, w, h]); [] for a digit
    scaled away."""
    x0, y0, w, h = box
    placed = cv2.resize(owner, (w, h), interpolation=cv2.INTER_NEAREST)
    boxes = []
    for i in range(1, count + 1):
        ys, xs = np.nonzero(placed == i)
        boxes.append([int(x0 + xs.min()), int(y0 + ys.min()),
                      int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                     if xs.size else [])
    return boxes


def _touching_x(row: np.ndarray, part: np.ndarray, y: int) -> int:
    """Leftmost x at which ``part`` (placed at row y) does not overlap the
    ink already in ``row`` on any line."""
    ph = part.shape[0]
    band = row[y:y + ph] > 0.3
    ink = part > 0.3
    x = 0
    for r in range(ph):
        cols = np.nonzero(band[r])[0]
        mine = np.nonzero(ink[r])[0]
        if cols.size and mine.size:
            x = max(x, int(cols[-1]) + 1 - int(mine[0]))
    if x == 0:  # no shared rows: fall back to the boxes
        x = int(np.nonzero(row.any(axis=0))[0][-1]) + 1
    return x


OVERLAPPING = (0.10, 0.20)  # the overlapping numbers: strokes reach this far into the neighbour
# The small sets: the digit (a number's canvas) spans this share of the frame's height, in frames SMALL_FRAME
# pixels long or more (a page photographed whole, a meter from across the room).
SMALL = (0.05, 0.12)
SMALL_FRAME = 800


def generate_set(images: np.ndarray, labels: np.ndarray, n_digits: int, n_numbers: int, seed: int = 0,
                 max_side: int = 4000, n_overlapping: int = 0, n_ruled: int = 0, n_small: int = 0,
                 n_tight: int = 0) -> list[Sample]:
    """``n_digits`` single digits, ``n_numbers`` numbers, ``n_overlapping`` numbers whose
    neighbours' strokes overlap by OVERLAPPING of their mean width, ``n_ruled`` numbers on
    ruled paper, then ``n_small`` single digits and ``n_small`` numbers SMALL in their frames, then
    ``n_tight`` single digits and ``n_tight`` numbers cut out tightly (``tight_crop``), from the
    given (MNIST test) images; sample ``i`` of each kind depends only on (seed, kind, i).
    ``max_side`` < 4000 leaves out the 4000x3000 photos and caps sizes."""
    out = []
    for i in range(n_digits):
        rng = np.random.default_rng([seed, 0, i])
        k = int(rng.integers(len(images)))
        sample = make_digit(rng, images[k], labels[k], max_side)
        sample.meta["mnist_index"] = k
        out.append(sample)
    for i in range(n_numbers):
        rng = np.random.default_rng([seed, 1, i])
        n = int(rng.integers(3, 7))
        ks = rng.integers(len(images), size=n)
        sample = make_number(rng, [images[k] for k in ks], [labels[k] for k in ks], max_side)
        sample.meta["mnist_index"] = [int(k) for k in ks]
        out.append(sample)
    for stream, count, options in ((2, n_overlapping, {"overlap": OVERLAPPING}), (3, n_ruled, {"ruled": True})):
        for i in range(count):
            rng = np.random.default_rng([seed, stream, i])
            ks = rng.integers(len(images), size=int(rng.integers(3, 7)))
            sample = make_number(rng, [images[k] for k in ks], [labels[k] for k in ks], max_side, **options)
            sample.meta["mnist_index"] = [int(k) for k in ks]
            sample.meta["overlapping"] = "overlap" in options
            out.append(sample)
    for i in range(n_small):
        rng = np.random.default_rng([seed, 4, i])
        k = int(rng.integers(len(images)))
        out.append(make_digit(rng, images[k], labels[k], max_side, small=True))
    for i in range(n_small):
        rng = np.random.default_rng([seed, 5, i])
        ks = rng.integers(len(images), size=int(rng.integers(3, 7)))
        out.append(make_number(rng, [images[k] for k in ks], [labels[k] for k in ks], max_side, small=True))
    for i in range(n_tight):
        rng = np.random.default_rng([seed, 6, i])
        k = int(rng.integers(len(images)))
        out.append(tight_crop(rng, make_digit(rng, images[k], labels[k], max_side)))
    for i in range(n_tight):
        rng = np.random.default_rng([seed, 7, i])
        ks = rng.integers(len(images), size=int(rng.integers(3, 7)))
        out.append(tight_crop(rng, make_number(rng, [images[k] for k in ks], [labels[k] for k in ks], max_side)))
    return out


TIGHT_MARGIN = 0.1  # tight crops keep 0 to this share of the writing's height as margin on each side


def tight_crop(rng: np.random.Generator, sample: Sample) -> Sample:
    """``sample`` cut to its writing's box with margins of 0-TIGHT_MARGIN of its height on each side, as a
    user crops a photo around the writing."""
    x, y, w, h = sample.meta["box"]
    H, W = sample.image.shape[:2]
    top, bottom, left, right = (int(m) for m in rng.uniform(0, TIGHT_MARGIN, 4) * h)
    x0, y0, x1, y1 = max(0, x - left), max(0, y - top), min(W, x + w + right), min(H, y + h + bottom)
    meta = {**sample.meta, "size": [x1 - x0, y1 - y0], "box": [x - x0, y - y0, w, h], "tight": True}
    return Sample(np.ascontiguousarray(sample.image[y0:y1, x0:x1]), sample.label, sample.kind, meta)


def main() -> None:  # write a few samples to look at
    import argparse
    import os

    from train.idx import DATA_ENV, load_split, resolve_data_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/synth")
    p.add_argument("--digits", type=int, default=20)
    p.add_argument("--numbers", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help=f"MNIST IDX files (default: ${DATA_ENV}, then ./data/MNIST/raw)")
    a = p.parse_args()
    images, labels = load_split(resolve_data_dir(a.data_dir), "test")
    os.makedirs(a.out, exist_ok=True)
    for i, s in enumerate(generate_set(images, labels, a.digits, a.numbers, a.seed)):
        cv2.imwrite(os.path.join(a.out, f"{i:03d}_{s.kind}_{s.label}.jpg"), s.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        print(i, s.kind, s.label, s.meta)


if __name__ == "__main__":
    main()
