"""What the runtime's number reader shows the model besides clean digits.

To read a row of handwritten digits the runtime cuts marks that hold
touching digits into pieces and asks the model about every piece. Two
things a model trained on clean single digits does badly there:

- It is sure of itself on anything: two touching digits squeezed into
  28x28, or half of a wide 0, get ceiling confidence. *Outliers* (pairs and
  triples of touching digits, the left or right part of a digit) are
  trained toward a flat distribution (outlier exposure, Hendrycks et al.,
  2019), so that its confidence tells a good cut from a bad one.
- A cut between touching, slanted digits is never clean: the piece keeps a
  hook of its neighbour's stroke or loses a bit of its own. *Cut pieces*
  (a digit cut out of a touching pair by a near-vertical cut) are trained
  with the digit's label.

Both are made from the training split and framed by the runtime's own
function (runtime.preprocess.fit_and_centre), as the runtime frames what it cuts.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from runtime.preprocess import crop_to_ink, fit_and_centre

OUTLIER_KINDS = (("pair", 0.6), ("triple", 0.2), ("part", 0.2))
TOUCHING = (-0.08, 0.06)  # how close touching digits of an outlier come (see _place)


def make_outliers(images: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` outliers (uint8 [count, 28, 28]) from ``images`` (uint8
    [N, 28, 28], single digits), deterministic from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    kinds = torch.multinomial(torch.tensor([p for _, p in OUTLIER_KINDS]), count, replacement=True, generator=gen)
    makers = {"pair": partial(_touching, count=2), "triple": partial(_touching, count=3), "part": _part}
    return _to_uint8([fit(makers[OUTLIER_KINDS[k][0]](images, gen)) for k in kinds.tolist()])


def make_cut_pieces(images: torch.Tensor, labels: torch.Tensor, count: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` digits cut out of touching pairs, with their labels."""
    gen = torch.Generator().manual_seed(seed)
    pieces, piece_labels = [], []
    while len(pieces) < count:
        i, j = torch.randint(len(images), (2,), generator=gen).tolist()
        piece = _cut_piece(_digit(images[i], gen), _digit(images[j], gen), gen)
        if piece is not None:
            left, right = piece
            keep_left = _coin(gen)
            pieces.append(fit(left if keep_left else right))
            piece_labels.append(int(labels[i if keep_left else j]))
    return _to_uint8(pieces), torch.tensor(piece_labels, dtype=torch.int64)


# ------------------------------------------------------------ the makers


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def _coin(gen: torch.Generator) -> bool:
    return torch.rand((), generator=gen).item() < 0.5


def _digit(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A digit cropped to its ink as float in [0, 1], about 20 pixels high
    (MNIST's scale, so its strokes are MNIST's width) and +-15%."""
    img = torch.from_numpy(crop_to_ink(image.numpy().astype(np.float32) / 255))
    h, w = img.shape
    s = 20 * _uniform(gen, 0.85, 1.15) / h
    return F.interpolate(img[None, None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                         antialias=True, align_corners=False)[0, 0]


def _random_digit(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return _digit(images[torch.randint(len(images), (), generator=gen)], gen)


def _place(parts: list[torch.Tensor], gen: torch.Generator, overlap: tuple[float, float]) -> list[torch.Tensor]:
    """Put digits left to right on one canvas, each one's strokes as close to
    the previous ones as ``overlap`` (in digit heights: > 0 overlaps, < 0
    leaves a gap) on the row where they come closest, at slightly different
    heights. Returns one canvas per digit, all the same size."""
    height = max(p.shape[0] for p in parts)
    pad = round(0.15 * height)
    size = (height + 2 * pad, sum(p.shape[1] for p in parts) + 2 * height)
    layers, ink = [], torch.zeros(size)
    for i, p in enumerate(parts):
        h, w = p.shape
        y = pad + (height - h) // 2 + round(_uniform(gen, -0.1, 0.1) * height)
        x = 0
        if i:
            rows = ink[y:y + h] > 0.3
            mine = p > 0.3
            both = rows.any(1) & mine.any(1)
            if both.any():  # columns: right edge of the ink so far, left edge of this digit, row by row
                right = torch.where(rows, torch.arange(size[1]), -1).amax(1)[both]
                left = torch.where(mine, torch.arange(w), w).amin(1)[both]
                x = int((right - left).max()) + 1
            else:
                x = int(torch.nonzero(ink.any(0)).max()) + 1
            x = max(0, x - round(_uniform(gen, *overlap) * height))
        layer = torch.zeros(size)
        layer[y:y + h, x:x + w] = p[:, :size[1] - x]
        layers.append(layer)
        ink = torch.maximum(ink, layer)
    return layers


def _touching(images, gen, count: int):
    """``count`` random digits in a row, touching or nearly."""
    return torch.stack(_place([_random_digit(images, gen) for _ in range(count)], gen, TOUCHING)).amax(0)


def _part(images, gen):
    """The left or right 35-65% of a wide digit (a cut through it), no
    narrower than 0.45 of its height: a stroke alone is a 1."""
    while True:
        img = _random_digit(images, gen)
        h, w = img.shape
        if w >= 0.6 * h:
            break
    cut = round(_uniform(gen, 0.35, 0.65) * w)
    part = img[:, :cut] if _coin(gen) else img[:, cut:]
    return part if part.shape[1] >= 0.45 * h else img[:, :max(cut, w - cut)]


def _cut_piece(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator):
    """Place b touching a (strokes overlapping by up to 5% of the height),
    cut them apart with a vertical cut near where they meet, and return the
    two pieces; None when either piece kept under 80% of its own digit's ink
    or took more than 15% of its neighbour's (no one could tell its label)."""
    la, lb = _place([a, b], gen, (0.0, 0.05))
    cols_a = torch.nonzero(la.sum(0) > 0).flatten()
    cols_b = torch.nonzero(lb.sum(0) > 0).flatten()
    lo, hi = sorted((int(cols_b.min()), int(cols_a.max())))
    cut = round(_uniform(gen, lo - 2, hi + 2))
    left, right = torch.zeros_like(la), torch.zeros_like(la)
    left[:, :cut], right[:, cut:] = 1.0, 1.0
    mass_a, mass_b = float(la.sum()), float(lb.sum())
    if (la * left).sum() < 0.8 * mass_a or (lb * right).sum() < 0.8 * mass_b:
        return None
    if (lb * left).sum() > 0.15 * mass_a or (la * right).sum() > 0.15 * mass_b:
        return None
    ink = torch.maximum(la, lb)
    return ink * left, ink * right


# ------------------------------------------------------------ MNIST framing


def fit(canvas: torch.Tensor) -> torch.Tensor:
    """MNIST's framing of a float ink image in [0, 1], the runtime's own (runtime.preprocess.fit_and_centre:
    crop to the ink, stroke width brought to MNIST's, longer side to 20 pixels, centre of mass at the
    frame's centre, peak 1), so that the model trains on pieces framed exactly as it will be shown them."""
    return torch.from_numpy(fit_and_centre(canvas.numpy().astype(np.float32)))


def _to_uint8(images: list[torch.Tensor]) -> torch.Tensor:
    return (torch.stack(images) * 255).round().to(torch.uint8)
