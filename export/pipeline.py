"""python -m export.pipeline: train -> FP32 ONNX -> INT8 ONNX -> parity report (-> ship to runtime/models).

Training runs as its own process (`python -m train`), so the stages share
nothing but files, exactly as docs/FORMATS.md describes. The report
(parity.md and parity.json in the run directory) compares each ONNX file
with the PyTorch model on all test images. With --ship the models are
copied to runtime/models/ with a MODEL_CARD.md, but only if they pass the
same gates as the test suite.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime
import torch

from runtime.model import CLASSIFIER_FILES, DEFAULT_READER, MODELS_DIR, NAMED_MODELS
from train.checkpoint import CheckpointError, load, load_model, sha256
from train.config import DEFAULT_RECIPE, RECIPES
from train.files import clean_stale_temps, copy_file, sigterm_as_interrupt, write_text
from train.idx import DATA_ENV, DataError, resolve_data_dir

from .quantize import DEFAULT_CALIBRATION_SIZE, DEFAULT_METHOD, PORTABLE_PRESET, VariantResult, make_variants
from .reader import reader_pipeline
from .to_onnx import FP32_TOLERANCE, ExportResult, export_checkpoint, torch_logits, wrap
from .verify import ExportError, Parity, load_pixels, parity_table

REPO = Path(__file__).resolve().parents[1]
# What the pipeline writes into its output directory (each through atomic_output).
PUBLISHED = (*CLASSIFIER_FILES.values(), "parity.json", "parity.md")
SHIP_DIR = MODELS_DIR
SHIPPED = {p: CLASSIFIER_FILES[p] for p in ("fp32", "int8")}
# Each shipped model's checkpoint, kept beside the product but outside the runtime's package data, so that the
# benchmarks and parity tests run on a fresh install: shipped file name -> its checkpoint. --ship writes both.
CHECKPOINTS_DIR = REPO / "checkpoints"
SHIPPED_CHECKPOINTS = {**{name: CHECKPOINTS_DIR / "digits.pt" for name in SHIPPED.values()},
                       **{NAMED_MODELS[name].name: CHECKPOINTS_DIR / "digits-accurate.pt"
                          for name in ("accurate", "accurate-fp32")},
                       DEFAULT_READER.name: CHECKPOINTS_DIR / "reader.pt"}
CLASSIFIER_CHECKPOINT = SHIPPED_CHECKPOINTS[SHIPPED["fp32"]]
READER_CHECKPOINT = SHIPPED_CHECKPOINTS[DEFAULT_READER.name]

# What a model must reach to be shipped; tests/test_export.py and tests/test_parity.py assert these same figures.
SHIP_GATES = {
    "fp32_max_abs_diff": FP32_TOLERANCE,  # FP32 ONNX vs PyTorch logits
    "int8_min_agreement": 0.998,          # INT8 vs PyTorch argmax
    "int8_max_accuracy_drop": 0.0015,     # INT8 test accuracy at most 0.15 points below FP32
    "int8_max_size_ratio": 0.30,          # INT8 file size / FP32 file size
    "min_accuracy": 0.994,                # shipped INT8 test accuracy
}


class PipelineError(Exception):
    """A stage failed or a gate was not met."""


@dataclass
class Run:
    """Everything the report and the model card say, gathered stage by stage."""

    out_dir: Path
    recipe: str
    seed: int
    data_dir: Path
    command: str
    train_command: str | None = None
    train_seconds: float | None = None


def train_stage(run: Run, epochs: int | None) -> Path:
    cmd = [sys.executable, "-m", "train", "--recipe", run.recipe, "--seed", str(run.seed),
           "--data-dir", str(run.data_dir), "--out", str(run.out_dir)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    run.train_command = shlex.join(["python", *cmd[1:]])
    print(f"== train: {run.train_command}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO).returncode  # its own progress output passes straight through
    run.train_seconds = time.perf_counter() - start
    if code != 0:
        raise PipelineError(f"{run.out_dir}: training failed (python -m train exited with {code})")
    return run.out_dir / "best.pt"


def build_report(run: Run, checkpoint: Path, export_result: ExportResult, variants: list[VariantResult],
                 parity: dict[str, Parity]) -> dict:
    ckpt = load(checkpoint)
    fp32_size = export_result.size
    files = {"fp32": (export_result.path, export_result.size, export_result.seconds, None)}
    files.update({v.precision: (v.path, v.size, v.seconds, v.settings) for v in variants})
    models = {}
    for precision, (path, size, seconds, settings) in files.items():
        p = parity[precision]
        models[precision] = {
            "file": str(path), "size_bytes": size, "size_ratio_to_fp32": round(size / fp32_size, 4),
            "sha256": sha256(path), "test_accuracy": p.accuracy, "agreement_with_pytorch": p.agreement,
            "max_abs_logit_diff": p.max_abs_diff, "seconds_to_make": round(seconds, 2),
            **({"quantization": settings} if settings else {}),
        }
    return {
        "command": run.command, "train_command": run.train_command, "recipe": ckpt["train_config"].get("recipe"),
        "seed": ckpt["train_config"].get("seed"), "epochs": ckpt["metrics"].get("epochs"),
        "arch": ckpt["arch"], "arch_config": ckpt["arch_config"], "dataset": ckpt["dataset"],
        "train_config": ckpt["train_config"],
        "checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint),
        "pytorch_test_accuracy": next(iter(parity.values())).reference_accuracy,
        "test_images": next(iter(parity.values())).images,
        "train_seconds": round(run.train_seconds, 1) if run.train_seconds is not None else None,
        "export_seconds": round(export_result.seconds, 2),
        "quantize_seconds": round(next(v.seconds for v in variants if v.precision == "int8"), 2),
        "models": models,
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown_report(report: dict) -> str:
    lines = [f"## Parity report: {report['arch']} ({report['recipe']} recipe, seed {report['seed']})", "",
             f"PyTorch (eval, CPU, float32) test accuracy: **{report['pytorch_test_accuracy']:.2%}** "
             f"on {report['test_images']:,} test images.", "",
             "| model | size | vs FP32 | test accuracy | argmax agreement with PyTorch | max \\|Δlogit\\| | made in |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for precision, m in report["models"].items():
        lines.append(f"| {precision} `{Path(m['file']).name}` | {m['size_bytes'] / 1024:.1f} KiB | "
                     f"{m['size_ratio_to_fp32']:.1%} | {m['test_accuracy']:.2%} | {m['agreement_with_pytorch']:.2%} | "
                     f"{m['max_abs_logit_diff']:.2g} | {m['seconds_to_make']:.1f} s |")
    train = f"{report['train_seconds']:.0f} s" if report["train_seconds"] is not None else "skipped (given checkpoint)"
    lines += ["", f"Times: training {train}, export {report['export_seconds']:.1f} s, "
                  f"quantization {report['quantize_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def ship_problems(report: dict) -> list[str]:
    """Reasons not to ship, against SHIP_GATES; empty when the models may go out."""
    fp32, int8 = report["models"]["fp32"], report["models"]["int8"]
    g = SHIP_GATES
    checks = [
        (fp32["max_abs_logit_diff"] <= g["fp32_max_abs_diff"],
         f"FP32 max |Δlogit| {fp32['max_abs_logit_diff']:.2g} > {g['fp32_max_abs_diff']:g}"),
        (fp32["agreement_with_pytorch"] == 1.0, f"FP32 argmax agreement {fp32['agreement_with_pytorch']:.2%} < 100%"),
        (int8["agreement_with_pytorch"] >= g["int8_min_agreement"],
         f"INT8 argmax agreement {int8['agreement_with_pytorch']:.2%} < {g['int8_min_agreement']:.1%}"),
        (fp32["test_accuracy"] - int8["test_accuracy"] <= g["int8_max_accuracy_drop"] + 1e-9,
         f"INT8 accuracy {int8['test_accuracy']:.2%} more than 0.15 points below FP32's {fp32['test_accuracy']:.2%}"),
        (int8["size_ratio_to_fp32"] <= g["int8_max_size_ratio"],
         f"INT8 file is {int8['size_ratio_to_fp32']:.1%} of FP32 (> {g['int8_max_size_ratio']:.0%})"),
        (int8["test_accuracy"] >= g["min_accuracy"],
         f"INT8 test accuracy {int8['test_accuracy']:.2%} < {g['min_accuracy']:.1%} (try --recipe best)"),
    ]
    return [message for ok, message in checks if not ok]


def model_card(report: dict) -> str:
    fp32, int8 = report["models"]["fp32"], report["models"]["int8"]
    q = int8["quantization"]
    files = "\n".join(
        f"| `{SHIPPED[p]}` | {p} | {m['size_bytes']:,} B ({m['size_bytes'] / 1024:.1f} KiB) | "
        f"{m['test_accuracy']:.2%} | "
        f"`{m['sha256']}` |" for p, m in report["models"].items() if p in SHIPPED)
    return f"""# Model card: edge-digits digit classifier

Handwritten digit (0-9) classifier for `runtime/`: a small CNN (`{report['arch']}`,
{json.dumps(report['arch_config'])}) trained on MNIST ({report['dataset']}), exported to ONNX.
Input and output follow docs/FORMATS.md: `pixels` float32 [N, 1, 28, 28] in [0, 1], light digit on dark
background, MNIST framing (20x20 box, centred by centre of mass); output `logits` [N, 10].
Normalisation is folded into the graph.

## Files

| file | precision | size | test accuracy | SHA-256 |
| --- | --- | ---: | ---: | --- |
{files}

Test accuracy is measured for each file on the {report['test_images']:,} MNIST test images with ONNX Runtime (CPU).
The INT8 file is {int8['size_ratio_to_fp32']:.1%} of the FP32 file.

## How it was made

- Command: `{report['command']}`
- Training: `{report['train_command'] or 'not run by the pipeline (checkpoint given)'}`; settings stored in the
  checkpoint: {training_settings(report['train_config'])}
- Recipe `{report['recipe']}`, seed {report['seed']}, {report['epochs']} epochs; checkpoint SHA-256
  `{report['checkpoint_sha256']}` (PyTorch test accuracy {report['pytorch_test_accuracy']:.2%}), shipped as
  `{CLASSIFIER_CHECKPOINT.relative_to(REPO)}` for the benchmarks and parity tests
- FP32: `torch.onnx.export` (torch.export-based exporter), BatchNorm folded, opset 18, checked with
  `onnx.checker` (full check) and ONNX Runtime.
- INT8: ONNX Runtime static quantization, preset {q.get('preset', '?')}, {q['format']};
  activations {q['activations']}, weights {q['weights']};
  calibration: {q['calibration']}; quantized ops: {q['quantized_ops']}. Test images were never used for calibration.
- Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}; made {report['date']}.

## Parity with the PyTorch model (all {report['test_images']:,} test images)

| file | argmax agreement | max \\|Δlogit\\| | test accuracy |
| --- | ---: | ---: | ---: |
| FP32 | {fp32['agreement_with_pytorch']:.2%} | {fp32['max_abs_logit_diff']:.2g} | {fp32['test_accuracy']:.2%} |
| INT8 | {int8['agreement_with_pytorch']:.2%} | {int8['max_abs_logit_diff']:.2g} | {int8['test_accuracy']:.2%} |

## Limits

Trained on MNIST (centred, size-normalised digits from US writers) and, when `photo_crops` is set above,
on what the runtime cut out of synthetic photos of MNIST training digits; when `styles` is set, that share of
its 1s and 7s redrawn as flagged 1s and crossed 7s (train/styles.py). Photos must be segmented and
framed like MNIST first (`runtime/` does this); other scripts, symbols or letters are still classified as
some digit. Test accuracy is not accuracy on real photos.
"""


def training_settings(cfg: dict) -> str:
    # Recipes change over time; the checkpoint records what this run actually used.
    keys = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "schedule", "augment", "label_smoothing",
            "outliers", "outlier_weight", "cut_pieces", "photo_crops", "photo_share", "styles", "init", "teacher",
            "distill", "temperature", "train_subset", "val_size")
    return ", ".join(f"{k} {cfg[k]}" for k in keys if cfg.get(k) is not None)


def ship(report: dict) -> list[Path]:
    problems = ship_problems(report)
    if problems:
        raise PipelineError(f"{SHIP_DIR}: not shipping: {'; '.join(problems)}")
    written = [copy_file(report["models"][precision]["file"], SHIP_DIR / name) for precision, name in SHIPPED.items()]
    written.append(copy_file(report["checkpoint"], CLASSIFIER_CHECKPOINT))
    card = SHIP_DIR / "MODEL_CARD.md"
    write_text(card, model_card(report))
    return [*written, card]


def run_pipeline(args: argparse.Namespace, command: str) -> dict:
    out_dir = Path(args.out or f"runs/{args.recipe}")
    clean_stale_temps(out_dir, PUBLISHED)  # of a run killed while writing
    run = Run(out_dir, args.recipe, args.seed, resolve_data_dir(args.data_dir, download=args.download), command)
    checkpoint = Path(args.checkpoint) if args.checkpoint else train_stage(run, args.epochs)
    if load(checkpoint)["arch"] == "reader":
        print(f"== row reader: export, quantize, parity on test rows -> {out_dir}", flush=True)
        text = reader_pipeline(checkpoint, out_dir, run.data_dir, command, SHIP_DIR if args.ship else None,
                               READER_CHECKPOINT if args.ship else None, args.method)
        print("\n" + text)
        return {"reader": True}

    fp32, int8, fp16 = (out_dir / CLASSIFIER_FILES[p] for p in ("fp32", "int8", "fp16"))
    print(f"== export: {checkpoint} -> {fp32}", flush=True)
    exported = export_checkpoint(checkpoint, fp32, run.data_dir)
    print(f"== quantize: {exported.path} -> {int8}", flush=True)
    # The shipped INT8 file runs on every CPU kind: the portable preset, not this machine's.
    variants = make_variants(exported.path, int8, run.data_dir, args.calibration_size,
                             args.method, fp16 if args.fp16 else None, preset=PORTABLE_PRESET)

    print("== parity: all test images, every file against PyTorch", flush=True)
    ckpt = load(checkpoint)
    pixels, labels = load_pixels(run.data_dir, "test")
    files = {"fp32": exported.path, **{v.precision: v.path for v in variants}}
    reference = torch_logits(wrap(ckpt, load_model(ckpt, checkpoint), checkpoint), pixels)
    parity = parity_table(reference, files, pixels, labels)
    report = build_report(run, checkpoint, exported, variants, parity)
    write_text(out_dir / "parity.json", json.dumps(report, indent=2) + "\n")
    text = markdown_report(report)
    write_text(out_dir / "parity.md", text)
    print("\n" + text)
    if args.ship:
        for path in ship(report):
            print(f"shipped {path}")
    return report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, default=DEFAULT_RECIPE,
                   help=f"training recipe (default {DEFAULT_RECIPE}; ship with photo)")
    p.add_argument("--out", help="run directory (default runs/RECIPE)")
    p.add_argument("--data-dir", help=f"MNIST IDX files (default ${DATA_ENV}, then ./data/MNIST/raw)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST with torchvision when the files are absent")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--checkpoint",
                   help="skip training: export this checkpoint (the report takes recipe, seed, epochs from it)")
    p.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    p.add_argument("--method", default=DEFAULT_METHOD, choices=("minmax", "entropy", "percentile"),
                   help="INT8 calibration method")
    p.add_argument("--fp16", action="store_true", help="also make and report an FP16 model")
    p.add_argument("--ship", action="store_true",
                   help="copy the FP32 and INT8 models to runtime/models/ with MODEL_CARD.md "
                        "(only if they pass the gates)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "export.pipeline", *(sys.argv[1:] if argv is None else argv)])
    try:
        with sigterm_as_interrupt():  # temporary files are removed on the way out
            run_pipeline(args, command)
    except (CheckpointError, DataError, ExportError, PipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
