"""python -m export.recover MODEL.onnx -o CHECKPOINT.pt: a classifier's checkpoint rebuilt from its FP32 ONNX file.

For a shipped model whose training run is gone: the export keeps every weight, so the
checkpoint can be read back off the graph's initializers. The export folded each
BatchNorm into the convolution before it (weights scaled, a bias added), so the
rebuilt model holds the folded weights in its convolutions and BatchNorm layers set to
the identity: running mean 0, running variance 1 - eps (so that var + eps is exactly 1
in float32), weight 1, and the folded bias as BatchNorm's bias (the `edge` convs have
none of their own). Exported again, the identity folds away and the graph computes what
the file does. Training from such a checkpoint (--init) starts from BatchNorm statistics
that are not the data's: the checkpoint says so under "recovered_from".

Only the `edge` architecture (docs/FORMATS.md): its arch_config (widths, depth) is read
off the weights' shapes; the normalisation off the graph's Sub and Div constants.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from train.checkpoint import CheckpointError, make_checkpoint, save, sha256
from train.models import build_model

from .verify import ExportError, load_onnx, read_metadata

BATCHNORM_NOTE = ("BatchNorm folded into the convolutions by the export: the convs hold the folded weights, each "
                  "BatchNorm is the identity (running_mean 0, running_var 1 - eps, weight 1) with the folded bias")


def graph_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def normalisation(model: onnx.ModelProto, constants: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean, std) of the graph's first two ops, Sub then Div on the input (export.to_onnx.PixelModel)."""
    first = list(model.graph.node[:2])
    if [n.op_type for n in first] != ["Sub", "Div"] or any(n.input[1] not in constants for n in first):
        raise ExportError("the graph does not start with the export's normalisation (Sub, Div by constants)")
    return float(constants[first[0].input[1]]), float(constants[first[1].input[1]])


def edge_state(model: nn.Module, constants: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The edge model's state dict from the export's initializers: conv i + BatchNorm i+1 of `features`."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            weight, bias = (constants.get(f"model.{name}.weight{suffix}") for suffix in ("", "_bias"))
            if weight is None or bias is None:
                raise ExportError(f"no folded weights for {name} in the graph (model.{name}.weight[_bias])")
            bn = name.rsplit(".", 1)[0] + "." + str(int(name.rsplit(".", 1)[1]) + 1)
            state[f"{name}.weight"] = torch.from_numpy(weight.copy())
            state[f"{bn}.weight"] = torch.ones(len(bias))
            state[f"{bn}.bias"] = torch.from_numpy(bias.copy())
            state[f"{bn}.running_mean"] = torch.zeros(len(bias))
            eps = torch.tensor(model.get_submodule(bn).eps, dtype=torch.float32)
            state[f"{bn}.running_var"] = torch.full((len(bias),), 1.0) - eps
            state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
        elif isinstance(module, nn.Linear):
            state[f"{name}.weight"] = torch.from_numpy(constants[f"model.{name}.weight"].copy())
            state[f"{name}.bias"] = torch.from_numpy(constants[f"model.{name}.bias"].copy())
    return state


def edge_config(constants: dict[str, np.ndarray]) -> dict:
    """widths and depth of an `edge` model from its conv weights' shapes (stages at 28, 14, 7 pixels)."""
    convs = sorted((int(k.split(".")[2]), v.shape) for k, v in constants.items()
                   if k.startswith("model.features.") and k.endswith(".weight") and v.ndim == 4)
    outs = [shape[0] for _, shape in convs]
    depth = (len(outs) - 1) // 2
    widths = [outs[0], outs[1], outs[1 + depth]]
    if len(outs) != 1 + 2 * depth:
        raise ExportError(f"conv layout {outs} is not an edge model's")
    return {"widths": widths, "depth": depth}


def recover(onnx_path: Path) -> dict:
    """The checkpoint dict of an exported `edge` classifier (see the module's docstring)."""
    model = load_onnx(onnx_path)
    meta = read_metadata(model)
    if meta.get("arch") != "edge" or meta.get("precision") != "fp32":
        raise ExportError(f"{onnx_path}: only FP32 exports of the edge classifier can be recovered "
                          f"(arch {meta.get('arch')!r}, precision {meta.get('precision')!r})")
    constants = graph_constants(model)
    mean, std = normalisation(model, constants)
    config = edge_config(constants)
    net = build_model("edge", **config).eval()
    try:
        net.load_state_dict(edge_state(net, constants))
    except (RuntimeError, KeyError) as e:
        raise ExportError(f"{onnx_path}: weights do not fit an edge model {config}: {str(e)[:200]}") from None
    ckpt = make_checkpoint(net, "edge", config, mean=mean, std=std, classes=json.loads(meta["classes"]),
                           dataset=meta.get("dataset", "mnist"), train_config={},
                           metrics={"test_accuracy": float(meta["test_accuracy"])})
    ckpt["recovered_from"] = {"onnx_file": onnx_path.name, "onnx_sha256": sha256(onnx_path),
                              "checkpoint_sha256": meta.get("checkpoint_sha256"), "batchnorm": BATCHNORM_NOTE}
    return ckpt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.recover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="FP32 ONNX classifier written by export.to_onnx")
    p.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write")
    args = p.parse_args(argv)
    try:
        save(recover(args.onnx), args.out)
    except (CheckpointError, ExportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: export it (python -m export.to_onnx) and compare with {args.onnx} before use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
