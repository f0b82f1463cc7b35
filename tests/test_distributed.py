"""Several training processes on this CPU (Gloo): launcher, equivalence with one
process, kill and resume, two simulated nodes. Every process runs under a
timeout and is killed if it outlives it: a broken collective fails a test, it
never hangs the suite."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.serve_load import free_port
from train import checkpoint, distributed
from train.models import build_model

REPO = Path(__file__).resolve().parents[1]


# Seconds for one launch: a bound on a hang only; a healthy one takes 10-20 s (280 s seen on a starved machine).
TIMEOUT = 600
SMALL = ["--no-download", "--val-size", "100", "--eval-interval", "5"]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                         "MASTER_PORT")}
    return {**e, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def start(cmd: list[str], **extra) -> subprocess.Popen:
    # A new session: on a timeout the process and everything it started are killed together.
    return subprocess.Popen(cmd, cwd=REPO, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return results


def train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "train", *args]


def sane(path, data_accuracy=0.9) -> dict:
    """The checkpoint loads with weights_only=True, rebuilds its model and learnt the bars."""
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "edge-digits-checkpoint"
    model = checkpoint.load_model(checkpoint.load(path))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert raw["metrics"]["test_accuracy"] > data_accuracy
    return raw


def test_batches_split_over_processes_without_gaps_or_repeats():
    idx = torch.arange(10)
    parts = [distributed.my_share(idx, distributed.World(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)
    # DDP averages the three gradients of the mean losses times `share`: every image then weighs 1/10.
    assert [share / len(p) / 3 for p, share in parts] == pytest.approx([1 / 10] * 3)
    assert [share for _, share in parts] == pytest.approx([12 / 10, 9 / 10, 9 / 10])
    assert distributed.steps_per_epoch(65, 32, distributed.World(0, 2)) == 2   # last batch of 1 < 2 processes: dropped
    assert distributed.steps_per_epoch(66, 32, distributed.World(0, 2)) == 3
    assert distributed.steps_per_epoch(65, 32, distributed.World()) == 3
    assert distributed.steps_per_epoch(64, 32, distributed.World(0, 2)) == 2
    with pytest.raises(ValueError, match="global batch"):
        distributed.steps_per_epoch(100, 2, distributed.World(0, 4))


def test_more_processes_than_gpus_stops_every_rank(monkeypatch):
    """Rank 0 has a GPU but must stop too: it would otherwise wait for rank 1 in the rendezvous (a hang on one GPU)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    world = distributed.from_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="2 processes on this node and 1 GPU"):
        distributed.device_for(world, torch.device("cuda"))
    distributed.check_gpus(4, torch.device("cpu"))  # CPU processes need no GPU
    two_nodes = distributed.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    assert distributed.device_for(two_nodes, torch.device("cuda")) == torch.device("cuda", 0)


# Trains with BatchNorm replaced by Identity and no dropout: each process's
# BatchNorm normalises with its own half of the batch, so only without it are
# two processes at batch B the same computation as one at batch 2B.
EQUIVALENCE = """
import sys, torch
from pathlib import Path
from train import trainer
from train.config import TrainConfig
from train.models import build_model

def no_batchnorm(*args, **kwargs):
    model = build_model(*args, **kwargs)
    for seq in (model.features, model.classifier):
        for i, m in enumerate(seq):
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
                seq[i] = torch.nn.Identity()
    return model

trainer.build_model = no_batchnorm
trainer.train(TrainConfig(data_dir=sys.argv[1], out_dir=sys.argv[2], download=False, epochs=1, batch_size=32,
                          lr=3e-3, schedule="constant", val_size=100, eval_interval=1000, train_subset=256))
"""


def test_two_ranks_at_batch_b_match_one_process_at_batch_2b(tmp_path, write_dataset):
    data = write_dataset(tmp_path / "data", n_train=400)
    port = str(free_port())
    two = [start([sys.executable, "-c", EQUIVALENCE, str(data), str(tmp_path / "two")], RANK=str(r),
                 LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(2)]
    one = start([sys.executable, "-c", EQUIVALENCE, str(data), str(tmp_path / "one")])
    for code, out in finish([*two, one]):
        assert code == 0, out[-2000:]
    a = torch.load(tmp_path / "one" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "best.pt", weights_only=True)
    assert a["metrics"]["iterations"] == b["metrics"]["iterations"] == 8  # 256 images, global batch 32
    torch.manual_seed(0)  # the initial weights, as the trainer builds them
    initial = build_model("edge", widths=[16, 32, 64]).state_dict()
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, w in a["state_dict"].items():
        assert not torch.allclose(w, initial[k], rtol=1e-3), f"{k}: 8 steps did not move it"
        # 1e-5 relative, to the tensor's scale: an element near 0 has no relative error to speak of
        assert (b["state_dict"][k] - w).abs().max() <= 1e-5 * w.abs().max(), k
    assert a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]


def test_killed_two_process_run_resumes_on_one_without_losing_data(tmp_path, write_dataset):
    data = write_dataset(tmp_path / "data", n_train=400)  # 300 training images: 10 steps of 32 an epoch
    out = tmp_path / "run"
    args = ["--data-dir", str(data), *SMALL, "--batch-size", "32", "--epochs", "20", "--out", str(out)]
    launcher = start(train_cmd("--nproc", "2", *args))
    seen = []
    try:
        for line in launcher.stdout:  # the recipe line: both processes are past setup, with their signal handlers
            seen.append(line)
            if "recipe:" in line:
                break
        launcher.send_signal(signal.SIGTERM)
    finally:
        (code, rest), = finish([launcher])
    log = "".join(seen) + rest
    assert code != 0 and "state saved to" in log, log[-3000:]
    assert (out / "resume.pt").exists() and not (out / "best.pt").exists()
    stopped_at = torch.load(out / "resume.pt", weights_only=True)["progress"]["iteration"]
    assert 0 < stopped_at < 200

    (code, log), = finish([start(train_cmd("--resume", "--out", str(out)))])  # one process now
    assert code == 0, log[-3000:]
    assert f"resuming from {out / 'resume.pt'} at iteration {stopped_at}" in log
    raw = sane(out / "best.pt")
    assert raw["metrics"]["iterations"] == 200 and not (out / "resume.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    # No step lost or repeated across the cut: a loss point every 10 iterations, an evaluation every 5.
    assert [p["iteration"] for p in metrics["train"]] == list(range(10, 201, 10))
    assert [p["iteration"] for p in metrics["eval"]] == list(range(5, 201, 5))


def test_two_nodes_on_localhost_train_through_one_rendezvous(tmp_path, write_dataset):
    data = write_dataset(tmp_path / "data", n_train=600)
    out = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [start([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                    "--node-rank", str(i), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                    "--rdzv-id", "test", "--rdzv-conf", f"is_host={i == 0},join_timeout=60", "--max-restarts", "0",
                    "-m", "train", "--data-dir", str(data), *SMALL, "--batch-size", "32", "--epochs", "2",
                    "--out", str(out)]) for i in range(2)]
    results = finish(nodes)
    for code, log in results:
        assert code == 0, log[-3000:]
    assert "2 processes on cpu (global batch 32, ~16 each)" in results[0][1] + results[1][1]
    raw = sane(out / "best.pt")
    assert raw["metrics"]["iterations"] == 2 * 16  # 500 images: 16 batches of 32 an epoch


def test_nproc_under_torchrun_is_refused(capsys, monkeypatch):
    from train.__main__ import main
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--nproc", "2"]) == 1
    assert "leave it out under torchrun" in capsys.readouterr().err


def test_speed_benchmark_puts_world_sizes_side_by_side(tmp_path, write_dataset):
    # Machinery only (tiny data, threshold 0): the real figures come from the full run on MNIST.
    from benchmarks.train_speed import main as bench_main
    from runtime.model import usable_cores
    data = write_dataset(tmp_path / "data", n_train=400)
    out = tmp_path / "bench.json"
    assert bench_main(["--nproc", "1", "2", "--threshold", "0", "--json-out", str(out), "--out", str(tmp_path / "runs"),
                       "--data-dir", str(data), *SMALL, "--batch-size", "32", "--epochs", "1"]) == 0
    rows = json.loads(out.read_text())
    cores = usable_cores()
    assert [(r["recipe"], r["processes"], r["threads_per_process"]) for r in rows] == \
        [("fast", 1, cores), ("fast", 2, max(1, cores // 2))]
    assert rows[0]["epochs"] == rows[1]["epochs"] == 1
    for r in rows:
        assert r["images_per_second"] > 0 and r["time_to_threshold"] is not None
