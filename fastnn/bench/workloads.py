"""What ``fastnn bench`` measures: the per-op cases (from benchmarks/kernel_cases.py,
with honest FLOP and byte counts) and the training workloads. The training systems
themselves (fastnn's backends, the pure-NumPy MLP, PyTorch eager, JAX jit,
scikit-learn, the GEMM-only step) are built in their own processes by _worker.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _suite
from ._worker import GEMM_ONLY, SEQUENTIAL_FIT, SEQUENTIAL_PREDICT, gemm_step

__all__ = ["GEMM_ONLY", "INFERENCE_NETWORKS", "INFERENCE_ROWS", "OpCase",
           "PEER_SYSTEMS", "SEQUENTIAL_FIT", "SEQUENTIAL_PREDICT", "Workload",
           "gemm_step", "op_cases", "op_cost", "system_names"]  # fmt: skip

F32 = 4  # bytes per element
#: Peer name (``fastnn bench --peers``) -> the system that runs it.
PEER_SYSTEMS = {"numpy": "numpy-mlp", "torch": "torch-eager", "jax": "jax-jit",
                "sklearn": "sklearn"}  # fmt: skip
ESTIMATOR_SOLVERS = ("sgd", "adam")
#: Inference latency: the training workloads' networks, and rows per predict call
#: (one request, a small batch, a bulk call).
INFERENCE_NETWORKS = ((784, 256, 128, 10), (64, 32, 10))
INFERENCE_ROWS = (1, 32, 1000)
# Past-the-cache variants of memory-bound registry ops (8M float32 = 32 MiB per array).
STREAM_ELEMS = 8 * 1024 * 1024
STREAM_OPS = ("relu_forward", "relu_backward", "sgd_nesterov_update", "adam_update")


# ---------------------------------------------------------------- per-op cases
@dataclass
class OpCase:
    op: str
    shape: str
    setup: Callable[[Any], Callable[[], object]]
    kind: str  # "gemm" | "memory" | "fused"
    flops: float | None
    bytes: float | None
    working_set: float | None
    note: str


def _dims(label: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", label)]


def op_cost(
    op: str, label: str
) -> tuple[str, float | None, float | None, float | None, str]:
    """(kind, FLOPs, bytes moved, working-set bytes, how they were counted)."""
    d = _dims(label)
    if op.startswith("linear_forward"):
        n, k, m = d
        return (
            "gemm",
            2.0 * n * k * m,
            F32 * (n * k + k * m + m + n * m),
            F32 * (n * k + k * m + n * m),
            "2nkm FLOP (x@W); bias + activation epilogue not counted",
        )
    if op.startswith("linear_backward"):
        n, k, m = d
        return (
            "gemm",
            4.0 * n * k * m,
            F32 * (3 * n * m + 2 * n * k + 2 * k * m + m),
            F32 * (3 * n * m + 2 * n * k + 2 * k * m),
            "4nkm FLOP (dW = x^T dZ, dX = dZ W^T); dZ, db and decay not counted",
        )
    if op == "softmax_cross_entropy":
        n, k = d
        return (
            "fused",
            None,
            F32 * 2 * n * k + 8 * n,
            F32 * 2 * n * k,
            "exp-bound and cache-resident: no ceiling applies; bytes = logits + "
            "labels read, grad written",
        )
    elems = float(np.prod(d))
    if op == "squared_error":
        return (
            "fused",
            None,
            3 * F32 * elems,
            3 * F32 * elems,
            "cache-resident: no ceiling applies; bytes = pred + target read, grad "
            "written",
        )
    if op.endswith("_forward"):
        return (
            "memory",
            None,
            2 * F32 * elems,
            2 * F32 * elems,
            "read z, write y: 8 B/element",
        )
    if op.endswith("_backward"):
        return (
            "memory",
            None,
            3 * F32 * elems,
            3 * F32 * elems,
            "read dy and z (or y), write dz: 12 B/element",
        )
    if op.startswith("sgd"):
        return (
            "memory",
            None,
            5 * F32 * elems,
            3 * F32 * elems,
            "read p, g, v; write p, v: 20 B/element",
        )
    if op.startswith("adam"):
        return (
            "memory",
            None,
            7 * F32 * elems,
            4 * F32 * elems,
            "read p, g, m, v; write p, m, v: 28 B/element",
        )
    return ("fused", None, None, None, "no cost model")


def op_cases(streaming: bool = True, only: list[str] | None = None) -> list[OpCase]:
    """The registry's cases (benchmarks/kernel_cases.py), plus past-the-cache variants
    of the memory-bound ops when ``streaming``. ``only``: keep "op|shape" ids listed."""
    kc = _suite.load("kernel_cases")
    raw = list(kc.cases())
    if streaming:
        rows = 2048
        shape = (rows, STREAM_ELEMS // rows)
        label2, label1 = f"{shape[0]}x{shape[1]}", str(STREAM_ELEMS)
        extra = {
            "relu_forward": (
                label2,
                lambda be: kc.activation_forward(be, shape, "relu"),
            ),
            "relu_backward": (
                label2,
                lambda be: kc.activation_backward(be, shape, "relu"),
            ),
            "sgd_nesterov_update": (
                label1,
                lambda be: kc.sgd_update(be, (STREAM_ELEMS,)),
            ),
            "adam_update": (label1, lambda be: kc.adam_update(be, (STREAM_ELEMS,))),
        }
        raw += [(op, *extra[op]) for op in STREAM_OPS]
    out = []
    for op, label, setup in raw:
        if only is not None and f"{op}|{label}" not in only:
            continue
        kind, flops, nbytes, ws, note = op_cost(op, label)
        out.append(OpCase(op, label, setup, kind, flops, nbytes, ws, note))
    return out


# ------------------------------------------------------------ training systems
@dataclass(frozen=True)
class Workload:
    sizes: tuple[int, ...]
    batch_size: int
    n_samples: int

    @property
    def name(self) -> str:
        return "-".join(map(str, self.sizes))

    @property
    def flops_per_sample(self) -> float:
        """Forward, weight gradients and the input gradients of every layer but the
        first (which no system computes): 2 FLOP per multiply-add."""
        pairs = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        fwd = sum(2.0 * a * b for a, b in pairs)
        dx = sum(2.0 * a * b for a, b in pairs[1:])
        return 2 * fwd + dx


def system_names(backends: list[str], peers: list[str]) -> list[str]:
    names = [f"fastnn-{b}" for b in backends]
    names += [PEER_SYSTEMS[p] for p in peers]
    return names
