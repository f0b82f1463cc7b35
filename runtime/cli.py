"""Command line: ``python -m runtime classify|webcam|serve ...``.

This is the only place where the runtime's typed errors are caught and
turned into one-line messages; everything below raises.

Exit status: 0 all inputs classified, 1 some input failed (each reported on
its own line, the others still processed), 2 bad usage or unusable model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, RuntimeInputError
from .results import digit_json, number_json

EXIT_OK, EXIT_INPUT, EXIT_FATAL = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime",
                                description="Classify handwritten digits and numbers in photos "
                                            "(ONNX Runtime, no torch).")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", help="ONNX model file, or a shipped model's name: default, accurate (5x the "
                                       "default's compute; its teacher) (default: default)")
        q.add_argument("--threads", type=_positive, help="inference threads (default: cores available, at most 4)")
        q.add_argument("--number", action="store_true",
                       help="read numbers: every row of digits, top to bottom (JSON: 'rows', and 'number' = rows "
                            "joined by a space)")
        q.add_argument("--reader", help="row-reader ONNX model for --number (default: the shipped reader)")
        q.add_argument("--min-confidence", type=_probability, default=None, metavar="P",
                       help="answer 'no digit found' when a single digit's confidence is below P "
                            "(default: calibrated, see benchmarks/reject.py)")

    c = sub.add_parser("classify", help="classify image files or directories of images")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files, or directories searched recursively")
    common(c)
    c.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    c.add_argument("--batch-size", type=_positive, default=64, help="images per inference call (default 64)")

    w = sub.add_parser("webcam", help="live classification from a camera or a video file")
    w.add_argument("--source", default="0", help="camera index or video file (default 0)")
    common(w)
    w.add_argument("--no-display", action="store_true", help="run without a window (headless)")
    w.add_argument("--output", help="write the annotated video to this file (.mp4)")
    w.add_argument("--max-frames", type=_positive, help="stop after this many frames")

    s = sub.add_parser("serve", help="HTTP service and browser page (needs the serve extra; API: docs/HTTP.md)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "0.0.0.0 for the local network)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--model", help="ONNX digit model file, or a shipped model's name: default, accurate "
                                   "(default: default)")
    s.add_argument("--reader", help="number-reader model, for runtimes that have a learned row reader")
    s.add_argument("--workers", type=_positive, default=_default_workers(),
                   help="threads that decode and classify at once (default: twice the cores available, at most 8)")
    s.add_argument("--threads", type=_positive, default=1, help="inference threads per request (default 1)")
    s.add_argument("--max-queue", type=int, default=32, help="requests waiting for a worker before 503 (default 32)")
    s.add_argument("--max-body", type=_positive, default=20 * 2**20,
                   help="largest request body in bytes (default 20 MiB)")
    s.add_argument("--max-pixels", type=_positive, default=50_000_000, help="largest image in pixels (default 50 MP)")
    s.add_argument("--read-timeout", type=float, default=30.0, help="seconds to receive a body (default 30)")
    s.add_argument("--tls-cert", help="certificate file: serve HTTPS (phone browsers allow the camera only over HTTPS)")
    s.add_argument("--tls-key", help="private key file of --tls-cert")
    return p


def _default_workers() -> int:
    """Twice the cores: a request holds the GIL between OpenCV calls, so two
    per core keep the cores busier (2 cores, in one process without HTTP:
    101 vs 88 single-digit 640x480 photos/s with 4 threads vs 2, quiet machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, 2 * cores))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _classifier(args: argparse.Namespace, **kwargs):
    from .classifier import DEFAULT_MIN_CONFIDENCE, DigitClassifier

    threshold = DEFAULT_MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    return DigitClassifier(args.model, threads=args.threads, min_confidence=threshold, reader=args.reader, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_opencv()
    try:
        if args.command == "classify":
            return run_classify(args)
        if args.command == "serve":
            return run_serve(args)
        return run_webcam(args)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL
    except RuntimeInputError as e:  # e.g. the webcam source
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130


def _quiet_opencv() -> None:
    """Decoders of corrupt files log to stderr; our own message says it once.
    (FFmpeg reads its level when the first video is opened, so setting it
    here, before any capture, is in time.)"""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except Exception:  # older OpenCV without the logging API: only noisier
        pass


# ------------------------------------------------------------ classify


@dataclass
class Item:
    path: str
    error: str | None = None
    result: object = None  # Prediction or NumberReading


def iter_inputs(paths: list[str]) -> Iterator[Item]:
    """Files as given; directories walked recursively for image files.
    Problems (missing path, unreadable directory) become error items."""
    from .imageio import IMAGE_EXTENSIONS

    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            if not os.access(p, os.R_OK | os.X_OK):
                yield Item(arg, f"{arg}: cannot read directory (permission denied)")
                continue
            errors: list[OSError] = []
            found = []
            for root, dirs, files in os.walk(p, onerror=errors.append):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
            yield from (Item(f) for f in found)
            if not found and not errors:  # say so, rather than print nothing for this argument
                yield Item(arg, f"{arg}: no image files in this directory")
            for e in errors:
                yield Item(e.filename or arg, f"{e.filename or arg}: cannot read directory ({e.strerror or e})")
        elif p.exists() or p.is_symlink():
            yield Item(arg)
        else:
            yield Item(arg, f"{arg}: no such file or directory")


def run_classify(args: argparse.Namespace) -> int:
    clf = _classifier(args, batch_size=args.batch_size)
    out = Output(args.json, args.number)
    failed = False
    batch: list[Item] = []
    for item in iter_inputs(args.paths):
        batch.append(item)
        if len(batch) == args.batch_size:
            failed |= classify_batch(clf, batch, args.number, out)
            batch = []
    if batch:
        failed |= classify_batch(clf, batch, args.number, out)
    return EXIT_INPUT if failed else EXIT_OK


def classify_batch(clf, items: list[Item], number: bool, out: Output) -> bool:
    """Every readable item through DigitClassifier.classify (one batch; errors stay with their
    item), printed in input order. True if any item failed."""
    usable = [item for item in items if item.error is None]
    for item, outcome in zip(usable, clf.classify([item.path for item in usable], number)):
        if isinstance(outcome.error, (RuntimeInputError, ModelError)):
            item.error = _with_path(item.path, outcome.error)
        elif isinstance(outcome.error, MemoryError):
            item.error = f"{item.path}: image too large for the memory available"
        elif outcome.error is not None:  # a bug: one line for its input, no traceback, the others go on
            item.error = f"{item.path}: internal error ({type(outcome.error).__name__}: {outcome.error})"
        item.result = outcome.result
    for item in items:
        if item.error is not None:
            out.error(item.path, item.error)
        else:
            out.result(item.path, item.result)
    return any(item.error is not None for item in items)


def _with_path(path: str, e: Exception) -> str:
    text = str(e)
    return text if text.startswith(str(path)) else f"{path}: {text}"


class Output:
    """Table (default) or JSON lines. Results go to stdout; in table mode
    errors go to stderr, in JSON mode they are objects on stdout too."""

    def __init__(self, as_json: bool, number: bool):
        self.as_json, self.number = as_json, number
        self.header_done = False
        # A file name the terminal's encoding cannot show (a Unicode name on
        # an ASCII-only stdout) is escaped, not a UnicodeEncodeError.
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")

    def _header(self) -> None:
        if not self.as_json and not self.header_done:
            print("NUMBER     CONF   DIGITS                          FILE" if self.number else "DIGIT  CONF   FILE")
            self.header_done = True

    def result(self, path: str, r) -> None:
        if self.as_json:
            obj = {"path": path, **(number_json(r) if self.number else digit_json(r))}
            print(json.dumps(obj), flush=True)
            return
        self._header()
        if self.number:
            digits = " ".join(f"{d.label}:{d.confidence:.2f}" for d in r.digits)
            print(f"{r.number:<10} {r.confidence:.3f}  {digits:<31} {path}", flush=True)
        else:
            print(f"{r.label:<6} {r.confidence:.3f}  {path}", flush=True)

    def error(self, path: str, message: str) -> None:
        if self.as_json:
            print(json.dumps({"path": path, "error": message}), flush=True)
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ webcam


def run_webcam(args: argparse.Namespace) -> int:
    from .webcam import run

    source = args.source
    if source.isdigit():
        source = int(source)
    clf = _classifier(args)
    stats = run(clf, source, number=args.number, display=not args.no_display, output=args.output,
                max_frames=args.max_frames)
    print(f"{stats['frames']} frames in {stats['seconds']:.1f} s ({stats['fps']:.1f} FPS)"
          + (f", video written to {args.output}" if args.output else ""), file=sys.stderr)
    expected = stats.get("expected")
    if expected is not None and stats["frames"] < expected:
        # A video that ends early (corrupt or cut) must not pass for a complete run.
        print(f"error: {args.source}: read {stats['frames']} of {expected} frames (the video ends early or "
              f"is corrupt)", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


# ------------------------------------------------------------ serve


def run_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import run
    except ImportError as e:
        print(f"error: serve needs the serve extra (pip install 'edge-digits[serve]'): {e}", file=sys.stderr)
        return EXIT_FATAL
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_FATAL
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            print(f"error: {option} {path}: no such file", file=sys.stderr)
            return EXIT_FATAL
    if args.max_queue < 0 or args.read_timeout <= 0:
        print("error: --max-queue must be >= 0 and --read-timeout > 0", file=sys.stderr)
        return EXIT_FATAL
    try:
        run(args)
    except OSError as e:  # the port is taken, the address is not this machine's, ...
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
