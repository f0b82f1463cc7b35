"""Typed errors of the runtime.

Library code raises these; only the command-line edge (``runtime.cli``)
catches them and turns them into one-line messages, so that API users can
tell a bad input from a bad model from a bug.
"""
from __future__ import annotations


class RuntimeInputError(Exception):
    """An input (file, array or frame) cannot be used: unreadable, corrupt,
    too small, too large, or holding no digit."""


class NoDigitFound(RuntimeInputError):
    """The image was read fine but holds no ink that looks like a digit.

    Kept as its own type because it is a normal outcome for a webcam frame,
    while for a file it is reported as an error (never a guess)."""


class ModelError(Exception):
    """The model file is missing, corrupt, or does not follow docs/FORMATS.md."""
