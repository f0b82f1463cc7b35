"""./run.sh all from a fresh clone with no ../shared beside it: the data comes from $EDGE_DIGITS_DATA only."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def clone_layout(dest: Path) -> Path:
    """The files a clone has (tracked, plus new files git does not ignore), without runs, data or a venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_run_sh_all_runs_every_stage_without_shared(tmp_path, write_dataset):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to copy a clone's files from")
    clone = clone_layout(tmp_path / "clone")
    assert not (tmp_path / "shared").exists()
    # A learnable stand-in for MNIST, big enough for the recipe's 5,000 validation images and calibration.
    data = write_dataset(tmp_path / "mnist", n_train=6000, n_test=500)
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_DIGITS_DATA", "EDGE_DIGITS_MODEL")}
    env.update(EDGE_DIGITS_DATA=str(data), EDGE_DIGITS_PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=str(clone))
    result = subprocess.run(["./run.sh", "all", "--smoke"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((clone / "runs" / "main" / "parity.json").read_text())
    assert report["test_images"] == 500 and {"fp32", "int8"} <= set(report["models"])
    assert report["models"]["fp32"]["agreement_with_pytorch"] == 1.0
    latency = json.loads((clone / "benchmarks" / "results" / "latency.json").read_text())
    assert (clone / latency["checkpoint"]["path"]).resolve() == (clone / "runs" / "main" / "best.pt").resolve()
    assert not (clone / "data").exists(), "nothing may be downloaded when $EDGE_DIGITS_DATA has the files"
