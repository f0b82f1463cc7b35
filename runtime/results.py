"""What the runtime answers: a digit (Prediction) and a number read row by row (NumberReading)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """One digit: its label (a string from the model's ``classes``), the
    model's probability for it, all probabilities, and where it was."""

    label: str
    index: int
    confidence: float
    probabilities: np.ndarray
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the input image
    row: int = 0  # which row of the image (numbers only), top to bottom

    @property
    def digit(self) -> str:
        return self.label


@dataclass
class NumberReading:
    """The digits of an image, row by row (top to bottom), each left to right."""

    rows: list[list[Prediction]] = field(default_factory=list)

    @property
    def digits(self) -> list[Prediction]:
        return [d for row in self.rows for d in row]

    @property
    def numbers(self) -> list[str]:
        return ["".join(d.label for d in row) for row in self.rows]

    @property
    def number(self) -> str:
        """The rows' numbers, top to bottom, separated by a space."""
        return " ".join(self.numbers)

    @property
    def confidence(self) -> float:
        """Probability that every digit is right (product of confidences)."""
        return float(np.prod([d.confidence for d in self.digits])) if self.digits else 0.0


@dataclass
class Outcome:
    """One input of a batch: its answer, or the error (naming the input) that kept it from having one.
    A bad input never stops the others (DigitClassifier.classify)."""

    source: str | None                                 # the path; None for an image given as an array
    result: Prediction | NumberReading | None = None
    error: Exception | None = None  # RuntimeInputError (NoDigitFound among them), ModelError, or a bug as raised

    @property
    def ok(self) -> bool:
        return self.error is None


def digit_json(p: Prediction, box: bool = False) -> dict:
    """The JSON object of one digit (``classify --json``, the HTTP API)."""
    obj = {"digit": p.label, "confidence": round(p.confidence, 4)}
    if box:
        obj["box"] = list(p.box) if p.box is not None else None
    return obj


def number_json(r: NumberReading) -> dict:
    """The JSON object of a number: every row's number top to bottom (``number`` joins them with a
    space), and each digit with its confidence, box (x, y, w, h in the image) and row."""
    return {"number": r.number, "rows": r.numbers,
            "digits": [{"digit": d.label, "confidence": round(d.confidence, 4), "box": list(d.box), "row": d.row}
                       for d in r.digits]}
