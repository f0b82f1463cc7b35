"""Exact graph rewrites made before INT8 quantization so that ONNX Runtime's x86 INT8 kernels are fast.

ORT runs a quantized convolution fast only through MLAS's symmetric INT8
kernel, which needs the input channels to be a multiple of 4 (and at least
16 outputs, a multiple of 8). The first convolution sees one channel (the
image): quantized, it falls back to im2col with K = 9 and a separate
requantization pass, and measured ~1.6x SLOWER than its float kernel, the
biggest single cost of the whole INT8 model. It also holds ~1 % of the
weights and ~3 % of the multiply-adds, so it stays float; everything after
it is INT8.

For that float stage Conv -> Relu -> MaxPool becomes Conv -> MaxPool -> Relu
(identical: Relu is monotonic, so it commutes with max). The quantization
point then follows the Relu, which the quantizer folds away, and sees 4x
fewer values. In the original order ORT would hoist the QuantizeLinear above
the MaxPool, which then runs on uint8 in NCHW layout, slower than float.
"""
from __future__ import annotations

import onnx

# MLAS's symmetric INT8 convolution on x86 needs input channels % 4 == 0 (convsym.cpp,
# KernelInputChannelAlignment).
INT8_CONV_CHANNEL_ALIGNMENT = 4


def keep_narrow_convs_float(model: onnx.ModelProto) -> list[str]:
    """Rewrite the stages of convolutions too narrow for the fast INT8 kernel; return the names of the
    nodes to leave out of quantization (nodes_to_exclude)."""
    graph = model.graph
    name_unnamed_nodes(graph)
    weights = {i.name: i for i in graph.initializer}
    keep_float = []
    # By name: pool_before_relu rebuilds the node list, so node objects do not outlive one step.
    for name in [n.name for n in graph.node if n.op_type == "Conv"]:
        conv = next(n for n in graph.node if n.name == name)
        weight = weights.get(conv.input[1])
        if weight is None or weight.dims[1] % INT8_CONV_CHANNEL_ALIGNMENT == 0:
            continue
        keep_float.append(conv.name)
        keep_float += pool_before_relu(graph, conv)
    if keep_float:
        del graph.value_info[:]  # shapes recorded before the swap are stale; the quantizer re-infers them
    return keep_float


def pool_before_relu(graph: onnx.GraphProto, conv: onnx.NodeProto) -> list[str]:
    """Turn conv -> Relu -> MaxPool into conv -> MaxPool -> Relu; return the names of the two nodes moved
    (or of the Relu alone when the pattern does not match, so it stays float with its conv)."""
    relu = only_consumer(graph, conv.output[0])
    if relu is None or relu.op_type != "Relu":
        return []
    pool = only_consumer(graph, relu.output[0])
    if pool is None or pool.op_type != "MaxPool" or len(pool.output) != 1:
        return [relu.name]
    moved = [pool.name, relu.name]
    conv_out, relu_out, pool_out = conv.output[0], relu.output[0], pool.output[0]
    pool.input[0], pool.output[0] = conv_out, relu_out
    relu.input[0], relu.output[0] = relu_out, pool_out
    # Swap their places too, so the graph stays topologically sorted (MaxPool now feeds Relu).
    nodes = [copy_node(n) for n in graph.node]
    names = [n.name for n in nodes]
    i, j = names.index(moved[1]), names.index(moved[0])
    nodes[i], nodes[j] = nodes[j], nodes[i]
    del graph.node[:]
    graph.node.extend(nodes)
    return moved


def only_consumer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    """The node reading `tensor` if it is the only reader and the tensor is not a graph output."""
    if tensor in {o.name for o in graph.output}:
        return None
    readers = [n for n in graph.node if tensor in n.input]
    return readers[0] if len(readers) == 1 else None


def name_unnamed_nodes(graph: onnx.GraphProto) -> None:
    # nodes_to_exclude works by name; the exporter names every node, but be safe.
    used = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)


def copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy

