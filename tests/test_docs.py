"""The README stays a user's page: under 15,000 bytes, and its Layout names every module of every package."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PACKAGES = ("train", "export", "runtime", "benchmarks")


def layout_rows() -> dict[str, str]:
    text = README.read_text()
    layout = text[text.index("## Layout"):]
    rows = {}
    for line in layout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].split("`")[1].rstrip("/")] = cells[1]
    return rows


def test_readme_is_short():
    assert README.stat().st_size < 15_000


@pytest.mark.parametrize("package", PACKAGES)
def test_layout_names_every_module(package):
    row = layout_rows()[package]
    modules = sorted(p.stem for p in (REPO / package).glob("*.py") if p.stem != "__init__" or package == "runtime")
    missing = [m for m in modules if f"`{m}`" not in row]
    assert not missing, f"README Layout, {package}/: no entry for {', '.join(missing)}"
