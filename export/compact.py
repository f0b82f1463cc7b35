"""Lossless clean-ups of a quantized graph: only standard ONNX, same outputs bit for bit.

onnxruntime's quantizer names every tensor after its source
(`model.features.4.weight_bias_quantized_zero_point`, ...). In a model of
~30 k int8 weights those names, all-zero bias zero points and unused opset
imports add ~15 % to the file; the INT8 model is meant to be a quarter of
the FP32 one.
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper


def compact(model: onnx.ModelProto) -> None:
    """Shrink `model` in place without changing what it computes."""
    drop_zero_bias_zero_points(model.graph)
    drop_unused_initializers(model.graph)
    shorten_names(model.graph)
    del model.graph.value_info[:]  # shape annotations: ORT re-infers them at load time
    drop_unused_opsets(model)


def drop_zero_bias_zero_points(graph: onnx.GraphProto) -> None:
    """An omitted zero point means 0 (ONNX spec); the quantizer still stores 0s for every int32 bias."""
    initializers = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) != 3:
            continue
        zero_point = initializers.get(node.input[2])
        if (zero_point is not None and zero_point.data_type == onnx.TensorProto.INT32
                and not numpy_helper.to_array(zero_point).any()):
            del node.input[2]


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def shorten_names(graph: onnx.GraphProto) -> None:
    """Rename every internal tensor to a short hex id; the input and output keep their contract names."""
    fixed = {v.name for v in (*graph.input, *graph.output)} | {""}  # "" marks an omitted optional input
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in fixed:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""  # optional in ONNX; ORT names nodes itself
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """The quantizer's helpers import every domain they know (training, preview, aten...)."""
    used = {node.domain or "" for node in model.graph.node} | {""}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
