"""Benchmarks of the three stages, each run as ``python -m benchmarks.NAME``."""
