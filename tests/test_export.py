"""export/: a small real model, trained once per session, exported to FP32, INT8 and FP16 ONNX and checked
against PyTorch on all 10,000 MNIST test images; then every kind of bad input the commands must refuse."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from export import pipeline, quantize, rewrite, to_onnx
from export.pipeline import SHIP_GATES
from export.to_onnx import torch_logits, wrap
from export.verify import INPUT_NAME, OUTPUT_NAME, REQUIRED_METADATA, compare, load_pixels, onnx_logits, run_session
from train import trainer
from train.checkpoint import load, load_model, sha256
from train.config import TrainConfig


@pytest.fixture(scope="session")
def test_set(mnist_dir):
    return load_pixels(mnist_dir, "test")


@pytest.fixture(scope="session")
def models(tmp_path_factory, mnist_dir, test_set):
    """Train a small real model (fast recipe, 1 epoch on 20,000 images: ~15 s) and make every variant once."""
    out = tmp_path_factory.mktemp("export")
    trainer.train(TrainConfig.from_recipe("fast", train_subset=20000, seed=0, data_dir=str(mnist_dir), download=False,
                                          out_dir=str(out)))
    checkpoint = out / "best.pt"
    exported = to_onnx.export_checkpoint(checkpoint, out / "digits-fp32.onnx", mnist_dir)
    int8, fp16 = quantize.make_variants(exported.path, out / "digits-int8.onnx", mnist_dir,
                                        fp16_out=out / "digits-fp16.onnx")
    ckpt = load(checkpoint)
    module = wrap(ckpt, load_model(ckpt, checkpoint))
    pixels, labels = test_set
    return SimpleNamespace(dir=out, checkpoint=checkpoint, ckpt=ckpt, module=module, fp32=exported.path,
                           int8=int8.path, fp16=fp16.path, reference=torch_logits(module, pixels))


def parity_of(models, path, test_set):
    pixels, labels = test_set
    return compare(models.reference, onnx_logits(path, pixels), labels)


# --- parity with PyTorch on the whole test set -------------------------------------------------------


def test_fp32_reproduces_pytorch(models, test_set):
    p = parity_of(models, models.fp32, test_set)
    assert p.images == 10_000
    assert p.agreement == 1.0
    assert p.max_abs_diff <= SHIP_GATES["fp32_max_abs_diff"]  # float32 rounding only: ORT kernels, folded BatchNorm
    assert p.accuracy == pytest.approx(models.ckpt["metrics"]["test_accuracy"], abs=1e-6)


def test_int8_agrees_with_pytorch_and_keeps_accuracy(models, test_set):
    fp32 = parity_of(models, models.fp32, test_set)
    int8 = parity_of(models, models.int8, test_set)
    assert int8.agreement >= SHIP_GATES["int8_min_agreement"]
    assert fp32.accuracy - int8.accuracy <= SHIP_GATES["int8_max_accuracy_drop"] + 1e-9


def test_int8_is_under_30_percent_of_fp32(models):
    assert models.int8.stat().st_size <= SHIP_GATES["int8_max_size_ratio"] * models.fp32.stat().st_size


def test_fp16_agrees_with_pytorch(models, test_set):
    p = parity_of(models, models.fp16, test_set)
    assert p.agreement >= 0.999
    assert p.max_abs_diff < 0.05


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_batch_size_does_not_change_outputs(models, test_set, precision):
    pixels = test_set[0][:259]  # 256 + 3: the last batch of 7 and of 256 is partial
    session = ort.InferenceSession(str(getattr(models, precision)), providers=["CPUExecutionProvider"])
    outputs = {bs: run_session(session, pixels, bs) for bs in (1, 7, 256)}
    tolerance = {"fp32": 1e-5, "int8": 1e-5, "fp16": 1e-3}[precision]
    np.testing.assert_allclose(outputs[7], outputs[1], rtol=0, atol=tolerance)
    np.testing.assert_allclose(outputs[256], outputs[1], rtol=0, atol=tolerance)


# --- the contract of docs/FORMATS.md -----------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_interface_and_metadata(models, test_set, precision):
    path = getattr(models, precision)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    for value in (inp, out):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp16 casts inside the graph
        assert value.type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [1, 28, 28]
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(REQUIRED_METADATA) <= set(meta)
    assert meta["precision"] == precision
    assert meta["normalization"] == "folded" and meta["input_name"] == "pixels" and meta["input_layout"] == "NCHW"
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert json.loads(meta["input_range"]) == [0.0, 1.0]
    assert meta["checkpoint_sha256"] == sha256(models.checkpoint)
    assert float(meta["test_accuracy"]) == pytest.approx(parity_of(models, path, test_set).accuracy, abs=1e-6)


def test_graphs_use_standard_ops_only(models):
    for path in (models.fp32, models.int8, models.fp16):
        model = onnx.load(path)
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}


def test_int8_runs_as_integer_kernels(models, tmp_path):
    """ORT must fuse the QDQ pairs: every convolution a QLinearConv except the first (1 input channel),
    kept float on purpose (export/rewrite.py), and the classifier a QGemm."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(models.int8), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    convs = sum(n.op_type == "Conv" for n in onnx.load(models.fp32).graph.node)
    assert ops.count("Conv") == 1 and ops.count("QLinearConv") == convs - 1
    assert "QGemm" in ops and "Gemm" not in ops and "DequantizeLinear" not in ops


def test_rewrite_for_int8_changes_nothing_computed(models, test_set):
    model = onnx.load(models.fp32)
    keep_float = rewrite.keep_narrow_convs_float(model)
    assert len(keep_float) == 3  # the first conv, and its MaxPool and Relu, now in that order
    order = [n.op_type for n in model.graph.node]
    assert order[order.index("Conv"):order.index("Conv") + 3] == ["Conv", "MaxPool", "Relu"]
    onnx.checker.check_model(model, full_check=True)
    pixels = test_set[0][:1000]
    rewritten = run_session(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), pixels)
    np.testing.assert_array_equal(rewritten, onnx_logits(models.fp32, pixels))


def test_calibration_reads_training_images_only(mnist_dir, tmp_path):
    only_train = tmp_path / "train-only"
    only_train.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        for f in mnist_dir.glob(name + "*"):
            shutil.copy(f, only_train / f.name)
    pixels = quantize.calibration_pixels(only_train, 100)  # no test files there: must not need them
    assert pixels.shape == (100, 1, 28, 28) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    np.testing.assert_array_equal(pixels, quantize.calibration_pixels(only_train, 100))  # reproducible


def test_variant_paths():
    assert quantize.variant_path("runs/x/digits-fp32.onnx", "int8") == Path("runs/x/digits-int8.onnx")
    assert quantize.variant_path("model.onnx", "fp16", "out") == Path("out/model-fp16.onnx")


def test_model_card_and_ship_gates(models, test_set):
    pixels, labels = test_set
    report = {"arch": "edge", "models": {}}
    for precision in ("fp32", "int8"):
        path = getattr(models, precision)
        p = parity_of(models, path, test_set)
        report["models"][precision] = {"file": str(path), "size_bytes": path.stat().st_size,
                                       "size_ratio_to_fp32": path.stat().st_size / models.fp32.stat().st_size,
                                       "test_accuracy": p.accuracy, "agreement_with_pytorch": p.agreement,
                                       "max_abs_logit_diff": p.max_abs_diff}
    problems = pipeline.ship_problems(report)
    # A 1-epoch model on 20,000 images passes every parity gate but not the accuracy floor for shipping.
    assert len(problems) == 1 and "99.4%" in problems[0]


# --- bad input: one clear line, exit status 1, nothing written ---------------------------------------


def assert_refused(code, capsys, *names):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1, out + err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert str(name) in lines[0], err
    assert "Traceback" not in err


def assert_nothing_written(directory: Path, *paths: Path):
    for path in paths:
        assert not path.exists()
    assert not list(directory.glob(".*.tmp")), "a temporary file was left behind"


@pytest.fixture
def data_args(mnist_dir):
    return ["--data-dir", str(mnist_dir)]


def test_to_onnx_missing_checkpoint(tmp_path, capsys, data_args):
    out = tmp_path / "m.onnx"
    code = to_onnx.main([str(tmp_path / "absent.pt"), "-o", str(out), *data_args])
    assert_refused(code, capsys, tmp_path / "absent.pt", "no such file")
    assert_nothing_written(tmp_path, out)


def test_to_onnx_truncated_checkpoint(models, tmp_path, capsys, data_args):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(models.checkpoint.read_bytes()[:5000])
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(bad), "-o", str(out), *data_args]), capsys, bad, "not a readable checkpoint")
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b""])
def test_to_onnx_not_a_checkpoint(tmp_path, capsys, data_args, content):
    bad = tmp_path / "notes.pt"
    bad.write_bytes(content)
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(bad), "-o", str(out), *data_args]), capsys, bad)
    assert_nothing_written(tmp_path, out)


def test_to_onnx_foreign_torch_file(tmp_path, capsys, data_args):
    bad = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)  # a valid torch file, but no checkpoint
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(bad), "-o", str(out), *data_args]), capsys, bad, "not an edge-digits checkpoint")
    assert_nothing_written(tmp_path, out)


def test_to_onnx_unknown_architecture(models, tmp_path, capsys, data_args):
    ckpt = dict(models.ckpt, arch="resnet152")
    bad = tmp_path / "alien.pt"
    torch.save(ckpt, bad)
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(bad), "-o", str(out), *data_args]), capsys, bad, "unknown architecture")
    assert_nothing_written(tmp_path, out)


def test_to_onnx_needs_real_data(models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_DIGITS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data/MNIST/raw here
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(models.checkpoint), "-o", str(out)]), capsys,
                   "data/MNIST/raw: no mnist IDX files here (neither --data-dir nor $EDGE_DIGITS_DATA is set)")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(to_onnx.main([str(models.checkpoint), "-o", str(out), "--data-dir", str(empty)]), capsys,
                   f"{empty}: no mnist IDX files here (from --data-dir)")
    assert_nothing_written(tmp_path, out)


def test_to_onnx_unsupported_opset(models, tmp_path, capsys, data_args):
    out = tmp_path / "m.onnx"
    code = to_onnx.main([str(models.checkpoint), "-o", str(out), "--opset", "9", *data_args])
    assert_refused(code, capsys, models.checkpoint, "opset 9")
    assert_nothing_written(tmp_path, out)


def test_to_onnx_mismatch_writes_nothing(models, tmp_path, capsys, data_args):
    """A failed parity check (forced with an impossible tolerance) writes nothing and keeps the previous file."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    code = to_onnx.main([str(models.checkpoint), "-o", str(out), "--tolerance", "-1", *data_args])
    assert_refused(code, capsys, out, "differ from PyTorch")
    assert out.read_bytes() == b"previous"
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("kind", ["missing", "garbage", "text", "truncated", "no-metadata", "int8"])
def test_quantize_refuses_bad_models(models, tmp_path, capsys, data_args, kind):
    source = tmp_path / f"{kind}.onnx"
    if kind == "garbage":
        source.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        source.write_text("not a model\n")
    elif kind == "truncated":
        source.write_bytes(models.fp32.read_bytes()[:20_000])
    elif kind == "no-metadata":
        model = onnx.load(models.fp32)
        del model.metadata_props[:]
        onnx.save(model, source)
    elif kind == "int8":
        shutil.copy(models.int8, source)
    out = tmp_path / "q.onnx"
    code = quantize.main([str(source), "-o", str(out), "--fp16", *data_args])
    expected = {"missing": "no such file", "garbage": "not an ONNX model", "text": "not an ONNX model",
                "truncated": "not an ONNX model", "no-metadata": "not an edge-digits model",
                "int8": "expected a fp32 model"}[kind]
    assert_refused(code, capsys, source, expected)
    assert_nothing_written(tmp_path, out, quantize.variant_path(source, "fp16", tmp_path))


def test_quantize_needs_training_images(models, mnist_dir, tmp_path, capsys):
    only_test = tmp_path / "test-only"
    only_test.mkdir()
    for f in mnist_dir.glob("t10k-*"):
        shutil.copy(f, only_test / f.name)
    out = tmp_path / "q.onnx"
    code = quantize.main([str(models.fp32), "-o", str(out), "--data-dir", str(only_test)])
    assert_refused(code, capsys, f"{only_test}: lacks train-images-idx3-ubyte, train-labels-idx1-ubyte")
    assert_nothing_written(tmp_path, out)


def test_quantize_disagreement_writes_nothing(models, tmp_path, capsys, data_args):
    out = tmp_path / "q.onnx"
    code = quantize.main([str(models.fp32), "-o", str(out), "--min-agreement", "1.01", *data_args])
    assert_refused(code, capsys, out, "argmax agrees")
    assert_nothing_written(tmp_path, out)


def test_pipeline_missing_checkpoint(tmp_path, capsys, data_args):
    code = pipeline.main(["--checkpoint", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "run"), *data_args])
    assert_refused(code, capsys, tmp_path / "absent.pt")
    assert not (tmp_path / "run" / "digits-fp32.onnx").exists()


def test_cli_error_is_one_line_without_traceback(tmp_path, mnist_dir):
    """The real command line, in its own process: exit status and stderr as a user sees them."""
    missing = tmp_path / "absent.pt"
    result = subprocess.run([sys.executable, "-m", "export.to_onnx", str(missing), "--data-dir", str(mnist_dir)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {missing}: no such file"


# --- checkpoints that can only give nonsense are refused -------------------------------------


def _untrained_checkpoint(path: Path, **normalization) -> Path:
    from train.checkpoint import make_checkpoint, save
    from train.models import build_model

    model = build_model("edge")
    norm = {"mean": 0.13, "std": 0.31, **normalization}
    save(make_checkpoint(model, "edge", {}, classes=[str(d) for d in range(10)], dataset="mnist", train_config={},
                         metrics={"test_accuracy": 0.1}, **norm), path)
    return path


@pytest.mark.parametrize("kind, word", [("nan-weight", "not finite"), ("inf-weight", "not finite"),
                                        ("std-zero", "degenerate normalisation"), ("std-nan", "degenerate")])
def test_to_onnx_refuses_checkpoints_that_answer_nonsense(tmp_path, capsys, data_args, kind, word):
    ckpt_path = _untrained_checkpoint(tmp_path / "bad.pt", **({"std": 0.0} if kind == "std-zero" else
                                                               {"std": float("nan")} if kind == "std-nan" else {}))
    if kind.endswith("weight"):
        ckpt = torch.load(ckpt_path, weights_only=True)
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
        ckpt["state_dict"][name].view(-1)[0] = float("nan") if kind == "nan-weight" else float("inf")
        torch.save(ckpt, ckpt_path)
    out = tmp_path / "m.onnx"
    assert_refused(to_onnx.main([str(ckpt_path), "-o", str(out), *data_args]), capsys, ckpt_path, word)
    assert_nothing_written(tmp_path, out)


def test_export_cleans_its_stale_temporary_files(tmp_path, capsys, data_args):
    stale = tmp_path / ".m.onnx.k2j4h1.tmp"
    stale.write_bytes(b"left by a killed export")
    to_onnx.main([str(tmp_path / "absent.pt"), "-o", str(tmp_path / "m.onnx"), *data_args])
    capsys.readouterr()
    assert not stale.exists()


def test_the_quantizer_runs_without_torch():
    """export.quantize checks and calibrates with export.verify and train.idx only: numpy, onnx, onnxruntime."""
    code = "import sys, export.quantize; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_recover_rebuilds_a_checkpoint_that_computes_what_its_file_does(tmp_path):
    """export.recover on a model whose BatchNorm is far from the identity (random statistics): the rebuilt
    checkpoint's model, and its export, give the file's logits."""
    from export.recover import recover
    from export.verify import set_metadata
    from train.checkpoint import make_checkpoint, save
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("edge", widths=(8, 12, 16), depth=2).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    ckpt = make_checkpoint(model, "edge", {"widths": [8, 12, 16], "depth": 2}, mean=0.2, std=0.3,
                           classes=[str(d) for d in range(10)], dataset="mnist", train_config={},
                           metrics={"test_accuracy": 0.5})
    save(ckpt, tmp_path / "a.pt")
    exported = to_onnx.export_graph(wrap(ckpt, model))
    set_metadata(exported, to_onnx.metadata(ckpt, sha256(tmp_path / "a.pt"), "fp32", 0.5))
    onnx.save(exported, tmp_path / "a.onnx")

    rebuilt = recover(tmp_path / "a.onnx")
    assert rebuilt["arch_config"] == {"widths": [8, 12, 16], "depth": 2}
    assert rebuilt["normalization"] == pytest.approx({"mean": 0.2, "std": 0.3})
    assert rebuilt["recovered_from"]["checkpoint_sha256"] == sha256(tmp_path / "a.pt")
    pixels = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    original = onnx_logits(tmp_path / "a.onnx", pixels)
    assert np.abs(torch_logits(wrap(rebuilt, load_model(rebuilt)), pixels) - original).max() < 1e-4
    onnx.save(to_onnx.export_graph(wrap(rebuilt, load_model(rebuilt))), tmp_path / "b.onnx")
    assert np.abs(onnx_logits(tmp_path / "b.onnx", pixels) - original).max() < 1e-5
    # BatchNorm as the exact identity: the export folds it away without changing a bit of the weights.
    weights = [{t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(tmp_path / f).graph.initializer}
               for f in ("a.onnx", "b.onnx")]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])

def test_int8_preset_follows_the_cpu_kind():
    """8-bit weights only where int8 products accumulate in int32 (VNNI, AMX); without, they would saturate
    in vpmaddubsw's int16 pairs: 7-bit weights, as the shipped (portable) files use."""
    from export.quantize import PORTABLE_PRESET, PRESETS, preset_for

    assert PRESETS[preset_for({"fma", "avx2"})]["reduce_range"]
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert not PRESETS[preset_for({"avx2", flag})]["reduce_range"]
    assert PRESETS[PORTABLE_PRESET]["reduce_range"]
