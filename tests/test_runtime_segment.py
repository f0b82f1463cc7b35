"""The number reader's cut proposals, on drawn masks (no model involved)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime import segment

STROKE = 8


def mask(*draw) -> np.ndarray:
    canvas = np.zeros((120, 150), np.uint8)
    for f in draw:
        f(canvas)
    return canvas > 0


def slanted_one(x_top: int, x_bottom: int):
    return lambda c: cv2.line(c, (x_top, 8), (x_bottom, 112), 1, STROKE)


def ring(cx: int, cy: int = 60, rx: int = 30, ry: int = 52):
    return lambda c: cv2.ellipse(c, (cx, cy), (rx, ry), 0, 0, 360, 1, STROKE)


def test_a_one_written_over_a_zero_is_proposed_as_its_own_piece():
    # The 1 leans into the 0: every top-to-bottom cut would cross ink twice.
    sel = mask(slanted_one(30, 50), ring(80))
    found = {side: (one, rest) for side, one, rest in segment._one_strokes(sel, STROKE)}
    assert "left" in found
    one, rest = found["left"]
    line = mask(slanted_one(30, 50)) & sel
    assert np.count_nonzero(one & line) > 0.8 * np.count_nonzero(one)  # the piece is the stroke...
    assert np.count_nonzero(one & line) > 0.7 * np.count_nonzero(line)  # ...and most of it
    assert segment._rows(rest) > 0.8 * segment._rows(sel)  # the 0 is left whole but for the crossing
    assert not (one & rest).any()


@pytest.mark.parametrize("shape", [
    [ring(70, 35, 28, 28), lambda c: cv2.line(c, (97, 35), (90, 112), 1, STROKE)],  # a 9: loop and stem
    [lambda c: cv2.line(c, (40, 10), (110, 10), 1, STROKE), lambda c: cv2.line(c, (110, 10), (60, 112), 1, STROKE)],  # 7
    [ring(75)],  # a 0
], ids=["nine", "seven", "zero"])
def test_a_digit_with_a_straight_stroke_is_not_split_into_a_one_and_a_fragment(shape):
    assert segment._one_strokes(mask(*shape), STROKE) == []
