"""Read numbers: each row of digits read whole by the row reader (a CNN trained with CTC).

The reader gives, for every ``stride`` columns of a row, scores for the ten
digits and a blank. Greedy decoding takes the likeliest class per step,
merges repeats and drops blanks. A digit's confidence is its probability at
its strongest step; its box is the ink between its neighbours' strongest steps.

A row is read at every phase of the stride (stride 2: as cut, and once more
a column later). Where the phases' strings differ, the one they find
likeliest together (the sum of its CTC log-likelihoods) is answered: a digit
squeezed between two steps of one phase often falls on a step of the other.
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
# Read every row at each phase of the reader's stride (see the module docstring). Photo seeds 1-4 (1,400 numbers):
# one phase 1,203 read right, both 1,218 (overlapping rows 289 -> 304 of 400); clean rows of 5 test digits
# 963 -> 965 of 1,000. Two scales more (x0.9, both phases) read 1,218 and 970: not worth twice the work.
ALL_PHASES = True
# A digit read below this confidence is dropped: the reader is unsure there is a digit at all
# (a speck, a scribble's loop). 0 keeps every digit.
MIN_CONFIDENCE = 0.3
# Rows count only when read this surely (mean digit confidence); when none of an image's rows is, its heaviest
# row is read. A shadow's rim, a stain, paper texture or a table's edge found as a row of its own (heavier than the
# number, at times) must not add digits to the number.
SURE_ROW = 0.8


class NumberReader:
    """Loads a row-reader model once and reads numbers with it.

    >>> reader = NumberReader()              # the shipped reader
    >>> reader.read(["meter.jpg", frame])    # one NumberReading per image
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH, min_confidence: float = MIN_CONFIDENCE,
                 all_phases: bool = ALL_PHASES):
        self.session, self.info = load_session(model if model is not None else DEFAULT_READER, threads, device)
        if self.info.task != "row-reader":
            raise ModelError(f"{self.info.path}: not a row reader (task {self.info.task!r}); "
                             "number reading needs a reader model")
        self.batch_size = batch_size
        self.min_confidence = min_confidence
        self.phases = self.info.stride if all_phases else 1

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
        for k, (_, row) in enumerate(flat):  # the width of a row's widest phase sets its bucket
            buckets.setdefault(-(-(row.pixels.shape[1] + self.phases - 1) // BUCKET), []).append(k)
        digits: dict[int, list[Prediction]] = {}
        for members in buckets.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                views = [np.pad(flat[k][1].pixels, ((0, 0), (shift, 0))) for shift in range(self.phases) for k in chunk]
                probs = self.probabilities(views)
                for j, k in enumerate(chunk):
                    digits[k] = self.best_phase([probs[j + shift * len(chunk)] for shift in range(self.phases)],
                                                flat[k][1])
        sure = {k for k, found in digits.items() if found and np.mean([d.confidence for d in found]) >= SURE_ROW}
        images_with_sure_rows = {flat[k][0] for k in sure}
        readings = [NumberReading() for _ in images]
        for k, (i, row) in enumerate(flat):
            if k in sure or (digits[k] and row.main and i not in images_with_sure_rows):
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

    def best_phase(self, probs: list[np.ndarray], row: RowImage) -> list[Prediction]:
        """The digits of the phase (``probs[shift]``: the row shifted right by ``shift`` columns) whose
        string all phases together find likeliest."""
        peaks = [self.peaks(p) for p in probs]
        strings = [tuple(cls for cls, _ in found) for found in peaks]
        candidates = list(dict.fromkeys(strings))  # ties go to the earlier phase
        best = candidates[0]
        if len(candidates) > 1:
            logs = [np.log(np.maximum(p, 1e-30)) for p in probs]
            best = max(candidates, key=lambda s: sum(ctc_log_likelihood(lp, s, self.info.blank) for lp in logs))
        shift = strings.index(best)
        return self.digits(probs[shift], peaks[shift], row, shift)

    def peaks(self, probs: np.ndarray) -> list[tuple[int, int]]:
        """Greedy CTC decoding: (class, step of its highest probability) per digit read."""
        best = probs.argmax(axis=1)
        found = []
        start = 0
        for t in range(1, len(best) + 1):
            if t < len(best) and best[t] == best[start]:
                continue
            cls = int(best[start])
            if cls != self.info.blank:
                peak = start + int(probs[start:t, cls].argmax())
                if probs[peak, cls] >= self.min_confidence:
                    found.append((cls, peak))
            start = t
        return found

    def digits(self, probs: np.ndarray, peaks: list[tuple[int, int]], row: RowImage, shift: int) -> list[Prediction]:
        """A confidence and a box per digit. A digit wins only a step or two (CTC's peaks), so its box is the
        ink between the midpoints to its neighbours' peaks."""
        centres = [(p + 0.5) * self.info.stride - shift for _, p in peaks]
        edges = [0.0, *((a + b) / 2 for a, b in zip(centres, centres[1:])), float(row.pixels.shape[1])]
        return [Prediction(self.info.classes[cls], cls, float(probs[peak, cls]), probs[peak, :self.info.blank].copy(),
                           row.box(edges[k], edges[k + 1]))
                for k, (cls, peak) in enumerate(peaks)]


def ctc_log_likelihood(log_probs: np.ndarray, labels: tuple[int, ...], blank: int) -> float:
    """log p(labels | frames) under CTC: the forward algorithm over ``log_probs`` [steps, classes]."""
    states = np.full(2 * len(labels) + 1, blank)
    states[1::2] = labels
    # A path may skip a blank between two different labels, never between two equal ones.
    skip = np.zeros(len(states), bool)
    skip[3::2] = np.asarray(labels[1:]) != np.asarray(labels[:-1])
    alpha = np.full(len(states), -np.inf)
    alpha[:2] = log_probs[0, states[:2]]
    for frame in log_probs[1:]:
        into = alpha.copy()  # each state is reached from itself, the state before, or (skip) two before
        into[1:] = np.logaddexp(into[1:], alpha[:-1])
        into[2:] = np.where(skip[2:], np.logaddexp(into[2:], alpha[:-2]), into[2:])
        alpha = into + frame[states]
    return float(np.logaddexp.reduce(alpha[-2:]))
