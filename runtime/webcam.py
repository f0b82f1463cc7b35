"""Live classification of camera frames or a video file, with an overlay.

Each frame goes through the same preprocessing as a photo; a frame without
ink is normal here (the camera points at blank paper) and is shown as
"no digit" instead of an error. ``q`` or Esc quits the window. Headless
runs (``display=False``) can write the annotated video: it is written
under a temporary name next to the target and renamed at the end, so a
crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import NoDigitFound, RuntimeInputError
from .imageio import to_uint8

WINDOW = "edge-digits"
GREEN, YELLOW, RED = (0, 200, 0), (0, 220, 255), (0, 0, 255)


def open_source(source: int | str) -> cv2.VideoCapture:
    """A camera index or a video file, opened and checked."""
    if isinstance(source, str):
        _check_source_file(source)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        what = f"camera {source}" if isinstance(source, int) else f"{source}: not a readable video"
        raise RuntimeInputError(f"cannot open {what}" if isinstance(source, int) else what)
    return cap


def _check_source_file(source: str) -> None:
    """A video file, or a camera device node: a FIFO (or socket, or block
    device) would block FFmpeg forever or feed it endless data."""
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise RuntimeInputError(f"{source}: no such video file") from None
    except OSError as e:
        raise RuntimeInputError(f"{source}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise RuntimeInputError(f"{source}: is a directory, not a video file")
    camera = stat.S_ISCHR(mode) and os.path.realpath(source).startswith("/dev/video")
    if not (stat.S_ISREG(mode) or camera):
        what = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device that is not a camera")
        raise RuntimeInputError(f"{source}: not a video file or camera: {what}")


def frame_count(cap: cv2.VideoCapture, source: int | str) -> int | None:
    """Frames the container says the video file holds (None for a camera or when unknown)."""
    if isinstance(source, int):
        return None
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and 0 < n < 1e9 else None


def annotate(frame: np.ndarray, clf, number: bool) -> np.ndarray:
    """Draw boxes, digits and confidences on (a copy of) the frame."""
    out = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(out.shape[:2]) / 400))
    scale = max(0.5, max(out.shape[:2]) / 900)
    try:
        if number:
            reading = clf.read_numbers([frame])[0]
            for d in reading.digits:
                _box(out, d.box, f"{d.label} {d.confidence:.2f}", _colour(d.confidence), scale, thick)
            _label(out, f"number: {reading.number} ({reading.confidence:.2f})", (10, out.shape[0] - 12), YELLOW,
                   scale, thick)
        else:
            p = clf.checked(clf.predictions([clf.preprocess(frame)])[0])
            _box(out, p.box, f"{p.label} {p.confidence:.2f}", _colour(p.confidence), scale * 1.3, thick)
    except NoDigitFound:
        _label(out, "no digit", (10, out.shape[0] - 12), RED, scale, thick)
    return out


def run(clf, source: int | str = 0, number: bool = False, display: bool = True,
        output: str | os.PathLike | None = None, max_frames: int | None = None) -> dict:
    """Process frames until the source ends, ``q``/Esc, or ``max_frames``.

    Returns {"frames", "seconds", "fps"} (processing frame rate) and
    "expected", the frame count the video file announces when the video
    ran out (None if unknown, or if the run was stopped before), so that a
    video that ends early can be reported."""
    if output is not None and Path(output).is_dir():
        raise RuntimeInputError(f"{output}: is a directory (--output needs a video file name)")
    cap = open_source(source)
    expected = frame_count(cap, source)
    writer = None
    tmp = None
    frames, t0 = 0, time.perf_counter()
    fps = 0.0
    finished = False
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            name = f"camera {source}" if isinstance(source, int) else source
            raise RuntimeInputError(f"cannot read frames from {name}")
        if output is not None:
            writer, tmp = _open_writer(Path(output), frame, cap)
        if display:
            _check_display()
        while ok and frame is not None:
            start = time.perf_counter()
            frame = to_uint8(frame)
            shown = annotate(frame, clf, number)
            dt = time.perf_counter() - start
            fps = 1.0 / dt if fps == 0 else 0.9 * fps + 0.1 / max(dt, 1e-6)  # smoothed
            _label(shown, f"{fps:.1f} FPS", (10, 30), GREEN, max(0.5, max(shown.shape[:2]) / 900), 2)
            frames += 1
            if writer is not None:
                writer.write(shown if shown.ndim == 3 else cv2.cvtColor(shown, cv2.COLOR_GRAY2BGR))
            if display:
                cv2.imshow(WINDOW, shown)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if max_frames is not None and frames >= max_frames:
                break
            ok, frame = cap.read()
        finished = True
        ended = not ok or frame is None  # the source ran out (not q/Esc, not max_frames)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
            try:
                if finished and frames > 0:
                    os.replace(tmp, output)
            except OSError as e:
                raise RuntimeInputError(f"{output}: cannot write video ({e.strerror or e})") from None
            finally:
                if tmp is not None and tmp.exists():
                    tmp.unlink()
        if display:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    seconds = time.perf_counter() - t0
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else 0.0,
            "expected": expected if ended else None}


def _open_writer(output: Path, frame: np.ndarray, cap: cv2.VideoCapture):
    if output.parent and not output.parent.exists():
        raise RuntimeInputError(f"{output}: directory {output.parent} does not exist")
    if output.is_dir():
        raise RuntimeInputError(f"{output}: is a directory (--output needs a video file name)")
    src_fps = cap.get(cv2.CAP_PROP_FPS)
    fps = src_fps if src_fps and 1 <= src_fps <= 240 else 30.0
    h, w = frame.shape[:2]
    # Same directory (so the final rename is atomic), same extension (the
    # writer picks the container from it).
    tmp = output.with_name(f".{output.stem}.{os.getpid()}.tmp{output.suffix or '.mp4'}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        writer.release()
        tmp.unlink(missing_ok=True)
        raise RuntimeInputError(f"{output}: cannot write video (unsupported container or codec)")
    return writer, tmp


def _check_display() -> None:
    """opencv-python-headless has no windows, and a GUI build without a
    screen aborts the whole process inside Qt/GTK: say so instead."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeInputError("no display available (no DISPLAY or WAYLAND_DISPLAY): "
                                "use --no-display, with --output to save the annotated video")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise RuntimeInputError("no display available (OpenCV built without GUI support, or no screen): "
                                "use --no-display, with --output to save the annotated video") from None


def _colour(confidence: float):
    return GREEN if confidence >= 0.9 else YELLOW if confidence >= 0.6 else RED


def _box(img, box, text, colour, scale, thick) -> None:
    if box is None:
        return
    x, y, w, h = box
    cv2.rectangle(img, (x, y), (x + w, y + h), colour, thick)
    _label(img, text, (x, max(15, y - 6)), colour, scale, thick)


def _label(img, text, org, colour, scale, thick) -> None:
    # Dark outline under the text keeps it readable on any background.
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
