"""benchmarks.latency runs end to end and writes well-formed output. No test here asserts a speed.

The models are made in the test from a small synthetic dataset (an untrained-looking but
real checkpoint, exported and quantized by the export commands), so the test needs neither
MNIST nor shipped models.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import make_checkpoint, save
from train.models import build_model

REPO = Path(__file__).resolve().parents[1]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORMAT_KEYS = {"torch_eager", "torch_compiled", "ort_fp32", "ort_int8"}


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, write_dataset) -> tuple[Path, Path]:
    """best.pt, digits-fp32.onnx and digits-int8.onnx of a small edge model, and the data they were checked on."""
    root = tmp_path_factory.mktemp("latency")
    data = write_dataset(root / "data")
    torch.manual_seed(0)
    model = build_model("edge", widths=(8, 16, 32)).eval()
    ckpt = make_checkpoint(model, "edge", {"widths": [8, 16, 32]}, mean=0.13, std=0.31,
                           classes=[str(d) for d in range(10)], dataset="mnist", train_config={},
                           metrics={"test_accuracy": 0.1})
    ckpt["versions"] = {k: str(v) for k, v in ckpt["versions"].items()}  # plain strings: loadable with weights_only
    models = root / "models"
    models.mkdir()
    save(ckpt, models / "best.pt")
    steps = [("export.to_onnx", str(models / "best.pt"), "-o", str(models / "digits-fp32.onnx")),
             # an untrained model's argmax is fragile under quantization: agreement is not what is tested here
             ("export.quantize", str(models / "digits-fp32.onnx"), "-o", str(models / "digits-int8.onnx"),
              "--calibration-size", "100", "--min-agreement", "0")]
    for step in steps:
        done = run_module(*step, "--data-dir", str(data))
        assert done.returncode == 0, done.stderr
    return models, data


def test_tiny_run_writes_table_json_and_png(model_dir, tmp_path):
    models, data = model_dir
    done = run_module("benchmarks.latency", "--tiny", "--model-dir", str(models), "--data-dir", str(data),
                      "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| format | threads | b1 p50 µs" in out and "| format | file | size | params |" in out
    for name in ("PyTorch eager", "ORT FP32", "ORT INT8", "Floors:"):
        assert name in out

    results = json.loads((tmp_path / "latency.json").read_text())
    assert {"machine", "peak", "formats", "floors", "compiled", "notes", "checkpoint"} <= set(results)
    assert {f["key"] for f in results["formats"]} == FORMAT_KEYS
    for f in results["formats"]:
        assert f["macs_per_image"] > 0 and f["parameters"] > 0 and 0 <= f["accuracy"] <= 1
        for timing in f["timings"].values():
            assert {"p50", "p90", "p99"} <= set(timing["latency_us"])
            assert {"1", "64", "256", "1024"} == set(timing["throughput"])
    assert len(results["floors"]) >= 4 and all("met" in c for c in results["floors"])
    assert results["accuracy_subset"] is False  # the synthetic test split (200 images) is used whole
    assert (tmp_path / "latency.png").read_bytes()[:8] == PNG_MAGIC


def test_missing_int8_model_is_skipped_not_fatal(model_dir, tmp_path):
    models, data = model_dir
    done = run_module("benchmarks.latency", "--tiny", "--threads", "1", "--checkpoint", str(models / "best.pt"),
                      "--fp32", str(models / "digits-fp32.onnx"), "--int8", str(tmp_path / "absent.onnx"),
                      "--data-dir", str(data), "--json-out", str(tmp_path / "r.json"),
                      "--png-out", str(tmp_path / "r.png"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert "ort_int8" not in {f["key"] for f in results["formats"]}
    assert any("INT8" in n for n in results["notes"])
    assert "n/a" in done.stdout


def test_missing_checkpoint_is_one_line_error(tmp_path):
    done = run_module("benchmarks.latency", "--tiny", "--checkpoint", str(tmp_path / "nope.pt"),
                      "--out-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1


def test_default_models_are_the_shipped_files_and_their_checkpoint(tmp_path, monkeypatch):
    """Right after install (no runs/): the shipped ONNX files and checkpoints/digits.pt, with no warning that
    they are different models."""
    from benchmarks import latency
    from export.pipeline import CLASSIFIER_CHECKPOINT

    monkeypatch.setattr(latency, "RUNS_DIR", tmp_path)  # no runs/*/best.pt to find
    files = latency.resolve_models(latency.parse_args([]))
    assert files.checkpoint == CLASSIFIER_CHECKPOINT and {"fp32", "int8"} <= set(files.onnx)
    assert not [n for n in files.notes if n.startswith("WARNING")]


def test_pareto_call_only_graph_has_a_classifier_s_input_and_output():
    import numpy as np
    import onnx
    import onnxruntime as ort

    from benchmarks.pareto import call_only_graph
    blob = call_only_graph()
    onnx.checker.check_model(onnx.load_from_string(blob), full_check=True)
    pixels = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    out, = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})
    assert out.shape == (3, 10)
    np.testing.assert_array_equal(out, pixels.reshape(3, -1)[:, :10])
