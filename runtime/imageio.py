"""Robust image reading: bytes or arrays in, 8-bit grey or BGR arrays out.

Everything the rest of the runtime sees has passed through ``to_uint8``:
dtype uint8, shape [H, W] (grey) or [H, W, 3] (BGR), at least
``MIN_SIDE`` pixels on each side. Bad inputs raise ``RuntimeInputError``
with a message that says what is wrong, never a cv2 traceback.

Hostile inputs are stopped before they cost anything: only regular files
are opened (a FIFO would block forever, ``/dev/zero`` never ends), reads
stop at the size limit whatever ``stat`` says, and the memory a decode
would take is computed from the header (a JPEG's frame segment, read here;
other formats through Pillow's lazy ``Image.open``, which reads the header
only) and checked against a settable budget before OpenCV decodes a pixel.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
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
MIB = 1024 * 1024
# Memory one image may take while it is read, decoded and brought to 8 bits
# (file bytes + decoded pixels + the 8-bit result). 256 MiB leaves room for
# the interpreter, OpenCV and ONNX Runtime (~150 MiB) on a 1 GB device.
DEFAULT_MEMORY_BUDGET = 256 * MIB
BUDGET_ENV = "EDGE_DIGITS_MEMORY_BUDGET_MB"
# Above this many pixels a colour image is brought to grey (the luminance the
# preprocessing uses anyway) instead of being kept as 3 bytes per pixel.
COLOUR_MAX_PIXELS = 16_000_000
# Every Huffman-coded JPEG spends at least one bit per 8x8 block on its DC
# coefficient, i.e. one byte per 512 pixels; a header claiming more than 4x
# that over the data there is lies, and libjpeg would pad the rest with grey.
JPEG_MAX_PIXELS_PER_BYTE = 2048
STRIP_ELEMENTS = 1 << 18  # conversion to 8 bits works on strips of about this many values (2 MiB as float64)

_budget: int | None = None


def memory_budget() -> int:
    """Bytes one image may take to decode (``set_memory_budget``, else
    $EDGE_DIGITS_MEMORY_BUDGET_MB, else 256 MiB)."""
    if _budget is not None:
        return _budget
    text = os.environ.get(BUDGET_ENV)
    if text:
        try:
            mb = float(text)
        except ValueError:
            raise RuntimeInputError(f"${BUDGET_ENV}={text!r} is not a number of MiB") from None
        if mb > 0:
            return int(mb * MIB)
    return DEFAULT_MEMORY_BUDGET


def set_memory_budget(nbytes: int | None) -> None:
    """Set the per-image memory budget in bytes (None: back to the default)."""
    global _budget
    if nbytes is not None and nbytes <= 0:
        raise ValueError("memory budget must be > 0 bytes")
    _budget = None if nbytes is None else int(nbytes)


def read_image(path: str | os.PathLike, grey: bool = False, min_side: int | None = None) -> np.ndarray:
    """Read an image file into uint8 grey [H, W] or BGR [H, W, 3].
    ``grey``, ``min_side``: see ``decode_image``."""
    return read_image_sized(path, grey, min_side)[0]


def read_image_sized(path: str | os.PathLike, grey: bool = False,
                     min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``read_image``, and the (H, W) of the full-size image (see ``decode_image_sized``)."""
    path = Path(path)
    data = read_bytes(path, min(MAX_FILE_BYTES, memory_budget()))
    try:
        return decode_image_sized(data, grey, min_side)
    except RuntimeInputError as e:
        raise RuntimeInputError(f"{path}: {e}") from None


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: Path) -> os.stat_result:
    """Stat ``path`` (following links) and refuse anything but a regular file
    before it is opened: opening a FIFO blocks until a writer comes, a
    device such as /dev/zero never ends."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RuntimeInputError(f"{path}: no such file") from None
    except PermissionError:
        raise RuntimeInputError(f"{path}: permission denied") from None
    except OSError as e:
        raise RuntimeInputError(f"{path}: cannot read ({e.strerror or e})") from None
    _refuse_special(path, st.st_mode)
    return st


def _refuse_special(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise RuntimeInputError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
        link = " (through a symbolic link)" if path.is_symlink() else ""
        raise RuntimeInputError(f"{path}: not a regular file: {what}{link}")


def read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing special files and anything over ``limit``
    bytes (counted while reading, not trusted from ``stat``)."""
    st = check_regular_file(path)
    if st.st_size > limit:
        raise RuntimeInputError(f"{path}: file too large ({st.st_size / MIB:.0f} MiB, limit {limit / MIB:.0f} MiB)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO swapped in after the stat still cannot block
    except PermissionError:
        raise RuntimeInputError(f"{path}: permission denied") from None
    except OSError as e:
        raise RuntimeInputError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        _refuse_special(path, os.fstat(fd).st_mode)  # what was opened, not what was stat'ed
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise RuntimeInputError(f"{path}: file too large (over {limit / MIB:.0f} MiB)")
        return b"".join(chunks)
    except BlockingIOError:
        raise RuntimeInputError(f"{path}: not a regular file (would block)") from None
    except OSError as e:
        raise RuntimeInputError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)


@dataclass
class Header:
    """What a file's header says the decoded image will be."""

    format: str  # Pillow's name: PNG, JPEG, TIFF, BMP, WEBP, PPM
    width: int
    height: int
    channels: int  # as OpenCV decodes it unchanged
    sample_bytes: int  # 1 (8 bits or fewer), 2, 4 or 8
    alpha: bool
    buffer_bytes: int = 0  # a decoder's own buffer besides the image (a TIFF strip or tile)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self) -> str:
        return (f"{self.width}x{self.height}, {self.channels} channel{'s' * (self.channels > 1)} "
                f"of {8 * self.sample_bytes} bits")


FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "PPM")  # the ones whose header is checked; no others are decoded


def read_header(data: bytes) -> Header:
    """The header of PNG, JPEG, TIFF, BMP, WebP or PNM data, read by Pillow
    without decoding any pixel. Other formats (that OpenCV would also
    decode) are refused: their memory cannot be bounded beforehand."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: our limits follow
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            header = _header_of(im, data)
            if im.format == "PNG":
                # Walks every chunk and checks its CRC: a chunk length flipped
                # to gigabytes makes OpenCV allocate it before failing.
                im.verify()
    except UnidentifiedImageError:
        raise RuntimeInputError("not a readable image (unknown format, or corrupt/truncated data; "
                                "PNG, JPEG, TIFF, BMP, WebP and PNM are read)") from None
    except Image.DecompressionBombError:
        raise RuntimeInputError(f"image too large (over {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} MP, "
                                f"limit {MAX_PIXELS // 1_000_000} MP)") from None
    except (OSError, SyntaxError, ValueError, struct.error, IndexError, KeyError, TypeError, EOFError) as e:
        reason = " ".join(str(e).split())[:160] or type(e).__name__  # one line, whatever the file held
        raise RuntimeInputError(f"corrupt or truncated image data ({reason})") from None
    return header


def jpeg_header(data: bytes, dims: tuple[int, int] | None) -> Header | None:
    """A JPEG's header from its frame segment (``dims``, from sniff_dimensions); None for other data.
    libjpeg decodes every JPEG to 8-bit BGR (or grey when asked), so the frame size is all the memory plan
    needs; importing Pillow for it cost 30-80 ms, up to a fifth of a cold start, so only the other formats
    go through read_header."""
    if dims is None or data[:3] != b"\xff\xd8\xff":
        return None
    return Header("JPEG", *dims, channels=3, sample_bytes=1, alpha=False)


def _header_of(im, data: bytes) -> Header:
    w, h = im.size
    bands = im.getbands()
    alpha = "A" in bands or "a" in bands or "transparency" in im.info  # a tRNS chunk becomes an alpha channel
    channels = (4 if alpha else 3) if im.mode == "P" else len(bands) + ("transparency" in im.info)
    bits = {"I": 32, "F": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8)
    rawmode = im.tile[0][3] if im.tile and isinstance(im.tile[0][3], str) else ""
    digits = "".join(c if c.isdigit() else " " for c in rawmode.split(";", 1)[1]) if ";" in rawmode else ""
    bits = max([bits, *(int(d) for d in digits.split())])
    buffer = 0
    if im.format == "PNG":
        bits = max(bits, data[24])  # IHDR bit depth
    elif im.format == "JPEG":
        channels, bits, alpha = 3, 8, False  # decoded as BGR
    elif im.format == "TIFF":
        tags = im.tag_v2
        sample_bits = tags.get(258, 8)
        bits = max(bits, *(sample_bits if isinstance(sample_bits, tuple) else (sample_bits,)))
        channels = max(channels, int(tags.get(277, 1)))
        tile_w = int(tags.get(322, w))
        tile_h = int(tags.get(323, tags.get(278, h)))
        buffer = min(tile_w, 1 << 20) * min(tile_h, max(h, 1)) * channels * ((bits + 7) // 8)
    sample_bytes = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    return Header(im.format, w, h, channels, sample_bytes, alpha, buffer)


def decode_image(data: bytes, grey: bool = False, min_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, TIFF, WebP, PNM) within the memory budget.

    ``grey``: a JPEG is decoded to its luminance alone, which is all the ink
    analysis looks at: libjpeg then skips the colour planes, their
    upsampling and the conversion to BGR (about half the decoding time of
    a photo). Other formats decode as they are.
    ``min_side``: the long side the caller needs: a JPEG is decoded at the
    smallest of 1/2, 1/4 or 1/8 scale that still has it (libjpeg scales in
    its inverse DCT, for less work than a full decode and no resizing after
    it); by default large JPEGs are reduced to a long side of
    JPEG_REDUCE_TARGET or more."""
    return decode_image_sized(data, grey, min_side)[0]


def decode_image_sized(data: bytes, grey: bool = False,
                       min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``decode_image``, and the (H, W) of the full-size image, turned like the decoded one (EXIF):
    what the decoded pixels' coordinates scale to when a JPEG was decoded reduced."""
    if len(data) == 0:
        raise RuntimeInputError("empty file")
    dims = sniff_dimensions(data)  # the cheapest refusal of an absurd size, before Pillow reads more
    if dims is not None:
        _check_size(*dims)
    header = jpeg_header(data, dims) or read_header(data)
    w, h = header.width, header.height
    _check_size(w, h)
    if header.format == "JPEG":
        if not _jpeg_complete(data):
            # libjpeg "decodes" a truncated file by padding it with grey: a
            # silently wrong image. Refuse it instead.
            raise RuntimeInputError("truncated or corrupt JPEG (no end-of-image marker)")
        if w * h > len(data) * JPEG_MAX_PIXELS_PER_BYTE:
            raise RuntimeInputError(f"corrupt JPEG: its header claims {w}x{h} pixels, far more than its "
                                    f"{len(data)} bytes can hold")
    flags, shape = decode_plan(header, len(data), memory_budget(), grey, min_side)
    try:
        if header.format == "JPEG":
            with _libjpeg_messages() as messages:
                image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
            corrupt = [m for m in messages if m.startswith(("Corrupt JPEG data", "Premature end"))]
            if corrupt:
                # libjpeg only warns, and decodes what it could as a guess
                raise RuntimeInputError(f"corrupt JPEG data ({corrupt[0]})")
        else:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:
        raise RuntimeInputError(f"cannot decode image ({_cv2_reason(e)})") from None
    if image is None:
        raise RuntimeInputError("not a readable image (corrupt or truncated data)")
    if image.shape[:2] not in (shape, shape[::-1]):  # either way round: EXIF orientation
        raise RuntimeInputError(f"corrupt image: decoded {image.shape[1]}x{image.shape[0]}, "
                                f"header says {shape[1]}x{shape[0]}")
    full = (h, w) if image.shape[:2] == shape else (w, h)
    return to_uint8(image), full


@contextmanager
def _libjpeg_messages():
    """Collect what libjpeg writes to the process's stderr meanwhile (its
    warnings: OpenCV neither returns nor raises them), instead of letting
    it through. Yields a list filled on exit."""
    messages: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to collect
        yield messages
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(4096).decode("utf-8", "replace")
            messages += [line.strip() for line in text.splitlines() if line.strip()]


def _check_size(w: int, h: int) -> None:
    if w <= 0 or h <= 0:
        raise RuntimeInputError(f"image has zero size ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise RuntimeInputError(f"image too large ({w}x{h} pixels, limit {MAX_PIXELS // 1_000_000} MP)")


def decode_plan(header: Header, file_bytes: int, budget: int, grey: bool = False,
                min_side: int | None = None) -> tuple[int, tuple[int, int]]:
    """OpenCV flags that decode the image within ``budget`` bytes, and the
    (height, width) they give. Raises when no way of decoding fits.
    ``grey``: luminance only, for a JPEG (the same sizes, the same EXIF turn).
    ``min_side``: a JPEG is reduced as far as its long side stays at least this
    (default JPEG_REDUCE_TARGET, and up to twice that)."""
    target = JPEG_REDUCE_TARGET if min_side is None else max(1, min_side)
    w, h = header.width, header.height
    if header.format == "JPEG":
        # JPEG carries neither alpha nor 16-bit data, so IMREAD_COLOR loses
        # nothing, and unlike IMREAD_UNCHANGED it applies the EXIF
        # orientation that phones rely on for portrait photos. libjpeg
        # decodes at 1/2, 1/4 or 1/8 scale directly.
        for factor, flags in (JPEG_GREY_FLAGS if grey else JPEG_COLOUR_FLAGS):
            shape = (-(-h // factor), -(-w // factor))
            if factor < 8 and max(w, h) // (2 * factor) >= target:
                continue  # a smaller scale is still large enough
            cost = file_bytes + 2 * 3 * shape[0] * shape[1]  # BGR, then its grey or channel check
            if cost <= budget:
                return flags, shape
        raise _over_budget(header, file_bytes + 6 * -(-h // 8) * -(-w // 8), budget)
    grey_out = w * h if w * h > COLOUR_MAX_PIXELS or header.channels <= 2 else 3 * w * h
    full = file_bytes + w * h * header.channels * header.sample_bytes + grey_out + header.buffer_bytes
    if full <= budget:
        return cv2.IMREAD_UNCHANGED, (h, w)
    if header.format == "PNG" and not header.alpha and file_bytes + w * h <= budget:
        # libpng strips 16-bit samples and mixes colour to grey row by row
        # while decoding: only the 8-bit grey result is ever held. (Not with
        # transparency: dropping alpha could hide the digit.)
        return cv2.IMREAD_GRAYSCALE, (h, w)
    raise _over_budget(header, full, budget)


JPEG_COLOUR_FLAGS = ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                     (8, cv2.IMREAD_REDUCED_COLOR_8))
JPEG_GREY_FLAGS = ((1, cv2.IMREAD_GRAYSCALE), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                   (8, cv2.IMREAD_REDUCED_GRAYSCALE_8))


def _over_budget(header: Header, cost: int, budget: int) -> RuntimeInputError:
    return RuntimeInputError(f"image too large to decode in the memory budget ({header.describe()}: about "
                             f"{cost / MIB:.0f} MiB, budget {budget / MIB:.0f} MiB; see ${BUDGET_ENV})")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Bring any array that could hold an image to uint8 grey or BGR.

    Accepts [H, W], [H, W, 1|2|3|4] (grey, grey+alpha, BGR, BGRA), of
    any integer, float or bool dtype. Alpha is composited onto a plain
    background so transparent areas read as paper. Conversion goes strip by
    strip into the 8-bit result, so it never holds a float copy of a large
    array; large colour images become grey (the luminance the preprocessing
    uses anyway).
    """
    if not isinstance(image, np.ndarray):
        raise RuntimeInputError(f"expected an image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise RuntimeInputError(f"unsupported image shape {image.shape} (expected HxW or HxWx1/2/3/4)")
    if image.dtype.kind not in "buif":
        raise RuntimeInputError(f"unsupported pixel type {image.dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise RuntimeInputError(f"image has zero size ({w}x{h})")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise RuntimeInputError(f"image too small ({w}x{h}, need at least {MIN_SIDE}x{MIN_SIDE})")
    if h * w > MAX_PIXELS:
        raise RuntimeInputError(f"image too large ({w}x{h} pixels, limit {MAX_PIXELS // 1_000_000} MP)")
    channels = image.shape[2] if image.ndim == 3 else 1
    has_alpha = channels in (2, 4)
    grey = channels <= 2 or h * w > COLOUR_MAX_PIXELS
    work = h * w * (1 if grey else 3) + 16 * STRIP_ELEMENTS  # the result and one strip's float copies
    if image.dtype != np.uint8 or has_alpha or (grey and channels > 1):
        budget = memory_budget()
        if work > budget:
            raise RuntimeInputError(f"image too large to convert in the memory budget ({w}x{h}: about "
                                    f"{work / MIB:.0f} MiB, budget {budget / MIB:.0f} MiB; see ${BUDGET_ENV})")
    if image.dtype == np.uint8 and not has_alpha:
        if channels == 3 and grey:
            return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)
    else:
        image = _convert(image, has_alpha, grey)
    if image.ndim == 3 and _channels_equal(image):
        image = image[:, :, 0]  # colour container, grey content: one channel is enough
    return np.ascontiguousarray(image)


def _convert(image: np.ndarray, has_alpha: bool, grey: bool) -> np.ndarray:
    """Any dtype, with or without alpha -> uint8, one strip of rows at a time."""
    h, w = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    rows = max(1, STRIP_ELEMENTS // (w * channels))
    strips = [slice(r, min(h, r + rows)) for r in range(0, h, rows)]
    unit = _unit_scale(image, strips)
    background = _alpha_background(image, unit, strips) if has_alpha else 1.0
    out = np.empty((h, w) if grey else (h, w, 3), np.uint8)
    for s in strips:
        values = unit(image[s])  # float32 in [0, 1]
        if has_alpha:
            values = _composite_alpha(values, background)
        if grey and values.ndim == 3:
            values = cv2.cvtColor(values, cv2.COLOR_BGR2GRAY)
        out[s] = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _channels_equal(image: np.ndarray) -> bool:
    # A sparse sample first: a colour photo or camera frame differs there already, and is
    # not compared whole (strided views of every pixel, twice, for each frame).
    sample = image[::7, ::13]
    if not (np.array_equal(sample[:, :, 0], sample[:, :, 1]) and np.array_equal(sample[:, :, 1], sample[:, :, 2])):
        return False
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]))


def _unit_scale(image: np.ndarray, strips: list[slice]):
    """A function mapping strips of ``image`` to float32 [0, 1] according
    to the dtype (and, where the dtype has no agreed white level, the
    whole array's range, found here without copying it)."""
    kind = image.dtype.kind
    if kind == "b":
        return lambda a: a.astype(np.float32)
    if image.dtype == np.uint8:
        return lambda a: a.astype(np.float32) / 255.0
    if kind == "u":
        info = np.iinfo(image.dtype)
        hi = float(image.max())
        # 10/12-bit sensor data is often stored in 16-bit containers and would
        # collapse to a handful of grey levels after dividing by 65535; the
        # preprocessing only cares about relative contrast, so stretch it.
        scale = info.max if hi >= info.max / 8 else max(hi, 1.0)
        return lambda a: a.astype(np.float32) / np.float32(scale)
    if kind == "i":
        # Signed data has no agreed white level; use the values' own range.
        return _stretcher(float(image.min()), float(image.max()), finite=lambda a: a.astype(np.float64))
    finite = lambda a: np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # noqa: E731
    lo, hi = np.inf, -np.inf
    for s in strips:
        values = finite(image[s])
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if lo >= 0.0 and hi <= 1.0:
        return lambda a: finite(a).astype(np.float32)  # the usual float convention
    if lo >= 0.0 and hi <= 255.0:
        return lambda a: (finite(a) / 255.0).astype(np.float32)
    return _stretcher(lo, hi, finite)


def _stretcher(lo: float, hi: float, finite):
    if hi - lo <= 0:
        return lambda a: np.zeros(a.shape, np.float32)
    return lambda a: ((finite(a) - lo) / (hi - lo)).astype(np.float32)


def _alpha_background(image: np.ndarray, unit, strips: list[slice]) -> float:
    """White is the usual choice (a transparent PNG of dark strokes), but
    light strokes on a transparent background would vanish on white, so the
    background is black when the opaque content is mostly light."""
    total, count = 0.0, 0
    for s in strips:
        values = unit(image[s])
        opaque = values[:, :, -1] > 0.5
        total += float(values[:, :, :-1][opaque].sum())
        count += int(opaque.sum()) * (values.shape[2] - 1)
    return 0.0 if count and total / count > 0.6 else 1.0


def _composite_alpha(image: np.ndarray, background: float) -> np.ndarray:
    """Flatten grey+alpha or BGRA onto a uniform background."""
    colour, alpha = image[:, :, :-1], image[:, :, -1:]
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
            # Searched from the end, where the EOI is (a forward search reads the whole scan).
            return data.rfind(b"\xff\xd9", pos + 2 + length) >= 0
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
