"""Digit shapes MNIST's writers seldom used, drawn onto training digits: a 7 crossed through its stem and a 1
with a long flag and sometimes a foot, as much of continental Europe and Latin America writes them.

MNIST's writers were American: its 7s are rarely crossed and its 1s are mostly a bare stroke, so a model trained
on it alone reads a crossed 7 as a 9 or a 4 (docs/EXPERIMENTS.md, 2026-12-04). The strokes are drawn in the
digit's own stroke width, anti-aliased, inside its 28x28 frame.
"""
from __future__ import annotations

import cv2
import numpy as np

INK = 128          # pixels above this are ink when measuring a digit
SUBPIXEL = 4       # cv2.line's fractional bits: endpoints to 1/16 pixel
RESTYLED = (1, 7)
STYLES_HELP = "share of the training 1s and 7s redrawn as crossed 7s and flagged 1s (train/styles.py)"
MAX_WIDTH = 3.0    # px: a thick digit's added strokes stay strokes, not blobs


def restyle(images: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``images`` (uint8 [N, 28, 28]) with about ``share`` of its 1s and 7s redrawn in those styles (a copy)."""
    if share <= 0:
        return images
    rng = np.random.default_rng(seed)
    out = images.copy()
    chosen = np.nonzero(np.isin(labels, RESTYLED) & (rng.random(len(labels)) < share))[0]
    for i in chosen:
        (cross_seven if labels[i] == 7 else flag_one)(out[i], rng)
    return out


def stroke_width(img: np.ndarray) -> float:
    """Median length of the horizontal runs of ink: about the pen's width for the strokes that run up and down."""
    ink = np.pad(img > INK, ((0, 0), (1, 1))).astype(np.int8)
    edges = np.diff(ink, axis=1)
    runs = np.nonzero(edges == -1)[1] - np.nonzero(edges == 1)[1]
    return min(float(np.median(runs)), MAX_WIDTH) if len(runs) else 2.0


def _line(img: np.ndarray, p: tuple[float, float], q: tuple[float, float], width: float) -> None:
    scale = 1 << SUBPIXEL
    cv2.line(img, (round(p[0] * scale), round(p[1] * scale)), (round(q[0] * scale), round(q[1] * scale)), 255,
             max(1, round(width)), cv2.LINE_AA, SUBPIXEL)


def cross_seven(img: np.ndarray, rng: np.random.Generator) -> None:
    """A bar across the 7's stem, a little below the middle of its height."""
    ys, xs = np.nonzero(img > INK)
    if len(ys) == 0:
        return
    top, bottom = ys.min(), ys.max()
    y = top + rng.uniform(0.45, 0.65) * (bottom - top)
    row = xs[ys == round(y)]
    if len(row) == 0:
        return
    x = float(np.median(row))
    length = rng.uniform(0.35, 0.7) * (xs.max() - xs.min() + 1)
    left = rng.uniform(0.35, 0.65) * length
    tilt = rng.uniform(-0.12, 0.08) * length  # a bar rising to the right, as a pen tends to draw it
    _line(img, (x - left, y - tilt * left / length), (x + length - left, y + tilt * (1 - left / length)),
          stroke_width(img) * rng.uniform(0.6, 0.9))


def flag_one(img: np.ndarray, rng: np.random.Generator) -> None:
    """A flag down and to the left from the 1's top; a foot under it one time in three."""
    ys, xs = np.nonzero(img > INK)
    if len(ys) == 0:
        return
    top, bottom = ys.min(), ys.max()
    height = bottom - top + 1
    width = stroke_width(img) * rng.uniform(0.6, 0.9)
    tx = float(xs[ys == top].mean())
    # Short and steep: a long flag near the horizontal is a 7's bar, and a 1 drawn so is a 7 to a reader too.
    length = rng.uniform(0.15, 0.35) * height
    angle = np.radians(rng.uniform(30, 65))  # below the horizontal
    _line(img, (tx, top), (tx - length * np.cos(angle), top + length * np.sin(angle)), width)
    if rng.random() < 1 / 3:
        bx = float(xs[ys == bottom].mean())
        half = rng.uniform(0.12, 0.25) * height
        _line(img, (bx - half, bottom), (bx + half, bottom), width)
