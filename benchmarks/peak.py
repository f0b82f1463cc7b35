"""The machine's measured peak, per library and number type, for the latency table's "% of peak".

A share of peak only means something against a peak the compared row could reach: the same
library's matrix kernels, the same number type, the same thread count. So there are three:

- ``torch_fp32``: torch.mm on float32 (MKL/oneDNN), for the PyTorch rows;
- ``ort_fp32``: an ONNX Runtime session of one float32 MatMul (MLAS SGEMM), for the ORT FP32 rows;
- ``ort_int8``: an ONNX Runtime session of one MatMulInteger, uint8 activations x int8 weights
  (MLAS's U8S8 QGEMM: the kernels behind the INT8 model's QLinearConv/QGemm), for the ORT INT8 rows.

Each is the best rate of square products of a few sizes (the weights prepacked, as the models'
are), after warm-up calls, over at least MIN_CALLS products per size and the time given:
a peak is what the kernels do when nothing disturbs them, and disturbances only slow a
product down, so the best product, not the mean, is the estimate. "Operations" are
multiply-adds counted as 2 (FLOP or integer OP), so MAC/s = rate / 2.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from .timing import ort_runner, time_calls

KINDS = ("torch_fp32", "ort_fp32", "ort_int8")
DESCRIPTION = {
    "torch_fp32": "torch.mm float32",
    "ort_fp32": "ONNX Runtime MatMul float32 (MLAS SGEMM)",
    "ort_int8": "ONNX Runtime MatMulInteger uint8 x int8 (MLAS U8S8 QGEMM)",
}
# The best size differs by kernel and thread count: 256 stays in the caches (best on 1 core for float32 here),
# 1024 splits better over several threads; the best of all is taken.
SIZES = (256, 512, 1024)
WARMUP_CALLS = 2   # thread pool start, kernel dispatch, pages of the output
MIN_CALLS = 5      # per size and measurement, however short the time given: a peak needs enough work


def matmul_model(n: int, int8: bool) -> bytes:
    """One n x n product with constant (prepackable) weights: float32 MatMul, or MatMulInteger u8 x s8 -> int32."""
    rng = np.random.default_rng(0)
    if int8:
        weights = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weights = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])], initializer=[weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def best_ns(call: Callable[[], object], seconds: float) -> int:
    """Shortest of at least MIN_CALLS timed calls over at least `seconds`, after WARMUP_CALLS."""
    return int(time_calls(lambda _: call(), None, MIN_CALLS, seconds, WARMUP_CALLS).min())


class Peaks:
    """Measures each kind's peak at each thread count, keeping the best seen over repeated calls of measure().

    The ORT sessions and torch tensors are built once, so a later round measures warm kernels.
    """

    def __init__(self, thread_counts: list[int], kinds: tuple[str, ...] = KINDS):
        self.kinds = kinds
        self.best: dict[tuple[str, int], float] = {(k, t): 0.0 for k in kinds for t in thread_counts}
        self.calls: dict[tuple[str, int, int], Callable[[], object]] = {}

    def call(self, kind: str, threads: int, n: int) -> Callable[[], object]:
        key = (kind, threads, n)
        if key not in self.calls:
            self.calls[key] = self.build(kind, threads, n)
        return self.calls[key]

    @staticmethod
    def build(kind: str, threads: int, n: int) -> Callable[[], object]:
        if kind == "torch_fp32":
            a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)

            def product() -> object:
                torch.set_num_threads(threads)  # cheap when unchanged; other blocks set their own count
                return torch.mm(a, b, out=out)
            return product
        int8 = kind == "ort_int8"
        runner = ort_runner(kind, matmul_model(n, int8), threads)
        rng = np.random.default_rng(1)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8) if int8 else rng.standard_normal((n, n), dtype=np.float32)
        prepared = runner.prepare(a)
        return lambda: runner.predict(prepared)

    def measure(self, seconds: float) -> None:
        """One measurement of every kind at every thread count, `seconds` each (split over the sizes)."""
        for kind, threads in self.best:
            rate = max(2 * n ** 3 / (best_ns(self.call(kind, threads, n), seconds / len(SIZES)) * 1e-9)
                       for n in SIZES)
            self.best[(kind, threads)] = max(self.best[(kind, threads)], rate)

    def rate(self, kind: str | None, threads: int) -> float | None:
        """Best operations per second seen (FLOP/s, or integer OP/s for ort_int8); None for no kind."""
        return self.best.get((kind, threads)) if kind else None

    def as_dict(self) -> dict[str, dict[str, dict[str, float]]]:
        return {kind: {str(t): {"gops": r / 1e9, "gmac_per_s": r / 2e9} for (k, t), r in self.best.items() if k == kind}
                for kind in self.kinds}
