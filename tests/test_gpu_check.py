"""benchmarks/gpu_check.py: it skips cleanly without CUDA, and every step of it runs (on the CPU, tiny)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # no GPU, even on a machine with one
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--json-out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # seconds when not starved of CPU
    assert done.returncode == 0, done.stderr
    assert "no CUDA device here" in done.stdout and "nothing measured" in done.stdout
    assert json.loads(out.read_text())["skipped"] == "no CUDA device"


def test_smoke_run_goes_through_every_step_on_the_cpu(tmp_path, write_dataset):
    from benchmarks.gpu_check import main
    data = write_dataset(tmp_path / "data", n_train=2600, n_test=300)
    out = tmp_path / "smoke.json"
    assert main(["--smoke", "--data-dir", str(data), "--out", str(tmp_path / "runs"), "--json-out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["train"]["test_accuracy"] > 0.9 and r["train"]["time_to_99_seconds"] is not None
    assert r["export"]["fp32_cpu_parity"]["agreement"] == 1.0
    engines = r["inference"]["engines"]
    assert set(engines) == {"ort_fp32_CPUExecutionProvider", "ort_fp16_CPUExecutionProvider", "torch_fp32_cpu",
                            "torch_bf16_cpu"}
    assert r["inference"]["images"] == 300
    for name, row in engines.items():
        assert row["parity"]["agreement"] > 0.99, name
        assert row["latency_ms"]["median"] > 0 and row["throughput_images_per_second"] > 0
    # float32 engines match PyTorch's float32 logits; half precisions only roughly
    assert engines["ort_fp32_CPUExecutionProvider"]["parity"]["max_abs_diff"] < 1e-4
    assert engines["torch_fp32_cpu"]["parity"]["max_abs_diff"] < 1e-4
