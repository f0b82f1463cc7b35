"""Errors of the export stage. Each message names the file and the problem in one line.

Checkpoint and dataset problems keep their own types from train/
(`CheckpointError`, `DataError`); everything else the export stage finds
wrong is an `ExportError`.
"""
from __future__ import annotations


class ExportError(Exception):
    """An ONNX file is unreadable or invalid, or a written model fails its checks."""


class VerificationError(ExportError):
    """A freshly written model disagrees with the model it was made from."""
