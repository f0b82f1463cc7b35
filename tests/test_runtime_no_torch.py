"""The runtime never imports torch: checked in fresh interpreters where any
attempt to import torch fails loudly, and torch is absent from sys.modules
at the end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

GUARD = r"""
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the runtime must not import torch (" + name + ")")
        return None

sys.meta_path.insert(0, NoTorch())
args = sys.argv[1:]
code = 0
if args and args[0] == "--import-only":
    import runtime, runtime.cli, runtime.webcam, runtime.reader, runtime.rows  # noqa: F401
else:
    sys.argv = ["runtime", *args]
    try:
        runpy.run_module("runtime", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
print("TORCH_LOADED" if any(m == "torch" or m.startswith("torch.") for m in sys.modules) else "NO_TORCH", code)
"""


def run_guarded(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", GUARD, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_importing_the_runtime_does_not_import_torch():
    result = run_guarded("--import-only")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NO_TORCH", "0"]


@pytest.mark.needs_model
@pytest.mark.parametrize("extra", [[], ["--number", "--json"]], ids=["digit", "number"])
def test_classify_command_does_not_import_torch(tmp_path, extra, encode, model_args):
    image = np.full((240, 320, 3), 220, np.uint8)
    image[60:180, 150:165] = 30  # a "1"
    path = tmp_path / "one.png"
    path.write_bytes(encode(image, ".png"))
    result = run_guarded("classify", str(path), *extra, *model_args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].split() == ["NO_TORCH", "0"], result.stdout + result.stderr
    if extra:
        assert json.loads(lines[0])["number"]


@pytest.mark.needs_model
def test_webcam_command_does_not_import_torch(tmp_path, model_args):
    import cv2

    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(4):
        frame = np.full((240, 320, 3), 220, np.uint8)
        frame[60:180, 100 + 10 * i:115 + 10 * i] = 30
        writer.write(frame)
    writer.release()
    result = run_guarded("webcam", "--source", str(video), "--no-display", "--output", str(tmp_path / "o.mp4"),
                         *model_args)
    assert result.stdout.split()[-2:] == ["NO_TORCH", "0"], result.stdout + result.stderr


@pytest.mark.needs_model
def test_a_jpeg_is_read_without_importing_pillow(tmp_path, encode, model_args):
    """Pillow checks the headers of other formats; a JPEG's frame size is read directly, which keeps Pillow's
    import (30-80 ms) out of a camera photo's cold start."""
    image = np.full((240, 320, 3), 220, np.uint8)
    image[60:180, 150:165] = 30
    path = tmp_path / "one.jpg"
    path.write_bytes(encode(image, ".jpg"))
    code = ("import sys, runtime; print(runtime.DigitClassifier(*sys.argv[1:-1]).classify_one(sys.argv[-1]).digit, "
            "any(m == 'PIL' or m.startswith('PIL.') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *model_args[1:], str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]
