"""Robust image reading: bytes or arrays in, 8-bit grey or BGR arrays out.

Everything the rest of the runtime sees has passed through ``to_uint8``:
dtype uint8, shape [H, W] (grey) or [H, W, 3] (BGR), at least
``MIN_SIDE`` pixels on each side. Bad inputs raise ``RuntimeInputError``
with a message that says what is wrong, never a cv2 traceback.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import RuntimeInputError

# Extensions picked up when walking a directory (explicitly named files are
# always tried, whatever their name).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
MIN_SIDE = 8  # below this there is no room for a recognisable digit
MAX_PIXELS = 150_000_000  # above a 108 MP phone sensor: refuse instead of eating gigabytes
MAX_FILE_BYTES = 256 * 1024 * 1024
# JPEGs whose long side exceeds this are decoded at 1/2, 1/4 or 1/8 scale by
# libjpeg itself (far faster and smaller than decoding then shrinking); the
# preprocessing works at about 512 px anyway.
JPEG_REDUCE_TARGET = 1000


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into uint8 grey [H, W] or BGR [H, W, 3]."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise RuntimeInputError(f"{path}: is a directory")
        if size > MAX_FILE_BYTES:
            raise RuntimeInputError(f"{path}: file too large ({size / 2**20:.0f} MiB, limit {MAX_FILE_BYTES // 2**20} MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise RuntimeInputError(f"{path}: no such file") from None
    except PermissionError:
        raise RuntimeInputError(f"{path}: permission denied") from None
    except OSError as e:
        raise RuntimeInputError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return decode_image(data)
    except RuntimeInputError as e:
        raise RuntimeInputError(f"{path}: {e}") from None


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, TIFF, WebP, PNM)."""
    if len(data) == 0:
        raise RuntimeInputError("empty file")
    dims = sniff_dimensions(data)
    if dims is not None:
        w, h = dims
        if w <= 0 or h <= 0:
            raise RuntimeInputError(f"image has zero size ({w}x{h})")
        if w * h > MAX_PIXELS:
            raise RuntimeInputError(f"image too large ({w}x{h} pixels, limit {MAX_PIXELS // 1_000_000} MP)")
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if is_jpeg and not _jpeg_complete(data):
        # libjpeg "decodes" a truncated file by padding it with grey: a
        # silently wrong image. Refuse it instead.
        raise RuntimeInputError("truncated or corrupt JPEG (no end-of-image marker)")
    if is_jpeg:
        # JPEG carries neither alpha nor 16-bit data, so IMREAD_COLOR loses
        # nothing, and unlike IMREAD_UNCHANGED it applies the EXIF
        # orientation that phones rely on for portrait photos.
        flags = cv2.IMREAD_COLOR
        if dims is not None:
            for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if max(dims) // factor >= JPEG_REDUCE_TARGET:
                    flags = reduced
                    break
    else:
        flags = cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:
        raise RuntimeInputError(f"cannot decode image ({_cv2_reason(e)})") from None
    if image is None:
        raise RuntimeInputError("not a readable image (unknown format, or corrupt/truncated data)")
    return to_uint8(image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Bring any array that could hold an image to uint8 grey or BGR.

    Accepts [H, W], [H, W, 1|2|3|4] (grey, grey+alpha, BGR, BGRA), of
    any integer, float or bool dtype. Alpha is composited onto a plain
    background so transparent areas read as paper.
    """
    if not isinstance(image, np.ndarray):
        raise RuntimeInputError(f"expected an image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise RuntimeInputError(f"unsupported image shape {image.shape} (expected HxW or HxWx1/2/3/4)")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise RuntimeInputError(f"image has zero size ({w}x{h})")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise RuntimeInputError(f"image too small ({w}x{h}, need at least {MIN_SIDE}x{MIN_SIDE})")
    if h * w > MAX_PIXELS:
        raise RuntimeInputError(f"image too large ({w}x{h} pixels, limit {MAX_PIXELS // 1_000_000} MP)")
    has_alpha = image.ndim == 3 and image.shape[2] in (2, 4)
    if image.dtype != np.uint8 or has_alpha:
        unit = _scale_to_unit(image)  # float32 in [0, 1]
        if has_alpha:
            unit = _composite_alpha(unit)
        image = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 3 and _channels_equal(image):
        image = image[:, :, 0]  # colour container, grey content: one channel is enough
    return np.ascontiguousarray(image)


def _channels_equal(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]))


def _scale_to_unit(image: np.ndarray) -> np.ndarray:
    """Map the array's values to float32 [0, 1] according to its dtype."""
    kind = image.dtype.kind
    if kind == "b":
        return image.astype(np.float32)
    if kind == "u" or kind == "i":
        info = np.iinfo(image.dtype)
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        if kind == "i":
            # Signed data has no agreed white level; use the values' own range.
            return _stretch(image.astype(np.float64))
        values = image.astype(np.float32)
        hi = float(values.max())
        # 10/12-bit sensor data is often stored in 16-bit containers and would
        # collapse to a handful of grey levels after dividing by 65535; the
        # preprocessing only cares about relative contrast, so stretch it.
        scale = info.max if hi >= info.max / 8 else max(hi, 1.0)
        return values / scale
    if kind == "f":
        values = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(values.min()), float(values.max())
        if lo >= 0.0 and hi <= 1.0:
            return values.astype(np.float32)  # the usual float convention
        if lo >= 0.0 and hi <= 255.0:
            return (values / 255.0).astype(np.float32)
        return _stretch(values)
    raise RuntimeInputError(f"unsupported pixel type {image.dtype}")


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return np.zeros(values.shape, np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _composite_alpha(image: np.ndarray) -> np.ndarray:
    """Flatten grey+alpha or BGRA onto a uniform background.

    White is the usual choice (a transparent PNG of dark strokes), but light
    strokes on a transparent background would vanish on white, so the
    background is black when the opaque content is mostly light.
    """
    colour, alpha = image[:, :, :-1], image[:, :, -1:]
    opaque = alpha[:, :, 0] > 0.5
    background = 1.0
    if opaque.any() and float(colour[opaque].mean()) > 0.6:
        background = 0.0
    out = colour * alpha + background * (1.0 - alpha)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _cv2_reason(e: cv2.error) -> str:
    """The informative part of a cv2.error message, on one line."""
    text = str(e).strip().splitlines()
    for line in text:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return text[-1] if text else "cv2 error"


def _jpeg_segments(data: bytes):
    """Yield (marker, position, length) of each JPEG marker segment up to and including the first scan (SOS)."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield marker, pos, length
        if marker == 0xDA:
            return
        pos += 2 + length


def _jpeg_complete(data: bytes) -> bool:
    """True when the JPEG's image data ends with an EOI marker.

    Walks the marker segments (skipping APPn, where an EXIF thumbnail has its
    own EOI) to the first scan, then looks for FFD9 after it. Entropy-coded
    data never contains FFD9 (0xFF bytes are stuffed), and trailing vendor
    data after the EOI is allowed.
    """
    for marker, pos, length in _jpeg_segments(data):
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos + 2 + length) >= 0
    return False


def sniff_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of PNG, JPEG, BMP or WebP data.

    Lets a decompression bomb (a tiny file declaring a gigantic image) be
    refused before any pixel memory is allocated. None when unknown.
    """
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return w, abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_dimensions(data)
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    for marker, pos, _length in _jpeg_segments(data):
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return w, h
    return None
