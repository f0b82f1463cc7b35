"""Whatever array or bytes come in, preprocessing either works or raises the
runtime's typed error: never another exception, never a malformed result."""
from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import RuntimeInputError, decode_image, preprocess_digit
from runtime.rows import find_row_images

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def arrays(draw):
    """Random image-like arrays: any size from empty to a few hundred
    pixels, 2-D or with 1-5 channels, any dtype, any values (NaN and inf
    included for floats), noisy or structured."""
    h = draw(st.integers(0, 300))
    w = draw(st.integers(0, 300))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "constant", "strokes", "extreme"]))
    if kind == "noise":
        data = rng.random(shape) * draw(st.sampled_from([1.0, 255.0, 65535.0, 1e9]))
    elif kind == "constant":
        data = np.full(shape, draw(st.floats(-1e6, 1e6)))
    elif kind == "strokes":
        data = np.full(shape, 200.0)
        if h > 4 and w > 4:
            canvas = np.ascontiguousarray(data.reshape(h, w, -1)[:, :, 0])
            for _ in range(draw(st.integers(1, 6))):
                p1 = (int(rng.integers(w)), int(rng.integers(h)))
                p2 = (int(rng.integers(w)), int(rng.integers(h)))
                cv2.line(canvas, p1, p2, 20.0, int(rng.integers(1, 8)))
            data = canvas if channels is None else np.repeat(canvas[:, :, None], channels, axis=2)
    else:
        data = rng.choice([0.0, 1.0, -1.0, 255.0, np.nan, np.inf, -np.inf, 1e30], size=shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.nan_to_num(data, nan=0, posinf=info.max, neginf=info.min), info.min, info.max)
    with np.errstate(all="ignore"):
        return data.astype(dtype)


@FUZZ
@given(arrays())
def test_preprocess_digit_never_raises_anything_else(image):
    try:
        crop = preprocess_digit(image)
    except RuntimeInputError:
        return
    assert crop.pixels.shape == (28, 28) and crop.pixels.dtype == np.float32
    assert np.isfinite(crop.pixels).all() and crop.pixels.min() >= 0 and crop.pixels.max() <= 1
    x, y, w, h = crop.box
    assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= image.shape[1] and y + h <= image.shape[0]


@FUZZ
@given(arrays())
def test_number_rows_never_raise_anything_else(image):
    from runtime.imageio import to_uint8

    try:
        rows = find_row_images(to_uint8(image), 32)
    except RuntimeInputError:
        return
    assert rows
    for row in rows:
        assert row.pixels.shape[0] == 32 and row.pixels.shape[1] >= 1 and np.isfinite(row.pixels).all()
        assert row.pixels.min() >= 0 and row.pixels.max() <= 1


_PNG = cv2.imencode(".png", np.full((40, 50, 3), 128, np.uint8))[1].tobytes()
_JPEG = cv2.imencode(".jpg", np.full((40, 50, 3), 128, np.uint8))[1].tobytes()


@FUZZ
@given(st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.sampled_from([_PNG, _JPEG]), st.integers(0, 400), st.binary(min_size=1, max_size=50)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]),  # corrupted real files
    st.tuples(st.sampled_from([_PNG, _JPEG]), st.integers(0, 600)).map(lambda t: t[0][: t[1]]),  # truncated
))
def test_decode_never_raises_anything_else(data):
    try:
        image = decode_image(data)
    except RuntimeInputError:
        return
    assert image.dtype == np.uint8 and image.ndim in (2, 3)
