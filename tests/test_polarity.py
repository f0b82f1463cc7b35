"""runtime.preprocess.decide_polarity: dark ink on paper or light chalk on a board, and when to doubt it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.preprocess import decide_polarity


def page(background: float, ink: float, size=(240, 320), thickness=6, gradient=0.0, seed=0) -> np.ndarray:
    """A grey [0, 1] frame: a '7'-like stroke of ``ink`` on ``background``, light falling off left to right."""
    h, w = size
    img = np.full((h, w), background, np.float32)
    cv2.line(img, (120, 70), (200, 70), ink, thickness)
    cv2.line(img, (200, 70), (150, 180), ink, thickness)
    light = 1.0 - gradient * np.linspace(0, 1, w, dtype=np.float32)[None, :]
    noise = np.random.default_rng(seed).normal(0, 0.01, (h, w)).astype(np.float32)
    return np.clip(img * light + noise, 0, 1)


@pytest.mark.parametrize("gradient", [0.0, 0.5])
def test_dark_ink_on_paper(gradient):
    assert decide_polarity(page(0.85, 0.15, gradient=gradient)) == ("dark-ink", None)


@pytest.mark.parametrize("gradient", [0.0, 0.5])
def test_chalk_on_a_board(gradient):
    assert decide_polarity(page(0.2, 0.85, gradient=gradient)) == ("light-ink", None)


def test_a_shadow_over_half_the_page_is_not_ink():
    """Light falls on ink and paper alike: a shadow is a bounded factor, ink a large one."""
    img = page(0.85, 0.15)
    img[:, :140] *= 0.6
    polarity, _ = decide_polarity(img)
    assert polarity == "dark-ink"


def test_blank_frames_fall_back_on_the_background_brightness():
    """No deviation on either side: bright frames are paper (dark ink), dark ones boards."""
    assert decide_polarity(np.full((200, 200), 0.8, np.float32)) == ("dark-ink", None)
    assert decide_polarity(np.full((200, 200), 0.15, np.float32)) == ("light-ink", None)


def test_the_doubt_is_always_the_other_polarity():
    """Whatever the frame, a second reading offered is the opposite one, never the same twice."""
    frames = [page(0.85, 0.15), page(0.2, 0.85), page(0.5, 0.45, thickness=60), page(0.55, 0.2, thickness=90)]
    for frame in frames:
        polarity, doubt = decide_polarity(frame)
        assert polarity in ("dark-ink", "light-ink")
        assert doubt in (None, {"dark-ink": "light-ink", "light-ink": "dark-ink"}[polarity])
