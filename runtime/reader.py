"""Read numbers: each row of digits read whole by the row reader (a CNN trained with CTC).

The reader gives, for every STRIDE columns of a row, scores for the ten
digits and a blank. Greedy decoding takes the likeliest class per step,
merges repeats and drops blanks. A digit's confidence is its probability at
its strongest step; its box is the ink between its neighbours' strongest steps.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import ModelError, NoDigitFound
from .imageio import to_uint8
from .model import DEFAULT_READER, load_session, softmax
from .results import NumberReading, Prediction
from .rows import RowImage, find_row_images

DEFAULT_BATCH = 32  # rows per session call
# Rows are batched with rows of the same width bucket and padded to the bucket's width, alone or not: a
# row's readings and confidences then do not depend on what else is in its batch.
BUCKET = 32
# A digit read below this confidence is dropped: the reader is unsure there is a digit at all
# (a speck, a scribble's loop). 0 keeps every digit.
MIN_CONFIDENCE = 0.3
# Rows besides an image's heaviest one count only when read this surely (mean digit confidence): a
# shadow's rim, a stain or paper texture found as a row of its own must not add a digit to the number.
OTHER_ROW_CONFIDENCE = 0.8


class NumberReader:
    """Loads a row-reader model once and reads numbers with it.

    >>> reader = NumberReader()              # the shipped reader
    >>> reader.read(["meter.jpg", frame])    # one NumberReading per image
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH, min_confidence: float = MIN_CONFIDENCE):
        self.session, self.info = load_session(model if model is not None else DEFAULT_READER, threads, device)
        if self.info.task != "row-reader":
            raise ModelError(f"{self.info.path}: not a row reader (task {self.info.task!r}); "
                             "number reading needs a reader model")
        self.batch_size = batch_size
        self.min_confidence = min_confidence

    def rows(self, image: np.ndarray) -> list[RowImage]:
        """The rows of one image as the reader's inputs (raises NoDigitFound when there is no ink)."""
        return find_row_images(to_uint8(image), self.info.input_size)

    def read(self, images: list[np.ndarray]) -> list[NumberReading]:
        """Read every image; raises NoDigitFound for the first image that holds no number."""
        readings = self.read_rows([self.rows(im) for im in images])
        for r in readings:
            if not r.rows:
                raise NoDigitFound("no number found")
        return readings

    def read_rows(self, images: list[list[RowImage]]) -> list[NumberReading]:
        """Read the rows of several images in as few session calls as possible (rows of one width
        bucket batched together); rows that read as nothing are left out of the readings."""
        flat = [(i, row) for i, rows in enumerate(images) for row in rows]
        buckets: dict[int, list[int]] = {}
        for k, (_, row) in enumerate(flat):
            buckets.setdefault(-(-row.pixels.shape[1] // BUCKET), []).append(k)
        digits: dict[int, list[Prediction]] = {}
        for members in buckets.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                probs = self.probabilities([flat[k][1].pixels for k in chunk])
                for k, p in zip(chunk, probs):
                    digits[k] = self.decode(p, flat[k][1])
        readings = [NumberReading() for _ in images]
        for k, (i, row) in enumerate(flat):
            if digits[k] and (row.main or np.mean([d.confidence for d in digits[k]]) >= OTHER_ROW_CONFIDENCE):
                for d in digits[k]:
                    d.row = len(readings[i].rows)
                readings[i].rows.append(digits[k])
        return readings

    def probabilities(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Per row, probabilities [steps, classes + 1]: one session call, rows padded to one width."""
        stride = self.info.stride
        width = max(r.shape[1] for r in rows)
        width += -width % BUCKET  # a multiple of the stride too
        feed = np.zeros((len(rows), 1, self.info.input_size, width), np.float32)
        for k, r in enumerate(rows):
            feed[k, 0, :, :r.shape[1]] = r
        lo, hi = self.info.input_range
        if self.info.polarity == "dark-on-light":
            feed = 1.0 - feed
        logits = self._run(lo + feed * (hi - lo))
        if not np.isfinite(logits).all():
            raise ModelError(f"{self.info.path}: the reader's output is not finite (NaN or inf): "
                             "the model file is broken")
        probs = softmax(logits.astype(np.float32), axis=2)
        return [p[:-(-r.shape[1] // stride)] for p, r in zip(probs, rows)]

    def _run(self, feed: np.ndarray) -> np.ndarray:
        return self.session.run([self.info.output_name], {self.info.input_name: feed})[0]

    def decode(self, probs: np.ndarray, row: RowImage) -> list[Prediction]:
        """Greedy CTC decoding with a confidence and a box per digit.

        A digit wins only a step or two (CTC's peaks), so its box is the ink
        between the midpoints to its neighbours' peaks."""
        best = probs.argmax(axis=1)
        blank = self.info.blank
        peaks = []  # (class, step of the highest probability) per digit
        start = 0
        for t in range(1, len(best) + 1):
            if t < len(best) and best[t] == best[start]:
                continue
            cls = int(best[start])
            if cls != blank:
                peak = start + int(probs[start:t, cls].argmax())
                if probs[peak, cls] >= self.min_confidence:
                    peaks.append((cls, peak))
            start = t
        centres = [(p + 0.5) * self.info.stride for _, p in peaks]
        edges = [0.0, *((a + b) / 2 for a, b in zip(centres, centres[1:])), float(row.pixels.shape[1])]
        return [Prediction(self.info.classes[cls], cls, float(probs[peak, cls]), probs[peak, :blank].copy(),
                           row.box(edges[k], edges[k + 1]))
                for k, (cls, peak) in enumerate(peaks)]
