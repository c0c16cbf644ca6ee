"""One benchmarked system in a fresh process of its own.

``fastnn bench`` starts this file as a script (by path, never ``-m``, which would
import fastnn) once per system, so every baseline runs the way its own users run it:
a process that never imported fastnn, with the environment it was given and the
library's default thread settings (only a thread count below the core count is set,
the way a user of that library sets it). The parent alternates the processes round by
round (fastnn/bench/isolated.py).

Protocol, one JSON object per line on the original stdout (library output that
reaches file descriptor 1 is sent to stderr instead):

* argv[1] is the spec: ``system``, ``task`` ("epoch": one training epoch per sample;
  "fit": one whole MLPClassifier fit per sample, or MLPRegressor with ``estimator``
  "regressor" and ``outputs`` instead of ``classes``; "ops": the per-op kernel cases of
  one fastnn backend, ``cases`` ("op|shape" ids) and ``min_time``; "gemm": the
  products of one training step by fastnn's GEMM, ``gemm`` "own" or "openblas",
  or by NumPy, ``gemm`` "numpy", and ``min_time``; "predict": one
  predict_proba call per case ("<network>|<rows>") of a system fitted briefly
  through its own API, ``networks``, ``rows``, ``n_fit``, ``fit_batch``,
  ``fit_epochs`` and ``min_time``), ``sizes``,
  ``batch_size``,
  ``n_samples``, ``threads``, ``warmup`` (untimed samples before "ready"), ``ranks``
  (an "epoch" of fastnn.distributed.fit: this process is one rank of an MPI job of
  that many, started by ``mpiexec``; rank 0 speaks the protocol), ``suite``
  (the folder of numpy_mlp.py / torch_mlp.py / jax_mlp.py), ``preload`` (None,
  "import": ``import fastnn`` first, "fit": also one small fastnn fit first), and for
  "fit" ``solver``, ``hidden``, ``epochs``.
* first line: ``{"ready": true, "pid", "environ_sha256", "fastnn_imported", ...}``
  or ``{"skip": reason}`` (the system cannot run here; exit 0).
* each ``run`` line on stdin is answered by ``{"seconds": s}`` (the system's own
  timer: fit's epoch time, the baseline's ``fit_epoch`` time, a fit's wall clock;
  for "ops", ``run <case>``: seconds per call, the mean of a calibrated loop;
  for "predict", ``run <case>``: the mean of calls repeated for ``min_time``);
  ``quit`` or end of input ends the process.

Importable for its pure helpers (``make_data``, ``make_regression_data``,
``gemm_step``, ``estimator_params``):
nothing here imports fastnn unless a spec asks for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Hyper-parameters shared by every training system: SGD with momentum, softmax
# cross-entropy + L2 on the weights, ReLU.
LR, MOMENTUM, L2 = 0.01, 0.9, 1e-4
GEMM_ONLY = "numpy-gemm-only"
# + a backend: Sequential.fit on the estimator benchmark's network, data and batch
SEQUENTIAL_FIT = "fastnn-sequential-fit-"
# + a backend: Sequential.predict_proba (the model API) in the inference section
SEQUENTIAL_PREDICT = "fastnn-sequential-"


class Unavailable(Exception):
    """The system cannot run here (the reason is reported, never an error)."""


def _fastnn_with(backend: str):
    """The fastnn module, once ``backend`` is known to load here (else Unavailable,
    with the reason fastnn gives)."""
    import fastnn

    if backend not in fastnn.available_backends():
        raise Unavailable(fastnn.kernels.backend_status().get(backend, "unknown"))
    return fastnn


def _workload_mlp(sizes, backend: str, threads: int):
    """The training workloads' network through the model API: ReLU, SGD with
    momentum, softmax cross-entropy + L2, float32."""
    fastnn = _fastnn_with(backend)
    return fastnn.MLP(
        sizes,
        activation="relu",
        optimizer=fastnn.SGD(lr=LR, momentum=MOMENTUM),
        loss=fastnn.SoftmaxCrossEntropy(l2=L2),
        dtype=np.float32,
        backend=backend,
        n_threads=threads,
    )


def environ_digest(environ: dict[str, str]) -> str:
    """A fingerprint of an environment (to show a process got the one it was given)."""
    text = "\0".join(f"{k}={v}" for k, v in sorted(environ.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def make_data(sizes, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float32 inputs and labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((sizes[0], sizes[-1]), dtype=np.float32)
    y = np.ascontiguousarray((X @ teacher).argmax(axis=1).astype(np.intp))
    return X, y


def make_regression_data(
    features: int, outputs: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float32 inputs and targets from a random tanh teacher, plus noise;
    targets (n,) for one output (as a user passes them), else (n, outputs)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features), dtype=np.float32)
    teacher = rng.standard_normal((features, outputs), dtype=np.float32)
    y = np.tanh(X @ (teacher / np.float32(np.sqrt(features))))
    y += np.float32(0.1) * rng.standard_normal(y.shape, dtype=np.float32)
    return X, np.ascontiguousarray(y[:, 0] if outputs == 1 else y)


Sample = Callable[[], object]


def _run(fn: Sample, loops: int, self_timed: bool = False) -> float:
    t0 = time.perf_counter()
    if self_timed:
        return sum(float(fn()) for _ in range(loops)) / loops
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def calibrate(fn: Sample, min_time: float, max_loops: int = 1_000_000) -> int:
    """Calls per sample so that one sample lasts at least ``min_time`` seconds.

    ``fn`` has been warmed up by the caller (JIT compile, first touch).
    """
    loops = 1
    while True:
        t = _run(fn, loops) * loops
        if t >= min_time or loops >= max_loops:
            return loops
        if t <= 0:
            loops *= 10
        else:
            loops = min(
                max_loops, max(loops + 1, math.ceil(loops * 1.2 * min_time / t))
            )


def gemm_step(
    sizes, batch: int, seed: int = 2
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
            {"pass": kind, "layer": layer, "m": m, "k": k, "n": n,
             "flops": 2.0 * m * k * n}
        )  # fmt: skip
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


def estimator_params(solver: str, hidden, epochs: int) -> dict:
    """MLPClassifier / MLPRegressor parameters (scikit-learn's and fastnn's) for a
    fixed-length fit: ``epochs`` epochs all run (tol=0, n_iter_no_change never
    reached), defaults otherwise (batch "auto": 200)."""
    return dict(hidden_layer_sizes=tuple(hidden), solver=solver, max_iter=epochs,
                tol=0.0, n_iter_no_change=10**9, random_state=0)  # fmt: skip


def _load_suite(folder: str, name: str):
    """benchmarks/<name>.py by path, under a name outside the fastnn package."""
    path = Path(folder) / f"{name}.py"
    if not path.is_file():
        raise Unavailable(f"{path} not found")
    spec = importlib.util.spec_from_file_location(f"_fastnn_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gemm_only_epoch(spec: dict) -> Callable[[], float]:
    _, calls = gemm_step(spec["sizes"], spec["batch_size"])
    steps = max(1, spec["n_samples"] // spec["batch_size"])
    matmul = np.matmul

    def epoch() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            for A, B, C in calls:
                matmul(A, B, out=C)
        return time.perf_counter() - t0

    return epoch


def _epoch_system(spec: dict, X, y) -> Callable[[], float]:
    """A callable running one training epoch and returning its seconds."""
    name, b, sizes = spec["system"], spec["batch_size"], tuple(spec["sizes"])
    threads = spec["threads"]
    if name == GEMM_ONLY:
        return _gemm_only_epoch(spec)
    if name.startswith("fastnn-"):
        model = _workload_mlp(sizes, name.removeprefix("fastnn-"), threads)
        classes = np.arange(sizes[-1])
        train = model.fit
        if spec.get("ranks"):  # one rank of an MPI job; b is the global batch
            from fastnn import distributed

            train = functools.partial(distributed.fit, model)

        def epoch() -> float:
            # fit's own epoch timer: shuffle, gather and steps, without fit's one-time
            # input validation and data hashing
            h = train(X, y, epochs=1, batch_size=b, verbose=0, classes=classes)
            return h["time"][-1]

        return epoch
    rng = np.random.default_rng(1)
    if name == "numpy-mlp":
        net = _load_suite(spec["suite"], "numpy_mlp").NumpyMLP(
            sizes, lr=LR, momentum=MOMENTUM, l2=L2
        )
        return lambda: net.fit_epoch(X, y, b, rng)["time"]
    if name in ("torch-eager", "jax-jit"):
        module = _load_suite(spec["suite"], name.split("-")[0] + "_mlp")
        ok, why = module.available()
        if not ok:
            raise Unavailable(why)
        # threads: the environment the parent gave this process (as users set it)
        net = (module.TorchMLP if name == "torch-eager" else module.JaxMLP)(
            sizes, lr=LR, momentum=MOMENTUM, l2=L2
        )
        return lambda: net.fit_epoch(X, y, b, rng)["time"]
    if name == "sklearn":
        try:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPClassifier
        except ImportError as exc:
            raise Unavailable(f"scikit-learn not importable ({exc})") from None
        # sklearn's alpha is scaled by 1/batch inside its loss; the cost is the same
        sk = MLPClassifier(
            hidden_layer_sizes=sizes[1:-1], activation="relu", solver="sgd",
            alpha=L2, batch_size=b, learning_rate_init=LR, momentum=MOMENTUM,
            nesterovs_momentum=False, shuffle=True, random_state=0,
        )  # fmt: skip
        classes = np.arange(sizes[-1])

        def sk_epoch() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                sk.partial_fit(X, y, classes=classes)
                return time.perf_counter() - t0

        return sk_epoch
    raise ValueError(f"unknown system {name!r}")


def _fit_system(spec: dict, X, y) -> Callable[[], float]:
    """A callable fitting a fresh MLPClassifier (MLPRegressor for the ``estimator``
    "regressor") and returning the fit's seconds."""
    name, solver = spec["system"], spec["solver"]
    kind = "MLPRegressor" if spec.get("estimator") == "regressor" else "MLPClassifier"
    hidden, epochs = tuple(spec["hidden"]), spec["epochs"]
    if name == GEMM_ONLY:
        epoch = _gemm_only_epoch(
            {"sizes": (X.shape[1], *hidden, int(y.max()) + 1),
             "batch_size": min(200, len(X)), "n_samples": len(X)}
        )  # fmt: skip
        return lambda: sum(epoch() for _ in range(epochs))
    params = estimator_params(solver, hidden, epochs)
    if name.startswith(SEQUENTIAL_FIT):
        return _sequential_fit(name.removeprefix(SEQUENTIAL_FIT), params, spec, X, y)
    if name == "sklearn":
        try:
            from sklearn import neural_network
        except ImportError as exc:
            raise Unavailable(f"scikit-learn not importable ({exc})") from None
        Estimator = getattr(neural_network, kind)
    elif name.startswith("fastnn-"):
        backend = name.removeprefix("fastnn-")
        Estimator = getattr(_fastnn_with(backend), kind)
        params.update(backend=backend, n_threads=spec["threads"])
    else:
        raise ValueError(f"unknown system {name!r}")
    from sklearn.exceptions import ConvergenceWarning

    def fit() -> float:
        est = Estimator(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            est.fit(X, y)
            return time.perf_counter() - t0

    return fit


def _sequential_fit(backend: str, params: dict, spec: dict, X, y):
    """Sequential.fit on MLPClassifier's network, data, batch size, optimizer and
    epochs (its multiclass problem has softmax outputs: the same steps)."""
    fastnn = _fastnn_with(backend)
    batch = min(200, len(X))  # batch_size="auto"
    if params["solver"] == "sgd":  # scikit-learn's defaults: Nesterov momentum 0.9
        optimizer, settings = fastnn.SGD, dict(lr=1e-3, momentum=0.9, nesterov=True)
    else:
        optimizer, settings = fastnn.Adam, dict(lr=1e-3)
    sizes = (X.shape[1], *params["hidden_layer_sizes"], int(y.max()) + 1)

    def fit() -> float:
        model = fastnn.MLP(
            sizes,
            activation="relu",
            optimizer=optimizer(**settings),
            loss=fastnn.SoftmaxCrossEntropy(l2=1e-4 / batch),  # alpha / batch
            dtype=X.dtype,
            backend=backend,
            n_threads=spec["threads"],
        )
        t0 = time.perf_counter()
        model.fit(X, y, epochs=params["max_iter"], batch_size=batch, verbose=0, seed=0)
        return time.perf_counter() - t0

    return fit


def _gemm_system(spec: dict) -> tuple[Callable[[], float], dict]:
    """The products of one training step (``gemm_step``): through fastnn's compiled
    GEMM entry point in fixed blocks, all by its own GEMM ("own"), all by OpenBLAS
    as fastnn calls it ("openblas") or each by the kernel the measured plan gives it
    as a fit does ("plan"), or by ``np.matmul`` as NumPy's users run it
    ("numpy": OpenBLAS's own threads, fastnn never imported): seconds per step, the
    mean of a calibrated loop."""
    if spec["gemm"] == "numpy":
        return _numpy_gemm_system(spec)
    fastnn = _fastnn_with("cython")
    from fastnn.kernels import gemm as plan
    from fastnn.kernels.cy import GEMM_PLAN
    from fastnn.kernels.cy import gemm as ext

    mode = {"own": plan.MODE_OWN, "openblas": plan.MODE_BLAS, "plan": plan.MODE_PLAN}
    mode = mode[spec["gemm"]]
    _, calls = gemm_step(spec["sizes"], spec["batch_size"])
    if spec["gemm"] == "plan":  # as a model's first fit: read or measure the plan
        from fastnn import _gemm_wisdom

        sizes = spec["sizes"]
        widths = list(zip(sizes[:-1], sizes[1:], strict=True))
        _gemm_wisdom.plan_training(spec["batch_size"], widths, np.float32)
    # (operand, transposed) as stored: a^T and W^T are views of C-ordered arrays
    args = [
        (A.T if not A.flags.c_contiguous else A, not A.flags.c_contiguous,
         B.T if not B.flags.c_contiguous else B, not B.flags.c_contiguous, C)
        for A, B, C in calls
    ]  # fmt: skip
    gemm = ext.gemm

    def step() -> None:
        for a, ta, b, tb, c in args:
            gemm(a, b, c, ta, tb, 1.0, 0.0, mode)

    with fastnn.num_threads(spec["threads"]):
        step()
        loops = calibrate(step, spec["min_time"])

    def sample() -> float:
        with fastnn.num_threads(spec["threads"]):
            step()  # untimed: wakes the pool after the pause between samples
            return _run(step, loops)

    return sample, {"gemm_isa": GEMM_PLAN.isa}


def _numpy_gemm_system(spec: dict) -> tuple[Callable[[], float], dict]:
    _, calls = gemm_step(spec["sizes"], spec["batch_size"])
    matmul = np.matmul

    def step() -> None:
        for A, B, C in calls:
            matmul(A, B, out=C)

    step()
    loops = calibrate(step, spec["min_time"])

    def sample() -> float:
        step()  # untimed: wakes OpenBLAS's threads after the pause between samples
        return _run(step, loops)

    return sample, {}


def _op_system(spec: dict) -> tuple[Callable[[str], float], dict]:
    """The per-op cases of one fastnn backend: ``(sample(case_id), facts)``, facts
    holding each case's first-call seconds (JIT compile or cache load)."""
    from fastnn.bench.workloads import op_cases

    backend = spec["system"].removeprefix("fastnn-")
    fastnn = _fastnn_with(backend)
    be = fastnn.get_backend(backend)
    fns, loops, first = {}, {}, {}
    with fastnn.num_threads(spec["threads"]):
        for case in op_cases(spec["stream_ops"], spec["cases"]):
            key = f"{case.op}|{case.shape}"
            try:
                fns[key] = case.setup(be)
            except Exception as exc:  # a kernel this backend lacks, or a broken one
                first[key] = f"{type(exc).__name__}: {exc}"
                continue
            t0 = time.perf_counter()
            fns[key]()
            first[key] = time.perf_counter() - t0
            fns[key]()  # warm-up
            loops[key] = calibrate(fns[key], spec["min_time"])

    def sample(key: str) -> float:
        with fastnn.num_threads(spec["threads"]):
            fns[key]()  # untimed: wakes the pools after the pause between samples
            return _run(fns[key], loops[key])

    return sample, {"first_call_s": first}


def _threads_in_use(name: str, threads: int) -> int | None:
    """The thread count the system's process runs its predictions on: fastnn's
    ``n_threads``, PyTorch's intra-op threads, else the largest BLAS pool loaded
    (threadpoolctl, when importable; it only reads the libraries' settings)."""
    if name.startswith("fastnn-"):
        return threads
    if name == "torch-eager":
        import torch

        return int(torch.get_num_threads())
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return max(pools) if pools else None


def _predictor(spec: dict, sizes, X, y) -> tuple[Callable[[Any], Any], str]:
    """A system fitted briefly on (X, y) through its own API (weights do not matter
    for latency): ``(predict_proba, api)``, a callable mapping a float32 NumPy array
    of rows to a NumPy array of class probabilities, and what it calls."""
    name, threads = spec["system"], spec["threads"]
    batch, epochs = spec["fit_batch"], spec["fit_epochs"]
    hidden = tuple(sizes[1:-1])
    if name.startswith(SEQUENTIAL_PREDICT):
        model = _workload_mlp(sizes, name.removeprefix(SEQUENTIAL_PREDICT), threads)
        model.fit(X, y, epochs=epochs, batch_size=batch, verbose=0, seed=0)
        return model.predict_proba, "Sequential.predict_proba"
    if name.startswith("fastnn-") or name == "sklearn":
        try:
            from sklearn.exceptions import ConvergenceWarning
        except ImportError as exc:
            raise Unavailable(f"scikit-learn not importable ({exc})") from None

        params = dict(hidden_layer_sizes=hidden, batch_size=batch, max_iter=epochs,
                      random_state=0)  # fmt: skip
        if name == "sklearn":
            from sklearn.neural_network import MLPClassifier
        else:
            backend = name.removeprefix("fastnn-")
            MLPClassifier = _fastnn_with(backend).MLPClassifier
            params.update(backend=backend, n_threads=threads)
        est = MLPClassifier(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        return est.predict_proba, "MLPClassifier.predict_proba"
    rng = np.random.default_rng(1)
    if name == "torch-eager":
        module = _load_suite(spec["suite"], "torch_mlp")
        ok, why = module.available()
        if not ok:
            raise Unavailable(why)
        import torch

        # threads: the environment the parent gave this process (as users set it)
        net = module.TorchMLP(sizes, lr=LR, momentum=MOMENTUM, l2=L2)
        for _ in range(epochs):
            net.fit_epoch(X, y, batch, rng)
        torch_model = net.model.eval()

        def torch_proba(x):
            with torch.no_grad():
                return torch.softmax(torch_model(torch.from_numpy(x)), dim=1).numpy()

        return torch_proba, "torch.no_grad(): softmax(module(torch.from_numpy(x)))"
    if name == "numpy-mlp":
        net = _load_suite(spec["suite"], "numpy_mlp").NumpyMLP(
            sizes, lr=LR, momentum=MOMENTUM, l2=L2
        )
        for _ in range(epochs):
            net.fit_epoch(X, y, batch, rng)
        return net.predict_proba, "NumpyMLP.predict_proba"
    raise ValueError(f"unknown system {name!r}")


def _mean_call(fn: Sample, min_time: float) -> float:
    """Seconds per call of ``fn``, called until ``min_time`` seconds have passed
    (the mean; the call that crosses the line counts). On a shared machine a count
    calibrated in advance can leave a sample far short of ``min_time`` (one
    preempted trial ends the calibration: a 0.5 ms call was given 2 loops against
    50 ms); a deadline cannot. The clock read per call costs < 0.1 us."""
    clock = time.perf_counter
    calls = 0
    t0 = clock()
    while True:
        fn()
        calls += 1
        elapsed = clock() - t0
        if elapsed >= min_time:
            return elapsed / calls


def _predict_system(spec: dict) -> tuple[Callable[[str], float], dict]:
    """One prediction call on ``rows`` rows per case ("<network>|<rows>"), for
    every network of ``networks`` and every count of ``rows``: ``(sample(case),
    facts)``; a sample is the mean seconds per call of calls repeated for at least
    ``min_time`` seconds (:func:`_mean_call`), after one untimed call that wakes the
    pools after the pause between samples."""
    fns = {}
    min_time = spec["min_time"]
    api = None
    for sizes in spec["networks"]:
        sizes = tuple(sizes)
        X, y = make_data(sizes, spec["n_fit"])
        proba, api = _predictor(spec, sizes, X, y)
        Xq, _ = make_data(sizes, max(spec["rows"]), seed=3)
        for rows in spec["rows"]:
            key = "-".join(map(str, sizes)) + f"|{rows}"
            x = np.ascontiguousarray(Xq[:rows])
            p = np.asarray(proba(x))  # the first call: JIT cache load, pools, plans
            if p.shape != (rows, sizes[-1]) or not np.allclose(p.sum(axis=1), 1, 1e-3):
                raise RuntimeError(f"{api} gave no probabilities of shape {p.shape}")
            fns[key] = functools.partial(proba, x)
            _mean_call(fns[key], min(min_time, 0.01))  # warm-up

    def sample(key: str) -> float:
        fns[key]()  # untimed: wakes the pools after the pause between samples
        return _mean_call(fns[key], min_time)

    used = _threads_in_use(spec["system"], spec["threads"])
    return sample, {"api": api, "threads_in_use": used}


def _preload(kind: str | None) -> None:
    """Side-effect probes: what a NumPy user's process looks like next to fastnn."""
    if kind is None:
        return
    import fastnn

    if kind == "fit":
        X, y = make_data((64, 32, 10), 2048, seed=5)
        fastnn.MLP((64, 32, 10)).fit(X, y, epochs=1, batch_size=32, verbose=0)
    elif kind != "import":
        raise ValueError(f"unknown preload {kind!r}")


def main() -> int:
    spec = json.loads(sys.argv[1])
    # the protocol keeps the real stdout; anything printed by a library goes to stderr
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    comm = _mpi_world() if spec.get("ranks") else None

    def send(obj: dict) -> None:
        if comm is None or comm.Get_rank() == 0:  # rank 0 speaks for an MPI job
            proto.write(json.dumps(obj) + "\n")
            proto.flush()

    environ = dict(os.environ)
    t0 = time.perf_counter()
    _preload(spec.get("preload"))
    facts: dict = {}
    if spec["task"] in ("ops", "gemm", "predict"):
        setup = {"ops": _op_system, "gemm": _gemm_system, "predict": _predict_system}
        try:
            sample, facts = setup[spec["task"]](spec)
        except Unavailable as exc:
            send({"skip": str(exc)})
            return 0
        return _serve(send, sample, environ, t0, facts, comm)
    if spec["task"] == "fit":
        if spec.get("estimator") == "regressor":
            X, y = make_regression_data(
                spec["features"], spec["outputs"], spec["n_samples"]
            )
        else:
            sizes = (spec["features"], *spec["hidden"], spec["classes"])
            X, y = make_data(sizes, spec["n_samples"])
        make = _fit_system
    else:
        X, y = make_data(spec["sizes"], spec["n_samples"])
        make = _epoch_system
    try:
        sample = make(spec, X, y)
    except Unavailable as exc:
        send({"skip": str(exc)})
        return 0
    if spec["task"] == "fit":  # warm-up: imports, JIT caches, pools on a slice
        small = slice(0, min(len(X), 1000))
        make({**spec, "epochs": 1}, X[small], y[small])()
    for _ in range(spec.get("warmup", 1)):
        sample()
    return _serve(send, lambda *args: sample(), environ, t0, facts, comm)


def _mpi_world():
    """MPI's world communicator (this process is one rank of a ``ranks`` spec)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _commands(comm):
    """The lines of stdin; in an MPI job rank 0 reads them (the launcher gives stdin
    to rank 0 only) and every rank gets each one, so that all run a sample together."""
    if comm is None:
        yield from sys.stdin
        return
    lines = iter(sys.stdin) if comm.Get_rank() == 0 else None
    while True:
        line = next(lines, "quit") if lines is not None else None
        line = comm.bcast(line, root=0)
        yield line
        if line.split(maxsplit=1)[:1] == ["quit"]:
            return


def _serve(send, sample, environ, t0, facts, comm=None) -> int:
    """Say ready, then answer ``run [case]`` lines until ``quit`` or end of input."""
    send(
        {
            "ready": True,
            "pid": os.getpid(),
            "environ_sha256": environ_digest(environ),
            "fastnn_imported": "fastnn" in sys.modules,
            "setup_s": time.perf_counter() - t0,
            **facts,
        }
    )
    for line in _commands(comm):
        command, *args = line.split(maxsplit=1)
        if command == "run":
            send({"seconds": float(sample(*(a.strip() for a in args)))})
        elif command == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.path.pop(0)  # this folder: nothing in it may shadow a top-level module
    sys.exit(main())
