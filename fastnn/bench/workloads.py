"""What ``fastnn bench`` measures: the per-op cases (from benchmarks/kernel_cases.py,
with honest FLOP and byte counts) and the training systems (fastnn's backends, the
pure-NumPy MLP, PyTorch eager, scikit-learn) on one workload definition."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _suite

F32 = 4  # bytes per element

# Hyper-parameters shared by every training system (issue 6: SGD, softmax-CE + L2).
LR, MOMENTUM, L2 = 0.01, 0.9, 1e-4
# Past-the-cache variants of memory-bound registry ops (8M float32 = 32 MiB per array).
STREAM_ELEMS = 8 * 1024 * 1024
STREAM_OPS = ("relu_forward", "relu_backward", "sgd_nesterov_update", "adam_update")


class Skip(Exception):
    """A system that cannot run here (the reason is reported, never an error)."""


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


# ------------------------------------------------------------ GEMM-only bound
#: The key of the GEMM-only step among the training section's interleaved systems.
GEMM_ONLY = "numpy-gemm-only"


def gemm_step(
    sizes: tuple[int, ...], batch: int, seed: int = 2
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The matrix products of one SGD step of an MLP, and nothing else.

    Returns ``(products, calls)`` in execution order (the NumPy MLP's): forward
    ``x_l @ W_l`` for every layer, then backward from the last layer, per layer the
    weight gradient ``a_l^T @ dZ_l`` and, for every layer but the first, the input
    gradient ``dZ_l @ W_l^T``. ``products``: ``{pass, layer, m, k, n, flops}`` of an
    (m x k) @ (k x n) product, 2mkn FLOP. ``calls``: ``(A, B, C)`` for
    ``np.matmul(A, B, out=C)`` on float32 buffers allocated here once; the layers
    chain through them as in training (layer l's output is layer l+1's input, the
    input gradient of layer l is dZ of layer l-1). No bias, activation, loss or update.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    x = rng.standard_normal((batch, sizes[0]), dtype=f32)
    W = []
    for fan_in, fan_out in pairs:  # He-uniform, as the NumPy MLP: values stay O(1)
        lim = (6.0 / fan_in) ** 0.5
        W.append(rng.uniform(-lim, lim, (fan_in, fan_out)).astype(f32))
    dW = [np.empty_like(w) for w in W]
    a = [np.empty((batch, n), f32) for _, n in pairs]
    dz = [rng.standard_normal((batch, n), dtype=f32) for _, n in pairs]
    products: list[dict[str, Any]] = []
    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(kind: str, layer: int, A, B, C) -> None:
        m, k = A.shape
        n = B.shape[1]
        products.append(
            {
                "pass": kind,
                "layer": layer,
                "m": m,
                "k": k,
                "n": n,
                "flops": 2.0 * m * k * n,
            }
        )
        calls.append((A, B, C))

    inp = x
    for i in range(len(pairs)):
        add("forward", i, inp, W[i], a[i])
        inp = a[i]
    for i in range(len(pairs) - 1, -1, -1):
        prev = x if i == 0 else a[i - 1]
        add("weight_grad", i, prev.T, dz[i], dW[i])
        if i > 0:
            add("input_grad", i, dz[i], W[i].T, dz[i - 1])
    return products, calls


def make_gemm_only(wl: Workload, threads: int) -> tuple[Callable[[], float], int]:
    """``(epoch, steps)``: ``epoch()`` runs the GEMMs of ``steps`` SGD steps (one per
    full batch of an epoch) with NumPy at ``threads`` threads and returns its seconds
    (the thread switch stays outside the time, as in the ceilings' sgemm)."""
    from .. import threads as _threads

    _, calls = gemm_step(wl.sizes, wl.batch_size)
    steps = max(1, wl.n_samples // wl.batch_size)
    matmul = np.matmul

    def epoch() -> float:
        with _threads.num_threads(threads):
            t0 = time.perf_counter()
            for _ in range(steps):
                for A, B, C in calls:
                    matmul(A, B, out=C)
            return time.perf_counter() - t0

    return epoch, steps


def make_data(sizes: tuple[int, ...], n: int, seed: int = 0):
    """Synthetic float32 inputs and labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((sizes[0], sizes[-1]), dtype=np.float32)
    y = np.ascontiguousarray((X @ teacher).argmax(axis=1).astype(np.intp))
    return X, y


def system_names(backends: list[str], peers: list[str]) -> list[str]:
    names = [f"fastnn-{b}" for b in backends]
    names += [
        {"numpy": "numpy-mlp", "torch": "torch-eager", "sklearn": "sklearn"}[p]
        for p in peers
    ]
    return names


def make_system(name: str, wl: Workload, X, y, threads: int) -> Callable[[], float]:
    """A zero-argument callable running one epoch and returning its seconds.

    Raises :class:`Skip` when the system is unavailable here.
    """
    from .. import threads as _threads

    b, k = wl.batch_size, wl.sizes[-1]
    if name.startswith("fastnn-"):
        import fastnn

        # "fastnn-<backend>" trains with the compiled step where the backend has one;
        # "fastnn-<backend>-layers" forces the layer-by-layer path (to compare them)
        backend = name.removeprefix("fastnn-").removesuffix("-layers")
        if backend not in fastnn.available_backends():
            raise Skip(fastnn.kernels.backend_status().get(backend, "unknown backend"))
        model = fastnn.MLP(
            wl.sizes,
            activation="relu",
            optimizer=fastnn.SGD(lr=LR, momentum=MOMENTUM),
            loss=fastnn.SoftmaxCrossEntropy(l2=L2),
            dtype=np.float32,
            backend=backend,
            n_threads=threads,
            compiled_step=not name.endswith("-layers"),
        )
        classes = np.arange(k)

        def epoch() -> float:
            # fit's own epoch timer: shuffle, gather and steps, without fit's one-time
            # input validation and data hashing
            h = model.fit(X, y, epochs=1, batch_size=b, verbose=0, classes=classes)
            return h["time"][-1]

        return epoch
    if name == "numpy-mlp":
        try:
            NumpyMLP = _suite.load("numpy_mlp").NumpyMLP
        except _suite.SuiteNotFound as exc:
            raise Skip(str(exc)) from None
        m = NumpyMLP(wl.sizes, lr=LR, momentum=MOMENTUM, l2=L2)
        rng = np.random.default_rng(1)

        def epoch() -> float:
            with _threads.num_threads(threads):
                return m.fit_epoch(X, y, b, rng)["time"]

        return epoch
    if name == "torch-eager":
        try:
            tm = _suite.load("torch_mlp")
        except _suite.SuiteNotFound as exc:
            raise Skip(str(exc)) from None
        ok, why = tm.available()
        if not ok:
            raise Skip(why)
        m = tm.TorchMLP(wl.sizes, lr=LR, momentum=MOMENTUM, l2=L2, n_threads=threads)
        rng = np.random.default_rng(1)
        return lambda: m.fit_epoch(X, y, b, rng)["time"]
    if name == "sklearn":
        try:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPClassifier
        except ImportError as exc:
            raise Skip(f"scikit-learn not importable ({exc})") from None
        # sklearn's alpha is scaled by 1/batch inside its loss; the cost is the same
        sk = MLPClassifier(
            hidden_layer_sizes=wl.sizes[1:-1],
            activation="relu",
            solver="sgd",
            alpha=L2,
            batch_size=b,
            learning_rate_init=LR,
            momentum=MOMENTUM,
            nesterovs_momentum=False,
            shuffle=True,
            random_state=0,
        )
        classes = np.arange(k)

        def epoch() -> float:
            with _threads.num_threads(threads), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                sk.partial_fit(X, y, classes=classes)
                return time.perf_counter() - t0

        return epoch
    raise ValueError(f"unknown system {name!r}")


# ------------------------------------------------------- MLPClassifier vs sklearn
ESTIMATOR_SOLVERS = ("sgd", "adam")


def estimator_params(solver: str, hidden: tuple[int, ...], epochs: int) -> dict:
    """MLPClassifier parameters (scikit-learn's and fastnn's) for a fixed-length fit:
    ``epochs`` epochs all run (tol=0, n_iter_no_change never reached), defaults
    otherwise (batch "auto": 200)."""
    return dict(hidden_layer_sizes=hidden, solver=solver, max_iter=epochs, tol=0.0,
                n_iter_no_change=10**9, random_state=0)  # fmt: skip


def make_gemm_only_fit(
    hidden: tuple[int, ...], epochs: int, X, y, threads: int | None
) -> Callable[[], float]:
    """The matrix products of an ``epochs``-epoch MLPClassifier fit of (X, y) with
    ``hidden`` layers, alone (buffers made now); the callable returns its seconds."""
    n_classes = int(y.max()) + 1
    wl = Workload((X.shape[1], *hidden, n_classes), min(200, len(X)), len(X))
    epoch, _ = make_gemm_only(wl, threads)
    return lambda: sum(epoch() for _ in range(epochs))


def make_estimator_fit(
    name: str, solver: str, hidden: tuple[int, ...], epochs: int, X, y, threads: int
) -> Callable[[], float]:
    """A zero-argument callable fitting a fresh MLPClassifier (``"sklearn"`` or
    ``"fastnn-<backend>"``) for ``epochs`` epochs, defaults otherwise (batch "auto":
    200), and returning the fit's seconds; ``GEMM_ONLY``: the matrix products of the
    same steps alone. Raises :class:`Skip` when the system is unavailable here."""
    from .. import threads as _threads

    if name == GEMM_ONLY:
        return make_gemm_only_fit(hidden, epochs, X, y, threads)
    params = estimator_params(solver, hidden, epochs)
    if name == "sklearn":
        try:
            from sklearn.neural_network import MLPClassifier as Estimator
        except ImportError as exc:
            raise Skip(f"scikit-learn not importable ({exc})") from None
    elif name.startswith("fastnn-"):
        import fastnn

        backend = name.removeprefix("fastnn-")
        if backend not in fastnn.available_backends():
            raise Skip(fastnn.kernels.backend_status().get(backend, "unknown backend"))
        Estimator = fastnn.MLPClassifier
        params.update(backend=backend, n_threads=threads)
    else:
        raise ValueError(f"unknown system {name!r}")
    from sklearn.exceptions import ConvergenceWarning

    def fit() -> float:
        est = Estimator(**params)
        with _threads.num_threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            est.fit(X, y)
            return time.perf_counter() - t0

    return fit
