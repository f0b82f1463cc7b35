"""The public classifier: images in, digits (or numbers) with confidences out."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ModelError, NoDigitFound, RuntimeInputError
from .imageio import decode_image, read_image_sized
from .model import load_session, softmax
from .preprocess import FINE_SIDE, WORK_SIDE, DigitCrop, preprocess_digit, viewed
from .results import NumberReading, Outcome, Prediction

DEFAULT_BATCH = 64
# Below this best-class probability a single digit is answered "no digit
# found" instead of a guess. Calibrated by ``python -m benchmarks.reject
# --n 100`` on the 400 digit photos of synth_photos seeds 1-4 (rejects 1 of
# them, 0.25%); seed 0, the benchmark's, is only measured (0 of 100 rejected).
# Blank paper and smooth gradients that pass the ink test answer 0.1-0.9, so
# the rule rejects only part of them (65% and 40% with the preprocessing).
DEFAULT_MIN_CONFIDENCE = 0.169
# A crop the model reads below this confidence is looked at again in a frame of paper (preprocess.FRAMED_SPAN).
# Photo seeds 1-2: 0.7 / 0.5 / never read 552 / 548 / 534 of 578 tight crops and 1,175 / 1,174 / 1,175 of the
# usual 1,200 photos, with a framed look for 12 / 10 / 8% of those (each costs about one more analysis).
UNSURE = 0.5


@dataclass(frozen=True)
class Upload:
    """An encoded image and its pixels as ``decode_upload`` gave them: ``classify`` reads it as a file holding
    the same bytes (decoded again with more pixels where the finer look needs them), boxes in those pixels."""

    data: bytes
    pixels: np.ndarray


ImageLike = np.ndarray | str | os.PathLike | Upload  # an image array, a file path, or an upload


class DigitClassifier:
    """Loads a model once and classifies images with it.

    >>> clf = DigitClassifier()                 # the shipped INT8 model, CPU/CUDA picked for you
    >>> clf.classify(["a.jpg", frame])          # one session call per batch; an Outcome per image
    >>> clf.read_number("house_number.jpg").number
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 device: str = "auto", batch_size: int = DEFAULT_BATCH, reader: str | os.PathLike | None = None,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError("min_confidence must be in [0, 1]")
        self.min_confidence = min_confidence
        self.session, self.info = load_session(model, threads=threads, device=device)
        if self.info.task != "classifier":
            raise ModelError(f"{self.info.path}: not a digit classifier (task {self.info.task!r})")
        self.batch_size = batch_size
        self._reader_args = (reader, threads, device)
        self._reader = None

    @property
    def reader(self):
        """The row reader for numbers (runtime.reader.NumberReader), loaded on first use."""
        if self._reader is None:
            from .reader import NumberReader  # keeps single-digit use light

            model, threads, device = self._reader_args
            self._reader = NumberReader(model, threads=threads, device=device)
        return self._reader

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def input_size(self) -> int:
        return self.info.input_size

    # -------------------------------------------------- low level

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for MNIST-style inputs [N, S, S] in
        [0, 1], light on dark; one session call per ``batch_size``."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[None]
        s = self.info.input_size
        if pixels.ndim != 3 or pixels.shape[1:] != (s, s):
            raise RuntimeInputError(f"expected pixels of shape [N, {s}, {s}], got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, len(self.info.classes)), np.float32)
        if self.info.polarity == "dark-on-light":
            pixels = 1.0 - pixels
        lo, hi = self.info.input_range
        feed = (lo + pixels * (hi - lo))[:, None].astype(np.float32)
        out = []
        for i in range(0, len(feed), self.batch_size):
            logits = self.session.run([self.info.output_name], {self.info.input_name: feed[i:i + self.batch_size]})[0]
            out.append(softmax(logits.astype(np.float64)).astype(np.float32))
        return np.concatenate(out)

    def predictions(self, crops: Sequence[DigitCrop],
                    views: Sequence[tuple[float, float]] = ()) -> list[Prediction]:
        """Classify already preprocessed crops, in one batch. A crop with
        alternative readings (uncertain ink polarity) gets the reading the
        model is surest of. ``views``: also classify each crop scaled and
        turned by these (scale, degrees) and average the probabilities."""
        if not crops:
            return []
        candidates = [(i, c) for i, crop in enumerate(crops) for c in (crop, *crop.alternatives)]
        inputs = [v for _, c in candidates for v in (c.pixels, *(viewed(c.pixels, *view) for view in views))]
        probs = self.predict_pixels(np.stack(inputs)).reshape(len(candidates), 1 + len(views), -1).mean(axis=1)
        best: dict[int, Prediction] = {}
        for (i, c), p in zip(candidates, probs):
            pred = self._prediction(p, c.box)
            if i not in best or pred.confidence > best[i].confidence:
                best[i] = pred
        return [best[i] for i in range(len(crops))]

    def checked(self, result: Prediction | NumberReading) -> Prediction | NumberReading:
        """The result if it can be given: ModelError when the model's output
        is not finite (a broken model; NaN is not an answer, nor valid JSON),
        NoDigitFound when a single digit is below ``min_confidence``."""
        digits = result.digits if isinstance(result, NumberReading) else [result]
        if not all(np.isfinite(d.probabilities).all() and np.isfinite(d.confidence) for d in digits):
            raise ModelError("the model's output is not finite (NaN or inf): the model file is broken")
        if isinstance(result, Prediction) and result.confidence < self.min_confidence:
            raise NoDigitFound(f"no digit found (best guess {result.label} at confidence {result.confidence:.2f}, "
                               f"below the minimum {self.min_confidence:.2f})")
        return result

    def _prediction(self, probs: np.ndarray, box=None) -> Prediction:
        i = int(np.argmax(probs))
        return Prediction(self.info.classes[i], i, float(probs[i]), probs, box)

    # -------------------------------------------------- images

    def preprocess(self, image: ImageLike) -> DigitCrop:
        """Read (if a path) and turn into the model's input."""
        pixels, shape = _load(image)
        try:
            return preprocess_digit(pixels, self.info.input_size, shape, _finer(image, pixels, shape), self._unsure)
        except NoDigitFound as e:  # read errors already name the file
            if isinstance(image, (str, os.PathLike)):
                raise NoDigitFound(f"{image}: {e}") from None
            raise

    def _unsure(self, crop: DigitCrop) -> bool:
        """Whether the model reads ``crop`` (its surest reading) below UNSURE confidence."""
        return self.predictions([crop])[0].confidence < UNSURE

    def classify(self, images: Iterable[ImageLike], number: bool = False) -> list[Outcome]:
        """Each image's digit (``number``: its rows of digits), one session call per batch; the one
        classify loop, shared by the command line and the benchmarks. An image that cannot be used
        (unreadable, no ink, no number, below ``min_confidence``, a non-finite output) gets its
        error, naming its path (an unexpected exception, a bug, is kept as raised); the others still
        get their answers."""
        images = list(images)
        outcomes = [Outcome(str(im) if isinstance(im, (str, os.PathLike)) else None) for im in images]
        prepared = []  # (outcome, crop or rows)
        for outcome, image in zip(outcomes, images):
            try:
                if number:
                    prepared.append((outcome, self.reader.rows(_load(image, number=True)[0])))
                else:
                    prepared.append((outcome, self.preprocess(image)))
            except RuntimeInputError as e:
                outcome.error = _named(e, outcome.source)
            except Exception as e:  # MemoryError, or a bug: it must not stop the other inputs; kept as it is,
                outcome.error = e   # so that a caller can tell it from a bad input (classify_one raises it)
        if number:
            results = self._read_rows_each(prepared)
        else:
            results = self.predictions([crop for _, crop in prepared])
        for (outcome, _), result in zip(prepared, results):
            if outcome.error is not None:
                continue
            if number and not result.rows:
                outcome.error = NoDigitFound(_name(outcome.source, "no number found"))
                continue
            try:  # a non-finite output, or a digit below min_confidence, is an error for its input
                outcome.result = self.checked(result)
            except (RuntimeInputError, ModelError) as e:
                outcome.error = _named(e, outcome.source)
        return outcomes

    def _read_rows_each(self, prepared: list) -> list[NumberReading]:
        """All images' rows in as few session calls as possible; if the model's output is not finite
        (a broken model), each image again on its own, so the error is told per input."""
        try:
            return self.reader.read_rows([rows for _, rows in prepared])
        except ModelError:
            results = []
            for outcome, rows in prepared:
                try:
                    results.append(self.reader.read_rows([rows])[0])
                except ModelError as e:
                    outcome.error = _named(e, outcome.source)
                    results.append(NumberReading())
            return results

    def classify_one(self, image: ImageLike) -> Prediction:
        """One image's digit; raises its error (RuntimeInputError, NoDigitFound, ModelError)."""
        outcome, = self.classify([image])
        if outcome.error is not None:
            raise outcome.error
        return outcome.result

    def read_number(self, image: ImageLike) -> NumberReading:
        """Read a row of digits left to right."""
        return self.read_numbers([image])[0]

    def read_numbers(self, images: Iterable[ImageLike]) -> list[NumberReading]:
        """Each image's rows of digits, read by the row reader."""
        return self.reader.read([_load(im, number=True)[0] for im in images])


def _name(source: str | None, message: str) -> str:
    return message if source is None or message.startswith(source) else f"{source}: {message}"


def _named(error: Exception, source: str | None) -> Exception:
    """The same error, its message starting with the input's path (read errors name it already)."""
    message = _name(source, str(error))
    return error if message == str(error) else type(error)(message)


def decode_upload(data: bytes, number: bool = False) -> np.ndarray:
    """Encoded image bytes decoded as ``classify`` decodes a file that holds them (grey; a large JPEG
    reduced to the side its mode's analysis works at), so that a server reads an upload as the command
    line reads the file (classify ``Upload(data, pixels)`` for a digit). Boxes are in its pixels."""
    return decode_image(data, grey=True, min_side=_decode_side(number))


def _decode_side(number: bool) -> int | None:
    """The long side a file or an upload is decoded to (a large JPEG is reduced): single digits are analysed at
    WORK_SIDE; numbers are decoded at the decoder's default (imageio.JPEG_REDUCE_TARGET)."""
    return None if number else WORK_SIDE


def _finer(image: ImageLike, pixels: np.ndarray, shape: tuple[int, int] | None):
    """What decodes a file or an upload again with FINE_SIDE pixels or more when it was decoded reduced
    (preprocess_digit's finer look at small writing), or None. An upload's boxes stay in its first pixels."""
    if isinstance(image, Upload) and max(pixels.shape[:2]) < FINE_SIDE:
        return lambda: (decode_image(image.data, grey=True, min_side=FINE_SIDE), pixels.shape[:2])
    if isinstance(image, (str, os.PathLike)) and pixels.shape[:2] != shape:
        return lambda: read_image_sized(image, grey=True, min_side=FINE_SIDE)
    return None


def _load(image: ImageLike, number: bool = False) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The image's pixels, and the (H, W) of the full-size image when a file was decoded reduced
    (None for an array). ``number``: decoded for reading numbers (``_decode_side``)."""
    if isinstance(image, np.ndarray):
        return image, None
    if isinstance(image, Upload):
        return image.pixels, None
    if isinstance(image, (str, os.PathLike)):
        # The analysis of digits and numbers uses luminance only.
        return read_image_sized(image, grey=True, min_side=_decode_side(number))
    raise RuntimeInputError(f"expected an image array or a path, got {type(image).__name__}")
