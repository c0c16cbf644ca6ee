"""The measured GEMM plan: which kernel each product of a training step runs.

fastnn's own GEMM and OpenBLAS are close on many training shapes, and which one wins
depends on the CPU: kernels/gemm.py's rule (own GEMM for ``k <= max_k and n >= min_n``,
and for one-row products with B not transposed) came from measurements on one of them.
So before a model first trains on batches of ``n`` rows, :func:`plan_training` times
both kernels on each product of that step (forward ``x W``, weight gradient ``x^T dZ``,
input gradient ``dZ W^T``), run in the step's order on arrays shaped like the model's,
so each product finds the caches as a step leaves them. Where one kernel is faster by
more than :data:`MARGIN` it takes the product from then on; closer calls keep the rule's
choice. Choices are kept on disk per machine (CPU model, instruction set, the own
GEMM's revision, cache sizes, BLAS library, fastnn version), like FFTW's wisdom, so
each shape is measured once per machine: a later process reads them and runs the same
kernels, so a fit with a fixed seed gives the same bits in every process.

A process enters only the choices of the steps it trains (the file holds every
program's) and, before a prediction on n rows, the file's choices for those forward
products (:func:`enter_kept`, measuring nothing): a model predicts the rows of its
training batches with the kernels it trained with, in any process that loads it.

Where the choices cannot be kept on disk (a read-only cache folder), nothing is
measured and the rule decides, so results never depend on a measurement's noise.
``FASTNN_GEMM_PLAN=rule`` turns measuring off (``measure``, the default, turns it on;
another value is an error); ``FASTNN_CACHE_DIR`` moves the folder
(default ``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``).

The same file keeps, per thread count, the size from which the element-wise kernels
(activations, losses, the update) run in parallel (:func:`plan_parallel`): a float32
relu timed serially and in parallel on sizes from 4,096 to 4M elements, the smallest
size from which parallel wins by more than :data:`MARGIN` everywhere above (a
measurement in which it never wins, most likely on a busy machine, is not kept). Where
the serial/parallel line falls changes no result, only the speed.

A product measured after another computation ran the same shape by the rule changes
that shape's kernel for the rest of the process (the last bits of its results); steps
of more than :data:`MAX_STEP_FLOPS` are not measured (the rule's choice there costs
less than timing them would), and a process that has measured for :data:`BUDGET_S`
keeps each new shape as the rule's choice, unmeasured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import write_atomic
from .threads import num_threads

__all__ = [
    "Product",
    "enter_kept",
    "plan_parallel",
    "plan_training",
    "status",
    "training_products",
]

FORMAT = "fastnn-gemm-plan"
VERSION = 1
#: Steps whose products do more than this many flops (2 m n k each) are left to the
#: rule: timing them would cost more than a wrong choice could.
MAX_STEP_FLOPS = 1e9
#: The file keeps the choices of this many products, the latest (a fit on a new
#: number of rows adds its step's; the kernels' table holds twice as many).
MAX_KEPT = 1024
#: Seconds to wait for another process measuring the same machine's plan.
LOCK_WAIT_S = 60.0
#: Seconds of measuring one process may spend; past them a new shape is entered as the
#: rule's choice, unmeasured (kept, so every process runs it alike): a stream of fits
#: on ever new numbers of rows (partial_fit on chunks of any size) must not pay for
#: timing each.
BUDGET_S = 3.0
#: Rounds of the step's products, each kernel in turn (the order alternates).
ROUNDS = 15
#: A measurement overrides the rule only when the other kernel's time is at least
#: this fraction lower (the median of the paired ratios): a closer call is within the
#: noise of a shared machine (differences of 1-5% come and go between runs).
MARGIN = 0.05


#: The serial threshold of the element-wise kernels (kernels.set_parallel_min_work) is
#: measured on these sizes (work units: float32 relu elements, 4,096 to 4,194,304),
#: each THRESHOLD_ROUNDS times in each mode, a sample at least THRESHOLD_SAMPLE_S long.
THRESHOLD_SIZES = tuple(2**e for e in range(12, 23))
THRESHOLD_ROUNDS = 5
THRESHOLD_SAMPLE_S = 3e-4

#: A product's key in the file (Product.key).
_KEY = re.compile(r"(float32|float64) [1-9][0-9]*x[1-9][0-9]*x[1-9][0-9]* [NT][NT]")


class Product(NamedTuple):
    """C (m x n) = op(A) op(B) over depth k, as the compiled kernels call GEMM."""

    m: int
    n: int
    k: int
    trans_a: bool
    trans_b: bool

    def key(self, dtype: np.dtype) -> str:
        t = ("T" if self.trans_a else "N") + ("T" if self.trans_b else "N")
        return f"{np.dtype(dtype).name} {self.m}x{self.n}x{self.k} {t}"


def training_products(rows: int, widths: list[tuple[int, int]]) -> list[Product]:
    """The products of one training step on ``rows`` rows through Linear layers of
    (in, out) ``widths``: each layer's ``x W``, ``x^T dZ`` and, past the first,
    ``dZ W^T`` (the first layer's input needs no gradient)."""
    out = []
    for i, (fan_in, fan_out) in enumerate(widths):
        out.append(Product(rows, fan_out, fan_in, False, False))
        out.append(Product(fan_in, fan_out, rows, True, False))
        if i > 0:
            out.append(Product(rows, fan_in, fan_out, False, True))
    return out


# ------------------------------------------------------------------ process state
_lock = threading.Lock()
_loaded: dict[str, bool] = {}  # entries of this machine's file now in the table
_disabled: str | None = None  # why measured choices are not used in this process
_spent_s = 0.0  # measuring time of this process so far
# serial thresholds entered, by thread count (None: none kept, the budget spent; the
# file is not read again for that count)
_thresholds: dict[int, int | None] = {}


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _setting() -> str:
    """FASTNN_GEMM_PLAN, read as kernels/isa.py reads FASTNN_ISA: "measure" (also
    when unset or empty) or "rule"; a ValueError naming any other value (a typo must
    not pass for either)."""
    raw = os.environ.get("FASTNN_GEMM_PLAN", "")
    value = raw.strip().lower() or "measure"
    if value not in ("measure", "rule"):
        raise ValueError(f"FASTNN_GEMM_PLAN={raw!r}: expected measure or rule")
    return value


def _extension():
    """(the compiled GEMM module, its plan, kernels/gemm.py) or None: no own GEMM
    (the extension is not built or refuses to load, e.g. FASTNN_ISA names an ISA
    this CPU lacks; show_config says why), nothing to plan."""
    return _import_extension()[0]


def _import_extension():
    """(_extension()'s value, None) or (None, why the extension does not load)."""
    try:
        from .kernels import gemm as plan_module
        from .kernels.cy import GEMM_PLAN
        from .kernels.cy import gemm as ext
    except Exception as exc:  # noqa: BLE001 - the reason is reported, not raised
        return None, f"{type(exc).__name__}: {exc}"
    return (ext, GEMM_PLAN, plan_module), None


def _cache_dir() -> Path:
    explicit = os.environ.get("FASTNN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fastnn"


def _machine(plan) -> dict[str, object]:
    """What the measurements hold for: another value of any of these measures anew."""
    from . import __version__
    from ._config import cpu_info
    from .kernels import gemm
    from .kernels._blas import CBLAS

    return {
        "cpu": cpu_info()["model"],
        "isa": plan.isa,
        "kernels": gemm.REVISION,
        "l1": plan.l1_bytes,
        "l2": plan.l2_bytes,
        "blas": os.path.basename(CBLAS.path or ""),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "numpy": np.__version__,
        "fastnn": __version__,
    }


def _file_for(machine: dict[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()
    return _cache_dir() / f"gemm-plan-{digest[:16]}.json"


def _read(path: Path, machine: dict[str, object]) -> dict[str, dict]:
    """The products and serial thresholds of ``path`` ({"products": ...,
    "parallel": ...}, empty when it is missing; a warning when it is unreadable or
    not a plan of this machine: it is measured and written anew)."""
    from . import kernels

    empty = {"products": {}, "parallel": {}}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty
    except OSError as exc:
        warnings.warn(f"cannot read the GEMM plan {path}: {exc}", RuntimeWarning, 2)
        return empty
    try:
        doc = json.loads(text)
        parallel = doc.get("parallel", {})
        ok = (
            doc.get("format") == FORMAT
            and doc.get("version") == VERSION
            and doc.get("machine") == machine
            and isinstance(doc.get("products"), dict)
            and all(
                _KEY.fullmatch(k)
                and isinstance(v, dict)
                and isinstance(v.get("own"), bool)
                for k, v in doc["products"].items()
            )
            and isinstance(parallel, dict)
            and all(
                re.fullmatch(r"[1-9][0-9]*", k)
                and isinstance(v, dict)
                and type(v.get("min_work")) is int
                and 1 <= v["min_work"] <= kernels.MAX_MIN_WORK
                for k, v in parallel.items()
            )
        )
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        warnings.warn(
            f"ignoring the GEMM plan {path}: not a {FORMAT} v{VERSION} file of this "
            "machine; its products are measured again",
            RuntimeWarning,
            2,
        )
        return empty
    return {"products": doc["products"], "parallel": parallel}


def _edit_file(plan, edit: Callable[[dict[str, dict]], bool]) -> dict[str, dict] | None:
    """Under the file's lock: read this machine's file (_read), let ``edit`` add to
    it (True when it did: then the file is written back, atomically, the latest
    MAX_KEPT products kept). The contents (every product read or added), or None
    when the folder cannot keep them: then measured choices are off in this
    process."""
    global _disabled
    machine = _machine(plan)
    path = _file_for(machine)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            doc = _read(path, machine)
            if edit(doc):
                # the oldest out of the file only: this process still runs them
                kept = dict(list(doc["products"].items())[-MAX_KEPT:])
                text = json.dumps(
                    {"format": FORMAT, "version": VERSION, "machine": machine,
                     **doc, "products": kept},
                    indent=1,
                ).encode()  # fmt: skip
                write_atomic(path, lambda f: f.write(text))
    except OSError as exc:
        # a measurement kept nowhere would differ between processes: the rule
        _disabled = f"cannot keep the plan in {path.parent}: {exc}"
        return None
    return doc


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path``: processes that start together (MPI
    ranks) measure each product once and all run the one choice. A POSIX record
    lock: a child forked meanwhile does not inherit it. Raises TimeoutError after
    LOCK_WAIT_S (a process stuck while holding it must not hang this one)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): processes may measure twice
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process held {path.name}.lock for {LOCK_WAIT_S} s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _enter(ext, products: dict[str, dict]) -> None:
    """Put the choices of ``products`` (keys of Product.key) in the kernels' table."""
    for key, entry in products.items():
        if key in _loaded:
            continue
        dtype, shape, trans = key.split(" ")
        m, n, k = (int(v) for v in shape.split("x"))
        if ext._plan_set(m, n, k, trans[0] == "T", trans[1] == "T",
                         dtype == "float64", entry["own"]):  # fmt: skip
            _loaded[key] = entry["own"]


def _measure_step(ext, plan_module, rows, widths, dtype) -> dict[Product, float]:
    """Per product of the step, the median over rounds of (own GEMM's time /
    OpenBLAS's): thread CPU time of each call, the products in the step's order
    (forward through the layers, then each layer's weight and input gradients from
    the last), the fixed blocks one after the other in this thread (each kernel
    single-threaded, as each thread of a step runs it), then a pass over the weights
    and gradients as the update makes."""
    rng = np.random.default_rng(0)
    sizes = [widths[0][0]] + [fan_out for _, fan_out in widths]
    acts = [rng.standard_normal((rows, s)).astype(dtype) for s in sizes]
    dzs = [rng.standard_normal((rows, s)).astype(dtype) for s in sizes]
    weights = [(0.05 * rng.standard_normal(w)).astype(dtype) for w in widths]
    grads = [np.empty(w, dtype) for w in widths]
    calls = [
        (Product(rows, fan_out, fan_in, False, False), acts[i], weights[i], acts[i + 1])
        for i, (fan_in, fan_out) in enumerate(widths)
    ]
    for i in reversed(range(len(widths))):
        fan_in, fan_out = widths[i]
        calls.append(
            (Product(fan_in, fan_out, rows, True, False), acts[i], dzs[i + 1], grads[i])
        )
        if i > 0:
            calls.append(
                (Product(rows, fan_in, fan_out, False, True), dzs[i + 1], weights[i],
                 dzs[i])
            )  # fmt: skip
    own, blas = plan_module.MODE_OWN, plan_module.MODE_BLAS
    times: dict[int, dict[Product, list[int]]] = {own: {}, blas: {}}

    def step(mode: int, record: bool) -> None:
        spent: dict[Product, int] = {}
        for p, a, b, c in calls:
            start = time.thread_time_ns()
            ext.gemm(a, b, c, p.trans_a, p.trans_b, 1.0, 0.0, mode, True)
            spent[p] = spent.get(p, 0) + time.thread_time_ns() - start
        for w, g in zip(weights, grads, strict=True):  # the update reads both
            np.multiply(w, 1.0, out=w)
            g.sum()
        if record:
            for p, t in spent.items():
                times[mode].setdefault(p, []).append(t)

    step(own, False), step(blas, False)  # packing space, caches
    for r in range(ROUNDS):
        for mode in (own, blas) if r % 2 == 0 else (blas, own):
            step(mode, True)
    return {
        p: statistics.median(
            o / max(b, 1) for o, b in zip(times[own][p], times[blas][p], strict=True)
        )
        for p in times[own]
    }


def _choice(plan, product: Product, ratio: float | None) -> dict[str, object]:
    """The file's entry for a product measured at ``ratio`` (own time / OpenBLAS's):
    the kernel faster by more than MARGIN, else the rule's (None: not measured, the
    rule's)."""
    rule = plan.rule_takes(product.m, product.n, product.k, product.trans_b)
    if ratio is None:
        return {"own": rule, "ratio": None, "rule": rule}
    own = True if ratio < 1 - MARGIN else False if ratio > 1 + MARGIN else rule
    return {"own": own, "ratio": round(ratio, 4), "rule": rule}


def _planning(rows: int):
    """What _extension() returns when products on ``rows`` rows take planned
    choices; None when the rule alone decides (no rows, FASTNN_GEMM_PLAN=rule, no
    own GEMM)."""
    if rows < 1 or _setting() == "rule":
        return None
    return _extension()


def plan_training(rows: int, widths: list[tuple[int, int]], dtype) -> None:
    """Make sure each product of a training step on ``rows`` rows (layers of (in,
    out) ``widths``, ``dtype``) has its measured kernel in the table (see the module
    docstring); measures those this machine's file lacks and adds them to it."""
    found = _planning(rows)
    if found is None:
        return
    ext, plan, plan_module = found
    dtype = np.dtype(dtype)
    wanted = training_products(rows, widths)
    if sum(2.0 * p.m * p.n * p.k for p in wanted) > MAX_STEP_FLOPS:
        return
    with _lock:
        if _disabled is not None or all(p.key(dtype) in _loaded for p in wanted):
            return

        def add_missing(doc: dict[str, dict]) -> bool:
            global _spent_s
            products = doc["products"]
            missing = [p for p in wanted if p.key(dtype) not in products]
            if not missing:
                return False
            ratios = {}
            if _spent_s < BUDGET_S:
                start = time.perf_counter()
                ratios = _measure_step(ext, plan_module, rows, widths, dtype)
                _spent_s += time.perf_counter() - start
            for p in missing:
                products[p.key(dtype)] = _choice(plan, p, ratios.get(p))
            return True

        doc = _edit_file(plan, add_missing)
        if doc is None:
            return
        # this step's choices only: the file also holds those of every other program
        # run on this machine, which must not change this one's bits
        _enter(ext, {p.key(dtype): doc["products"][p.key(dtype)] for p in wanted})


def _parallel_ratios(threads: int) -> dict[int, float]:
    """Per size of THRESHOLD_SIZES, a parallel float32 relu's time over the serial
    one's on ``threads`` threads, through the Cython kernels, the serial threshold
    switched between none and all for each: the fastest of THRESHOLD_ROUNDS samples
    of each (wall time, the order alternating), as a parallel sample that waited for
    a descheduled worker is hundreds of times slower than one that did not."""
    from . import kernels

    raw = kernels.get_backend("cython").raw
    relu = kernels.activation_code("relu")
    x = np.random.default_rng(0).standard_normal(THRESHOLD_SIZES[-1], np.float32)
    out = np.empty_like(x)

    def per_call(size: int, parallel: bool, calls: int) -> float:
        kernels.set_parallel_min_work(threads, 0 if parallel else kernels.MAX_MIN_WORK)
        xs, outs = x[:size], out[:size]
        start = time.perf_counter()
        for _ in range(calls):
            raw.activation_forward(xs, outs, relu, 0.0)
        return (time.perf_counter() - start) / calls

    ratios = {}
    for size in THRESHOLD_SIZES:
        once = max(per_call(size, False, 1), per_call(size, True, 1))  # warm-up
        calls = max(1, int(THRESHOLD_SAMPLE_S / max(once, 1e-7)))
        samples: dict[bool, list[float]] = {True: [], False: []}
        for r in range(THRESHOLD_ROUNDS):
            for parallel in (True, False) if r % 2 == 0 else (False, True):
                samples[parallel].append(per_call(size, parallel, calls))
        ratios[size] = min(samples[True]) / min(samples[False])
    return ratios


def _min_work(ratios: dict[int, float]) -> int | None:
    """The serial threshold these ratios call for: the smallest size from which
    parallel is faster by more than MARGIN at every size timed; None when it is not
    at the largest (then the machine was most likely busy: nothing is kept)."""
    chosen = None
    for size in sorted(ratios, reverse=True):
        if ratios[size] >= 1 - MARGIN:
            break
        chosen = size
    return chosen


def plan_parallel(threads: int) -> None:
    """Before a model first trains on ``threads`` threads: the compiled kernels'
    serial threshold for that count (kernels.set_parallel_min_work), measured once
    per machine and thread count and kept in the plan's file. A threshold changes no
    result, only the speed; unmeasured (one thread, FASTNN_GEMM_PLAN=rule, no own
    GEMM, the measuring budget spent), kernels/tuning.py's holds."""
    from . import kernels

    found = _planning(1)
    if found is None or threads < 2:
        return
    with _lock:
        if _disabled is not None or threads in _thresholds:
            return

        def add_threshold(doc: dict[str, dict]) -> bool:
            global _spent_s
            if str(threads) in doc["parallel"] or _spent_s >= BUDGET_S:
                return False
            start = time.perf_counter()
            try:
                with num_threads(threads, blas=False):  # the kernels alone
                    ratios = _parallel_ratios(threads)
            finally:
                kernels.set_parallel_min_work(threads, None)
                _spent_s += time.perf_counter() - start
            min_work = _min_work(ratios)
            if min_work is None:  # this process keeps the default; the next measures
                return False
            doc["parallel"][str(threads)] = {
                "min_work": min_work,
                "ratios": {str(k): round(v, 4) for k, v in ratios.items()},
            }
            return True

        doc = _edit_file(found[1], add_threshold)
        if doc is None:
            return
        entry = doc["parallel"].get(str(threads))
        _thresholds[threads] = None if entry is None else entry["min_work"]
        kernels.set_parallel_min_work(threads, _thresholds[threads])


def enter_kept(rows: int, widths: list[tuple[int, int]], dtype) -> None:
    """Before a model first predicts ``rows`` rows (layers of (in, out) ``widths``):
    enter the choices this machine's file keeps for those forward products, measuring
    nothing. So a model predicts n rows with the kernels its training on batches of n
    rows ran, in the process that trained it and in any that loads it; a product no
    step on this machine has measured keeps the rule."""
    found = _planning(rows)
    if found is None:
        return
    ext, plan, _ = found
    dtype = np.dtype(dtype)
    keys = [
        Product(rows, fan_out, fan_in, False, False).key(dtype)
        for fan_in, fan_out in widths
    ]
    with _lock:
        if _disabled is not None or all(key in _loaded for key in keys):
            return
        machine = _machine(plan)
        products = _read(_file_for(machine), machine)["products"]
        _enter(ext, {key: products[key] for key in keys if key in products})


def status() -> dict[str, object]:
    """What ``fastnn info`` says of the plan: how products are chosen, the file that
    keeps this machine's measurements, how many it holds and this process uses, and
    the serial thresholds measured (by thread count)."""
    found = _extension()
    path = kept = None
    # serial thresholds by thread count: in use, kept
    parallel = {t: work for t, work in _thresholds.items() if work is not None}
    try:
        setting = _setting()
    except ValueError as exc:
        setting = str(exc)
        how = f"none: a fit raises ValueError ({exc})"
    if setting not in ("measure", "rule"):
        pass
    elif setting == "rule":
        how = "the rule alone (FASTNN_GEMM_PLAN=rule)"
    elif found is None:
        # e.g. FASTNN_ISA names an ISA this CPU lacks: then the compiled backends do
        # not load either, and nothing runs OpenBLAS "alone"
        how = f"none: fastnn's own GEMM does not load ({_import_extension()[1]})"
    elif _disabled is not None:
        how = f"the rule alone ({_disabled})"
    elif (blocked := _unwritable(_cache_dir())) is not None:
        # what a fit would find (it disables the plan then): info tells it first
        how = f"the rule alone (cannot keep the plan in {_cache_dir()}: {blocked})"
    else:
        how = "measured per product shape when a model first trains, else the rule"
        machine = _machine(found[1])
        path = _file_for(machine)
        doc = _read(path, machine)
        kept = len(doc["products"])
        parallel.update({int(t): e["min_work"] for t, e in doc["parallel"].items()})
    return {"how": how, "file": str(path) if path else None, "kept": kept,
            "in_use": len(_loaded), "parallel": parallel}  # fmt: skip


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` could not be created or written by this process (None: it
    can), found without creating anything: ``fastnn info`` has no side effects."""
    path = folder
    while not path.exists():
        if path.parent == path:
            return "no existing parent folder"
        path = path.parent
    if not path.is_dir():
        return f"{str(path)!r} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{str(path)!r} is not writable"
    return None


def loaded() -> dict[str, bool]:
    """The choices this process entered in the table (Product.key: own GEMM?)."""
    return dict(_loaded)


def _forget() -> None:
    """Empty the table and this module's state (tests)."""
    global _disabled, _spent_s
    found = _extension()
    if found is not None:
        found[0]._plan_clear()
    _loaded.clear()
    _disabled = None
    _spent_s = 0.0
    from . import kernels

    for threads in list(_thresholds):
        kernels.set_parallel_min_work(threads, None)
    _thresholds.clear()
