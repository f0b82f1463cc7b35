import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from train import checkpoint, trainer
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.data import NOT_A_DIGIT
from train.models import build_model, count_parameters

REPO = Path(__file__).resolve().parents[1]


class TutorialCNN(torch.nn.Module):
    """The tutorial's network written out as the tutorial writes it: named layers, activations in forward."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(1, 5, 3, padding=1)
        self.conv2, self.bn2 = nn.Conv2d(5, 10, 3, padding=1), nn.BatchNorm2d(10)
        self.conv3, self.bn3 = nn.Conv2d(10, 20, 3, padding=1), nn.BatchNorm2d(20)
        self.conv4, self.bn4 = nn.Conv2d(20, 40, 3, padding=1), nn.BatchNorm2d(40)
        self.fc1, self.fc2, self.fc3 = nn.Linear(40 * 7 * 7, 200), nn.Linear(200, 500), nn.Linear(500, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        relu, pool = torch.relu, torch.nn.functional.max_pool2d
        x = relu(self.conv1(x))
        x = pool(relu(self.bn2(self.conv2(x))), 2)
        x = relu(self.bn3(self.conv3(x)))
        x = pool(relu(self.bn4(self.conv4(x))), 2)
        x = self.dropout(relu(self.fc1(x.flatten(1))))
        return self.fc3(relu(self.fc2(x)))


def test_seed_model_is_the_tutorials_architecture():
    torch.manual_seed(0)
    seed, tutorial = build_model("seed"), TutorialCNN()
    assert count_parameters(seed) == count_parameters(tutorial) == 507_420
    # Layer for layer: the same parameter and buffer shapes in the same order...
    ours, theirs = seed.state_dict(), tutorial.state_dict()
    assert [tuple(t.shape) for t in ours.values()] == [tuple(t.shape) for t in theirs.values()]
    # ...and the same function: with the seed's weights (BatchNorm statistics made non-trivial first),
    # the tutorial's forward pass gives the seed's logits.
    with torch.no_grad():
        for module in seed.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    tutorial.load_state_dict(dict(zip(theirs, ours.values())))
    seed.eval(), tutorial.eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(seed(x), tutorial(x), atol=1e-6)
    assert seed(x).shape == (8, 10)


@pytest.mark.parametrize("recipe", ["fast", "best", "small", "accurate"])
def test_edge_models_are_small_and_shaped(recipe):
    cfg = TrainConfig.from_recipe(recipe)
    model = build_model(cfg.arch, **cfg.arch_config)
    assert count_parameters(model) < 1_000_000
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_model("nope")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_dir, small_config) -> tuple[Path, dict]:
    """One short run of the fast recipe (its directory and summary), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("short")
    return out, trainer.train(small_config(out, mnist_dir))


def test_short_run_learns_and_writes_every_artifact(short_run):
    tmp_path, summary = short_run
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    losses = [p["loss"] for p in metrics["train"]]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    assert summary["test_accuracy"] > 0.85  # 3,000 images, 60 steps: far above chance, far below the real run
    ckpt = checkpoint.load(tmp_path / "best.pt")
    assert ckpt["arch"] == "edge" and ckpt["classes"] == [str(d) for d in range(10)]
    assert ckpt["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert set(ckpt["versions"]) == {"python", "torch", "torchvision"}
    model = checkpoint.load_model(ckpt)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    for png in ("curves.png", "confusion.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "resume.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupt_then_resume_gives_the_same_weights(tmp_path, mnist_dir, monkeypatch, small_config, short_run):
    """Cut at iteration 40 and resumed, the run ends with the uninterrupted short run's weights, bit for bit."""
    full_dir, full = short_run

    real_evaluate = trainer.evaluate

    def evaluate_then_signal(cfg, model, splits, device, progress):
        improved = real_evaluate(cfg, model, splits, device, progress)
        if progress.iteration == 40:  # mid-epoch: the batch order must survive too
            os.kill(os.getpid(), signal.SIGINT)
        return improved

    monkeypatch.setattr(trainer, "evaluate", evaluate_then_signal)
    cfg = small_config(tmp_path / "cut", mnist_dir)
    with pytest.raises(trainer.Interrupted, match="SIGINT at iteration 40"):
        trainer.train(cfg)
    assert (tmp_path / "cut" / "resume.pt").exists() and not (tmp_path / "cut" / "best.pt").exists()
    monkeypatch.setattr(trainer, "evaluate", real_evaluate)
    resumed = trainer.train(cfg, resume=True)

    a = torch.load(full_dir / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["iterations"] == full["iterations"] and resumed["test_accuracy"] == full["test_accuracy"]


def test_resume_refuses_command_line_settings_it_would_drop(tmp_path):
    from train.__main__ import given_on_command_line

    saved = asdict(TrainConfig.from_recipe("fast", device="cpu"))
    cfg = TrainConfig.from_recipe("fast", device="cuda", lr=0.5)
    argv = ["--resume", "--out", "runs/x", "--lr", "0.5", "--widths", "8", "8", "8", "--device", "cuda", "--seed", "0"]
    given = given_on_command_line(argv)
    assert given == {"lr": 0.5, "widths": [8, 8, 8], "device": "cuda", "seed": 0}
    changed = r"--lr 0.5 \(the run has 0.01\); --widths \[8, 8, 8\] \(the run has \[16, 32, 64\]\)"
    with pytest.raises(ValueError, match=changed):
        trainer.resumed_config(saved, given, cfg, tmp_path / "resume.pt")
    # the same values, and a new device: taken, the device from the command line
    resumed = trainer.resumed_config(saved, {"lr": saved["lr"], "device": "cuda", "seed": 0}, cfg, tmp_path)
    assert resumed == TrainConfig(**{**saved, "device": "cuda"})


def test_crash_during_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "best.pt"

    def half_written_then_killed(obj, f):
        open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_written_then_killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"x": torch.zeros(3)}, target)
    assert list(tmp_path.iterdir()) == []


def test_sigkill_during_save_never_exposes_a_partial_checkpoint(tmp_path):
    target = tmp_path / "best.pt"
    code = (
        "import sys, time, torch\n"
        "from train import checkpoint\n"
        "def slow(obj, f):\n"
        "    open(f, 'wb').write(b'partial'); print('writing', flush=True); time.sleep(60)\n"
        "torch.save = slow\n"
        f"checkpoint.save({{}}, {str(target)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert not target.exists()


def test_other_datasets_in_the_same_format_train(tmp_path, write_dataset):
    data = write_dataset(tmp_path / "data", n_train=1200)
    out = tmp_path / "out"
    code = train_main(["--dataset", "fashion-mnist", "--data-dir", str(data), "--no-download", "--epochs", "2",
                       "--val-size", "200", "--eval-interval", "5", "--out", str(out)])
    assert code == 0
    ckpt = checkpoint.load(out / "best.pt")
    assert ckpt["dataset"] == "fashion-mnist" and ckpt["classes"][0] == "T-shirt/top"
    assert ckpt["metrics"]["test_accuracy"] > 0.9  # the bars are easy to tell apart


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys, write_dataset):
    data = write_dataset(tmp_path)
    (data / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    assert train_main(["--data-dir", str(data), "--no-download", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train-labels-idx1-ubyte" in err and "bad magic" in err


def test_bad_checkpoint_files_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="junk.pt: not a readable checkpoint"):
        checkpoint.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "edge-digits-checkpoint", "format_version": 1, "arch": "resnet"}, other)
    with pytest.raises(checkpoint.CheckpointError, match="unknown architecture 'resnet'"):
        checkpoint.load(other)
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "absent.pt")


def test_training_benchmark_compares_recipes_in_one_run(tmp_path, mnist_dir):
    # Machinery only (tiny subset, threshold 0 so that the first evaluation counts): real figures need the full run.
    from benchmarks.train_speed import main as bench_main
    out = tmp_path / "bench.json"
    assert bench_main(["--recipes", "reference", "fast", "--threshold", "0", "--eval-interval", "5",
                       "--json-out", str(out), "--out", str(tmp_path / "runs"),
                       "--data-dir", str(mnist_dir), "--train-subset", "400", "--val-size", "200",
                       "--epochs", "1", "--no-download"]) == 0
    rows = json.loads(out.read_text())
    assert [r["recipe"] for r in rows] == ["reference", "fast"]
    for r in rows:
        # both rounded
        assert r["time_to_threshold"] is not None and r["time_to_threshold"] <= r["train_seconds"] + 0.01
        assert 0 <= r["other_load"] <= 1


def test_photo_crops_teach_what_the_training_split_lacks(tmp_path, write_dataset, write_idx, small_config):
    # The training split holds classes 0-4 only; classes 5-9 are only in
    # the two photo-crops files. Telling them apart on the test split
    # proves the crops of both reach the batches with their labels.
    import numpy as np

    from train.idx import load_split

    data = write_dataset(tmp_path / "data", n_train=1000)
    images, labels = load_split(data, "train")
    low = labels < 5
    write_idx(data / "train-images-idx3-ubyte", images[low])
    write_idx(data / "train-labels-idx1-ubyte", labels[low])
    files = []
    for name, pick in (("a.npz", labels >= 8), ("b.npz", ~low & (labels < 8))):  # 8-9 in one file, 5-7 in the other
        np.savez(tmp_path / name, images=images[pick], labels=labels[pick].astype(np.int64))
        files.append(str(tmp_path / name))
    cfg = small_config(tmp_path / "out", data, train_subset=0, val_size=100, epochs=3, augment=False,
                       photo_crops=files, photo_share=1.0)
    trainer.train(cfg)
    model = checkpoint.load_model(checkpoint.load(tmp_path / "out" / "best.pt")).eval()
    test_x, test_y = load_split(data, "test")
    high = test_y >= 5
    x = torch.from_numpy(test_x[high]).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    accuracy = (model(x).argmax(1).numpy() == test_y[high]).mean()
    assert accuracy > 0.8, accuracy


def test_photo_crops_that_are_no_digit_are_trained_toward_doubt(tmp_path, write_dataset, small_config):
    # Crops labelled -1 (pieces that are no digit) must leave the model
    # unsure of their kind (left halves of digits, here), which the same run
    # without them is fairly sure of.
    import numpy as np

    from train.idx import load_split

    data = write_dataset(tmp_path / "data", n_train=1000)
    images, labels = load_split(data, "train")
    scribbles = np.where(np.arange(28) < 14, images[200:800], 0).astype(np.uint8)
    crops = tmp_path / "crops.npz"
    np.savez(crops, images=np.concatenate([images[:200], scribbles[:400]]),
             labels=np.concatenate([labels[:200].astype(np.int64), np.full(400, -1)]))
    held_out = torch.from_numpy(scribbles[400:]).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    sureness = {}
    for name, extra in (("with", dict(photo_crops=[str(crops)], photo_share=0.5)), ("without", {})):
        cfg = small_config(tmp_path / name, data, train_subset=0, val_size=100, epochs=2, augment=False, **extra)
        trainer.train(cfg)
        model = checkpoint.load_model(checkpoint.load(tmp_path / name / "best.pt")).eval()
        with torch.no_grad():
            sureness[name] = model(held_out).softmax(1).max(1).values.mean().item()
    assert sureness["with"] < 0.3 < sureness["without"], sureness


def test_bad_photo_crops_file_is_named(tmp_path, capsys, write_dataset):
    data = write_dataset(tmp_path / "data")
    bad = tmp_path / "crops.npz"
    bad.write_bytes(b"not an npz")
    assert train_main(["--data-dir", str(data), "--no-download", "--val-size", "100", "--photo-crops", str(bad),
                       "--photo-share", "0.3", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "crops.npz: not a photo-crops file" in err
    # Files without a share of the batch would be silently unused.
    assert train_main(["--data-dir", str(data), "--no-download", "--val-size", "100", "--photo-crops", str(bad),
                       "--out", str(tmp_path / "o")]) == 1
    assert "--photo-crops and --photo-share go together" in capsys.readouterr().err


def test_init_starts_from_the_checkpoints_weights(tmp_path, write_dataset, small_config):
    data = write_dataset(tmp_path / "data", n_train=1200)
    base = small_config(tmp_path / "a", data, train_subset=0, val_size=200, epochs=2)
    first = trainer.train(base)
    assert first["test_accuracy"] > 0.9
    # A learning rate too small to learn anything: only the initial weights can make it accurate.
    frozen = dict(train_subset=0, val_size=200, epochs=1, lr=1e-9, augment=False)
    scratch = trainer.train(small_config(tmp_path / "b", data, **frozen))
    tuned = trainer.train(small_config(tmp_path / "c", data, init=str(tmp_path / "a" / "best.pt"), **frozen))
    assert scratch["test_accuracy"] < 0.5 < 0.9 < tuned["test_accuracy"]
    with pytest.raises(ValueError, match="--init checkpoint is edge"):
        trainer.train(small_config(tmp_path / "d", data, init=str(tmp_path / "a" / "best.pt"), arch="seed",
                                   arch_config={}))


# --- no tracebacks, no leftovers ------------------------------------------------------------


def test_resume_from_a_best_pt_is_named_not_a_keyerror(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    model = build_model("edge")
    ckpt = checkpoint.make_checkpoint(model, "edge", {}, mean=0.1, std=0.3, classes=[str(d) for d in range(10)],
                                      dataset="mnist", train_config={}, metrics={})
    checkpoint.save(ckpt, out / "resume.pt")
    assert train_main(["--resume", "--out", str(out), "--no-download"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "resume.pt" in err and "not a resume state" in err


def test_failed_download_is_one_line_and_leaves_no_empty_folders(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(root, *args, **kwargs):  # as torchvision does: make the folder, then fail to fill it
        os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3] no network>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_DIGITS_DATA", raising=False)
    assert train_main(["--download", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "download failed" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_stale_temporary_files_are_cleaned_at_start(tmp_path):
    from train.files import clean_stale_temps

    stale = [tmp_path / ".best.pt.abc123.tmp", tmp_path / ".confusion.png.x_y.tmp"]
    keep = [tmp_path / "best.pt", tmp_path / ".other.tmp", tmp_path / "notes.best.pt.1.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(clean_stale_temps(tmp_path, trainer.OUTPUTS)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """SIGTERM arriving inside atomic_output (outside the training loop's
    own handler) unwinds like Ctrl-C: the temporary file is removed."""
    script = (
        "import os, signal, sys, time\n"
        "from train.files import atomic_output, sigterm_as_interrupt\n"
        "try:\n"
        "    with sigterm_as_interrupt(), atomic_output(sys.argv[1]) as tmp:\n"
        "        tmp.write_bytes(b'half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "best.pt")], cwd=REPO, timeout=60)
    assert result.returncode == 130
    assert list(tmp_path.iterdir()) == []


# --- distillation -----------------------------------------------------------------------------

ACCURATE_INT8 = REPO / "runtime" / "models" / "digits-accurate-int8.onnx"


@pytest.mark.skipif(not ACCURATE_INT8.exists(), reason="no shipped accurate model")
def test_distillation_teaches_what_the_labels_do_not(tmp_path, mnist_dir, small_config, monkeypatch):
    """With every training label scrambled, only the teacher's soft targets can make the student read digits:
    distilled it does, trained on the labels alone it stays near chance. The teacher is trusted only where it
    reads the label (test below): here on the one row in ten whose scrambled label happens to be right."""
    load = trainer.load_splits

    def scrambled(*args, **kwargs):
        splits = load(*args, **kwargs)
        splits.train_y = splits.train_y[torch.randperm(len(splits.train_y), generator=torch.Generator().manual_seed(1))]
        return splits

    monkeypatch.setattr(trainer, "load_splits", scrambled)
    taught = trainer.train(small_config(tmp_path / "a", mnist_dir, teacher=str(ACCURATE_INT8), distill=1.0))
    alone = trainer.train(small_config(tmp_path / "b", mnist_dir))
    assert alone["test_accuracy"] < 0.3 < 0.8 < taught["test_accuracy"]
    assert checkpoint.load(tmp_path / "a" / "best.pt")["train_config"]["teacher"] == str(ACCURATE_INT8)


def test_a_digit_the_teacher_misreads_is_left_to_its_label():
    """The distillation term counts the rows whose label the teacher reads, and the outliers; not a digit it
    misreads (a crossed 7 taken for a 9): changing the teacher's answer there changes nothing."""
    cfg = TrainConfig(teacher="t.onnx", distill=0.7, label_smoothing=0.1)
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([7, 3, NOT_A_DIGIT])
    teacher = torch.zeros(3, 10)
    teacher[0, 9] = teacher[1, 3] = 5.0  # misreads the 7, reads the 3; flat on the outlier
    loss = trainer.batch_loss(cfg, logits, y, teacher)[0]
    for row, changed in ((0, False), (1, True), (2, True)):
        other = teacher.clone()
        other[row, 4] += 3.0
        assert torch.isclose(trainer.batch_loss(cfg, logits, y, other)[0], loss).item() is not changed


def test_teacher_and_weight_go_together(tmp_path, mnist_dir, small_config):
    with pytest.raises(ValueError, match="--teacher and --distill go together"):
        trainer.train(small_config(tmp_path, mnist_dir, distill=0.5))
    with pytest.raises(ValueError, match="no such file"):
        trainer.train(small_config(tmp_path, mnist_dir, teacher=str(tmp_path / "none.onnx"), distill=0.5))


def test_edge_head_conv_runs_on_the_last_3x3_pixels():
    model = build_model("edge", widths=(16, 32, 64), head=128)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.classifier[-1].in_features == 128 * 3 * 3
