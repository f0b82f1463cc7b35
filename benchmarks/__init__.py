"""Benchmarks of the three stages, each run as ``python -m benchmarks.NAME``."""
from pathlib import Path

# The team's shared MNIST copy beside the repository: where the benchmarks look after --data-dir and $EDGE_DIGITS_DATA.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"
