"""Synthetic rows of handwritten digits for the row reader, made on the training device a batch at a time.

A row is 1 to 8 MNIST digits, each drawn by its own affine map (size,
width, slant, turn, height on the line) with ``grid_sample``: every digit of
the batch in one call, then set in its row with one ``scatter_reduce``.
Spacing is measured between strokes, pixel row by pixel row, as a writer
sees it: a clear gap, strokes that just touch, strokes that reach into
the previous digit by up to a quarter of the digits' width, and whole rows
written hurriedly (every pair overlapping) or spaced out (every gap wide).
Training rows may also bend a share of their digits' strokes (``bend``: elastic distortion).
Then what the runtime's ink map of a photo looks like: strokes thinned or thickened, blur,
noise, faint contrast, blocky compression, low resolution, the leftovers of a ruled line and
of the row above or below, specks; and some rows with no digit at all
(a wavy scribble, a line, noise), whose target is empty.

Rows are light ink on a dark background in [0, 1], ROW_HEIGHT pixels high,
as the runtime feeds the reader (docs/FORMATS.md, "Row reader").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import RowReader

ROW_HEIGHT = 32
MAX_DIGITS = 8
DIGIT_COUNTS = (0.05, 0.09, 0.13, 0.15, 0.16, 0.15, 0.14, 0.13)  # P(1 digit), ..., P(8 digits)
NO_DIGIT = 0.05  # share of rows that hold no digit
CLEAN = 0.15  # share of rows left without degradations
INK_HEIGHT = (15.0, 28.0)  # tallest digit of a row, pixels (the runtime aims at 24 of 32)
DIGIT_SPAN = 64  # columns of the canvas each digit is drawn on: the widest slanted, stretched digit fits
OVERLAPPING = 0.3  # share of neighbours whose strokes reach into the previous digit ...
STROKE_OVERLAP = 0.25  # ... by up to this share of the two digits' mean width
TOUCHING = 0.15  # share of neighbours whose strokes just touch (within a pixel or two)
GAP = (0.04, 0.6)  # the others leave a gap between strokes of this share of the digit height
# A hurried writer's row: every neighbour's strokes reach into the previous digit's by this share of their
# mean width (spacing is a habit of the writer, so whole rows overlap, not only a pair here and there).
HURRIED = 0.15  # share of rows
HURRIED_OVERLAP = (0.05, 0.3)
# A careful writer's row (or digits written in a form's boxes): every gap this share of the digit height. Half of
# the gaps between MNIST's own 28-px cells exceed GAP's 0.6, and a reader that never saw such gaps drops digits there.
SPACED = 0.2  # share of rows
SPACED_GAP = (0.45, 1.3)
# Other writers: a digit's strokes bent by a smooth random displacement field (elastic distortion, Simard et al.
# 2003), which affine maps cannot draw: loops opened or closed, strokes bowed, tops and tails longer or shorter.
BEND_PIXELS = 2.5  # largest displacement along each axis, source pixels
BEND_GRID = (4, 8)  # the field's control points over a digit's canvas (ROW_HEIGHT x DIGIT_SPAN)


@dataclass
class RowBatch:
    images: torch.Tensor  # float [B, 1, ROW_HEIGHT, W], light on dark, in [0, 1]
    widths: torch.Tensor  # int64 [B]: columns of each row before the batch's padding
    targets: torch.Tensor  # int64 [sum of lengths]: the digits of every row, concatenated
    lengths: torch.Tensor  # int64 [B]: digits per row (0 for a row with no digit)

    def texts(self) -> list[str]:
        out, i = [], 0
        for n in self.lengths.tolist():
            out.append("".join(str(d) for d in self.targets[i:i + n].tolist()))
            i += n
        return out


class RowMaker:
    """Makes batches of rows from a pool of digits (uint8 [N, 28, 28] and labels), on their device.

    Random draws come from a CPU generator, so a batch depends only on the
    generator's state, whatever the device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, bend: float = 0.0):
        self.device = images.device
        self.bend = bend  # share of digits bent (training rows only: measured rows stay as they were)
        self.digits = images.float().div(255).unsqueeze(1)  # [N, 1, 28, 28]
        self.labels = labels.long()
        ink = self.digits[:, 0] > 0.2
        cols, rows = ink.any(1), ink.any(2)
        index = torch.arange(28, device=self.device)
        # Ink box of every digit, in source pixels: [left, top, right, bottom] (inclusive).
        self.box = torch.stack([torch.where(cols, index, 28).amin(1), torch.where(rows, index, 28).amin(1),
                                torch.where(cols, index, -1).amax(1), torch.where(rows, index, -1).amax(1)],
                               1).float().cpu()

    def batch(self, size: int, gen: torch.Generator, effects: bool = True, count: int | None = None) -> RowBatch:
        """``size`` rows; ``effects=False`` leaves out every degradation and the rows with no digit;
        ``count`` fixes the number of digits of every row."""
        if count is None:
            lengths = torch.multinomial(torch.tensor(DIGIT_COUNTS), size, replacement=True, generator=gen) + 1
            if effects:
                lengths[torch.rand(size, generator=gen) < NO_DIGIT] = 0
        else:
            lengths = torch.full((size,), count, dtype=torch.int64)
        picks = torch.randint(len(self.labels), (int(lengths.sum()),), generator=gen)
        images, widths = self._place(picks, lengths, gen)
        if effects:
            # Some rows stay as drawn: a clean scan must read as surely as a poor photo.
            clean = (torch.rand(size, generator=gen) < CLEAN).to(self.device).view(-1, 1, 1, 1)
            images = torch.where(clean, images, degrade(images, widths, lengths, gen))
        return RowBatch(images, widths.to(self.device), self.labels[picks.to(self.device)], lengths.to(self.device))

    def _place(self, picks: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator):
        """Each digit drawn by its own affine map on a canvas of its own (one grid_sample for the
        batch), then set beside the previous one at a gap measured between their strokes."""
        n, rows = len(picks), len(lengths)
        row_of = torch.repeat_interleave(torch.arange(rows), lengths)
        first = torch.cumsum(lengths, 0) - lengths  # index of each row's first digit
        u = lambda lo, hi, k=n: lo + (hi - lo) * torch.rand(k, generator=gen)  # noqa: E731
        box = self.box[picks]
        src_w, src_h = box[:, 2] - box[:, 0] + 1, box[:, 3] - box[:, 1] + 1
        centre = torch.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], 1)

        ink_h = u(*INK_HEIGHT, rows)[row_of] * u(0.8, 1.0)
        scale = ink_h / src_h
        stretch = (u(0.8, 1.25, rows)[row_of] * u(0.92, 1.08))  # writers' widths
        slant = u(-0.3, 0.3, rows)[row_of] + u(-0.08, 0.08)  # x shift per pixel upwards
        row_turn = torch.deg2rad(u(-4, 4, rows))  # what deskewing leaves of a row's tilt
        turn = row_turn[row_of] + torch.deg2rad(u(-6, 6))
        # Where the row's tilt puts each digit's centre: from the digits' widths laid end to end.
        width = scale * (src_w * stretch + slant.abs() * src_h)
        ends = torch.cumsum(width, 0)
        along = ends - width / 2 - (ends - width)[first[row_of]]
        middle = (along.new_zeros(rows).index_add_(0, row_of, along) / lengths.clamp(min=1))[row_of]
        cy = ROW_HEIGHT / 2 + u(-2, 2, rows)[row_of] + torch.tan(row_turn)[row_of] * (along - middle) \
            + u(-0.07, 0.07) * ink_h
        cx = DIGIT_SPAN / 2 + u(-0.5, 0.5)
        theta = _inverse_maps(scale, stretch, slant, turn, centre, torch.stack([cx, cy], 1), DIGIT_SPAN, ROW_HEIGHT)
        if n:
            grid = F.affine_grid(theta.to(self.device), [n, 1, ROW_HEIGHT, DIGIT_SPAN], align_corners=False)
            if self.bend:
                grid = grid + _bend_fields(n, self.bend, gen).to(self.device)
            placed = F.grid_sample(self.digits[picks.to(self.device)], grid, align_corners=False)[:, 0]
        else:
            placed = torch.zeros(0, ROW_HEIGHT, DIGIT_SPAN, device=self.device)

        # Each pixel row's leftmost and rightmost ink of every digit (on its canvas).
        ink = (placed > 0.3).cpu()
        cols = torch.arange(DIGIT_SPAN)
        lefts = torch.where(ink, cols, DIGIT_SPAN).amin(2).float()  # [n, H]; DIGIT_SPAN where no ink
        rights = torch.where(ink, cols, -1).amax(2).float()
        first_col = lefts.amin(1).clamp(max=DIGIT_SPAN / 2)
        last_col = rights.amax(1).clamp(min=DIGIT_SPAN / 2)
        # A digit just touches the previous one when shifted by the largest right-minus-left over the
        # pixel rows they share (by their boxes when they share none).
        prev_rights, prev_last = torch.roll(rights, 1, 0), torch.roll(last_col, 1)
        shared = (lefts < DIGIT_SPAN) & (prev_rights >= 0)
        contact = torch.where(shared, prev_rights - lefts, -float(DIGIT_SPAN)).amax(1) + 1
        contact = torch.where(shared.any(1), contact, prev_last - first_col + 1)
        mean_width = (last_col - first_col + 1 + torch.roll(last_col - first_col + 1, 1)) / 2
        kind = torch.rand(n, generator=gen)
        gap = torch.where(kind < OVERLAPPING, -u(0, STROKE_OVERLAP) * mean_width,
                          torch.where(kind < OVERLAPPING + TOUCHING, u(-1, 1.5),
                                      u(*GAP) * ink_h))
        hurried = (torch.rand(rows, generator=gen) < HURRIED)[row_of]
        gap = torch.where(hurried, -u(*HURRIED_OVERLAP) * mean_width, gap)
        spaced = (torch.rand(rows, generator=gen) < SPACED)[row_of] & ~hurried
        gap = torch.where(spaced, u(*SPACED_GAP) * ink_h, gap)
        is_first = torch.zeros(n, dtype=torch.bool)
        is_first[first[lengths > 0]] = True
        step = torch.where(is_first, u(2, 12, rows)[row_of] - first_col, contact + gap)
        total = torch.cumsum(step, 0)  # running sums restarting at each row's first digit
        left = (total - (total - step)[first[row_of]]).round().long()  # canvas column 0 in the row
        right_edge = torch.zeros(rows).scatter_reduce_(0, row_of, (left + last_col + 1).float(), "amax")
        widths = torch.where(lengths > 0, right_edge + u(2, 12, rows), u(40, 200, rows)).ceil().long()
        widths = torch.maximum(widths, torch.full_like(widths, 8))
        span = int(widths.max())
        span += -span % RowReader.WIDTH_MULTIPLE

        # Paste every canvas at its place: one scatter over the batch (columns past the row dropped).
        # Canvas columns are offset by DIGIT_SPAN so a first digit whose ink starts late fits too.
        padded = span + 3 * DIGIT_SPAN
        canvas = torch.zeros(rows * ROW_HEIGHT * padded, device=self.device)
        if n:
            x = (left[:, None, None] + DIGIT_SPAN + cols.view(1, 1, -1)).clamp(0, padded - 1)
            y = torch.arange(ROW_HEIGHT).view(1, -1, 1)
            index = (row_of.view(-1, 1, 1) * ROW_HEIGHT + y) * padded + x
            canvas.scatter_reduce_(0, index.reshape(-1).to(self.device), placed.reshape(-1), "amax")
        return canvas.view(rows, 1, ROW_HEIGHT, padded)[..., DIGIT_SPAN:DIGIT_SPAN + span].contiguous(), widths


def _bend_fields(n: int, share: float, gen: torch.Generator) -> torch.Tensor:
    """Smooth random displacements [n, ROW_HEIGHT, DIGIT_SPAN, 2] in affine_grid's normalised source units."""
    pixels = BEND_PIXELS * torch.rand(n, generator=gen) * (torch.rand(n, generator=gen) < share)
    coarse = (torch.rand(n, 2, *BEND_GRID, generator=gen) * 2 - 1) * pixels.view(-1, 1, 1, 1)
    fine = F.interpolate(coarse, size=(ROW_HEIGHT, DIGIT_SPAN), mode="bilinear", align_corners=True)
    return fine.permute(0, 2, 3, 1) / 14  # 14 source pixels to a normalised unit


def _inverse_maps(scale, stretch, slant, turn, src_centre, dst_centre, width: int, height: int) -> torch.Tensor:
    """affine_grid's theta [n, 2, 3]: normalised row coordinates to normalised source (28x28) coordinates.

    The forward map of a digit is dst = C + scale * R(turn) * Shear(slant) * Stretch * (src - S),
    in pixel coordinates; theta is its inverse between the two normalised frames."""
    cos, sin = torch.cos(turn), torch.sin(turn)
    # inverse = Stretch^-1 Shear^-1 R^-1 / scale
    r_inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    shear_inv = torch.zeros_like(r_inv)
    shear_inv[:, 0, 0] = 1
    shear_inv[:, 0, 1] = -slant
    shear_inv[:, 1, 1] = 1
    stretch_inv = torch.zeros_like(r_inv)
    stretch_inv[:, 0, 0] = 1 / stretch
    stretch_inv[:, 1, 1] = 1
    m = stretch_inv @ shear_inv @ r_inv / scale[:, None, None]
    # Row pixel = D * normalised + e (align_corners=False), source normalised = source pixel / 14 + 1/28 - 1.
    d = torch.tensor([[width / 2, 0.0], [0.0, height / 2]])
    e = torch.tensor([(width - 1) / 2, (height - 1) / 2])
    linear = m @ d / 14
    shift = (src_centre + (m @ (e - dst_centre)[:, :, None])[:, :, 0]) / 14 + (1 / 28 - 1)
    return torch.cat([linear, shift[:, :, None]], 2)


# ------------------------------------------------------------ what a photo does to a row


def degrade(x: torch.Tensor, widths: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The runtime's ink map of a photographed row, roughly: see the module docstring."""
    b, _, h, w = x.shape
    dev = x.device
    u = lambda lo, hi, *shape: (lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen)).to(dev)  # noqa: E731
    chance = lambda p: (torch.rand(b, generator=gen) < p).to(dev).view(b, 1, 1, 1)  # noqa: E731

    x = torch.where(lengths.to(dev).view(b, 1, 1, 1) == 0, scribbles(x, gen, u, chance), x)
    # Stroke width: a marker, or a fine pen (thinner and fainter once the row is shrunk).
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    x = torch.where(chance(0.2), thick, torch.where(chance(0.15), 0.5 * (x + thin), x))
    x = neighbour_rows(x, gen, chance)
    # A ruled line, faint or dark, at any height (it often runs along the digits' foot or through them).
    cols = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w)
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, 1, h, 1)
    line_y = u(0, h - 1).view(b, 1, 1, 1) + u(-0.03, 0.03).view(b, 1, 1, 1) * (cols - w / 2)
    line = u(0.15, 0.7).view(b, 1, 1, 1) * torch.exp(-((ys - line_y) ** 2) / (2 * u(0.3, 1.0).view(b, 1, 1, 1) ** 2))
    x = torch.where(chance(0.25), torch.maximum(x, line), x)
    # Specks.
    dots = (torch.rand(b, 1, h, w, generator=gen).to(dev) < 0.004) * u(0.3, 1.0, b, 1, h, w)
    x = torch.where(chance(0.3), torch.maximum(x, F.max_pool2d(dots, 2, 1, 1)[..., :h, :w]), x)
    # A small photo: the row seen at a half or a third of the reader's resolution, then scaled up.
    x = torch.where(chance(0.15), coarse(x, 2), torch.where(chance(0.1), coarse(x, 3), x))
    # Contrast: the strokes' level after the runtime's normalisation, and residual background.
    x = x * u(0.45, 1.0).view(b, 1, 1, 1) + u(0, 0.12).view(b, 1, 1, 1) * chance(0.3)
    x = blur(x, gen)
    blocky = F.interpolate(F.avg_pool2d(x, 2, ceil_mode=True), scale_factor=2, mode="nearest")[..., :h, :w]
    x = torch.where(chance(0.15), 0.5 * (x + blocky), x)
    x = x + torch.randn(b, 1, h, w, generator=gen).to(dev) * u(0, 0.1).view(b, 1, 1, 1)
    x = x.clamp(0, 1)
    return x * (cols < widths.to(dev).view(b, 1, 1, 1))  # the batch's padding stays background


def coarse(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x`` at 1/factor of its resolution, scaled back up; each row's brightest ink kept as bright
    (the runtime normalises a row's ink level after scaling it)."""
    h, w = x.shape[2:]
    y = F.interpolate(F.avg_pool2d(x, factor, ceil_mode=True), size=(h, w), mode="bilinear")
    peak = lambda t: t.amax((2, 3), keepdim=True)  # noqa: E731
    return (y * peak(x) / peak(y).clamp(min=1e-3)).clamp(0, 1)


def scribbles(x: torch.Tensor, gen: torch.Generator, u, chance) -> torch.Tensor:
    """A wavy stroke or nothing, for the rows that hold no digit."""
    b, _, h, w = x.shape
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, 1, h, 1)
    v = lambda lo, hi: u(lo, hi).view(b, 1, 1, 1)  # noqa: E731
    centre = v(8, h - 8) + v(2, 10) * torch.sin(cols * v(0.05, 0.4) + v(0, 6.3))
    stroke = torch.exp(-((ys - centre) ** 2) / (2 * v(0.6, 1.5) ** 2))
    start, length = v(0, 0.5) * w, v(0.2, 1.0) * w
    stroke = stroke * ((cols >= start) & (cols < start + length))
    return torch.where(chance(0.6), stroke, torch.zeros_like(x))


def neighbour_rows(x: torch.Tensor, gen: torch.Generator, chance) -> torch.Tensor:
    """The feet of the row above or the tops of the row below, cut by the row's crop."""
    b, _, h, w = x.shape
    other = torch.roll(x, 1, 0)
    k = int(torch.randint(3, 10, (), generator=gen))
    above = torch.zeros_like(x)
    above[:, :, :k] = other[:, :, h - k:]
    below = torch.zeros_like(x)
    below[:, :, h - k:] = other[:, :, :k]
    x = torch.where(chance(0.12), torch.maximum(x, above), x)
    return torch.where(chance(0.12), torch.maximum(x, below), x)


def blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each row blurred by one of a few Gaussian widths (or not at all)."""
    b = x.shape[0]
    choice = torch.randint(0, 4, (b,), generator=gen).to(x.device).view(b, 1, 1, 1)
    out = x
    for i, sigma in enumerate((0.6, 0.9, 1.3), start=1):
        radius = math.ceil(2.5 * sigma)
        k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device) ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        blurred = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, radius)), k.view(1, 1, -1, 1),
                           padding=(radius, 0))
        out = torch.where(choice == i, blurred, out)
    return out
