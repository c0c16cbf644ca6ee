"""Data-parallel training over MPI: synchronous SGD / Adam across processes and hosts.

Launch one process per rank with ``mpiexec`` (``pip install "fastnn[mpi]"`` brings
mpi4py and Open MPI; a system or cluster MPI, Open MPI or MPICH, works through an
mpi4py built against it)::

    mpiexec -n 4 fastnn train --distributed --data train.npz ...
    mpiexec -n 4 python my_script.py      # my_script calls fastnn.distributed.fit

Definition (what a run on N ranks computes):

* Every rank holds the same model and the whole training set. The shuffle order is
  drawn from the shared seed exactly as :meth:`fastnn.Sequential.fit` draws it, so
  the *global* batches -- ``batch_size`` rows each, the last one smaller -- are the
  single-process batches. Rank ``r`` of ``N`` takes the contiguous slice
  ``[n r // N, n (r + 1) // N)`` of every global batch of ``n`` rows (shards differ
  by at most one row; a rank may get none when ``n < N``).
* Each rank runs the forward and backward pass on its shard; the loss kernel gives
  the shard's mean gradient (L2 term included). Scaled by ``n_r / n`` and summed
  over the ranks with one in-place ``MPI.Allreduce`` of the model's flat gradient
  buffer, that is exactly the gradient of the global batch: ``(1/n) sum_i w_i
  grad l_i + l2 W`` (sample and class weights, label smoothing and the L2 term
  behave as in a single process; the shares ``n_r / n`` of the L2 term add up to 1).
* Every rank then applies the identical optimizer step (SGD, Adam, AdamW, with the
  same learning rate and schedule) to identical weights: nothing else is exchanged.

So ``batch_size`` is the global batch and the learning rate is the single-process
one: a run on N ranks computes the updates of a single process on the same global
batches, equal up to the rounding of the reassociated sums (~1e-16 relative in
float64, ~1e-7 in float32). To keep the per-rank batch as you add ranks, multiply
``batch_size`` by N (and scale the learning rate as you would for that batch size
in a single process).

Checkpoints and output: rank 0 alone writes checkpoints (atomically, the same format
as single-process checkpoints, so either kind of run can resume the other's) and
progress output. On resume rank 0 reads and verifies the file and broadcasts it;
initial weights (and optimizer state) are broadcast from rank 0 in every case.
Resuming with the same number of ranks continues bitwise exactly.

Faults: input errors found before training are raised on every rank alike. Any
other exception on one rank calls ``MPI_Abort``, so the launcher ends the whole job
with a non-zero status instead of leaving the other ranks waiting in a collective;
a rank killed outright ends the job the same way (the launcher notices). With
``abort_on_error=False`` an exception on some ranks only -- in a callback, the
learning-rate schedule's epoch end, a training step or the validation pass -- is
raised on every rank instead (the others name the failing rank; see :func:`fit`).
The last checkpoint stays loadable in every case.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import _mpi_probe, serialize, training
from ._validation import check_int
from .callbacks import History
from .checkpoint import CheckpointError
from .data import DataError
from .model import Sequential
from .threads import cpu_count
from .training import LocalStrategy

__all__ = [
    "MPIStrategy",
    "MPIUnavailableError",
    "default_threads",
    "fit",
    "launched_by_mpi",
    "mpiexec_command",
    "mpiexec_env",
    "require_mpi",
    "shard_bounds",
]

#: Environment variables set by MPI launchers in every process they start (Open MPI,
#: PMIx-based launchers incl. Slurm's srun --mpi=pmix, MPICH/Hydra and Intel MPI,
#: MVAPICH).
LAUNCHER_ENV = (
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
)

_INSTALL_HINT = (
    "pip install 'fastnn[mpi]' (mpi4py and, on Linux, Open MPI with its mpiexec), "
    "or mpi4py built against your system's MPI (see docs/distributed.md)"
)
_LAUNCH_HINT = (
    "launch one process per rank with mpiexec, e.g. mpiexec -n 2 fastnn train "
    "--distributed ... (several hosts: mpiexec --hostfile hosts -n 8 ...; see "
    "docs/distributed.md)"
)
_EXIT_ERROR = 1
_EXIT_INTERRUPTED = 130


class MPIUnavailableError(RuntimeError):
    """mpi4py, the MPI library or the MPI launcher is missing."""


# ------------------------------------------------------------------ environment
def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, srun)."""
    return any(name in os.environ for name in LAUNCHER_ENV)


def require_mpi(*, launched: bool = True):
    """Return mpi4py's ``MPI`` module, initialising MPI.

    Parameters
    ----------
    launched : bool, default=True
        Also require that an MPI launcher started this process (otherwise MPI would
        start as a lone "singleton" rank).

    Raises
    ------
    MPIUnavailableError
        With a one-line message telling how to install and launch.
    """
    if importlib.util.find_spec("mpi4py") is None:
        raise MPIUnavailableError(
            f"distributed training needs mpi4py, which is not installed: "
            f"{_INSTALL_HINT}; then {_LAUNCH_HINT}"
        )
    if launched and not launched_by_mpi():
        raise MPIUnavailableError(
            f"--distributed was not started by an MPI launcher: {_LAUNCH_HINT}"
        )
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MPIUnavailableError(
            f"mpi4py could not load an MPI library ({type(exc).__name__}: {first}): "
            f"{_INSTALL_HINT}"
        ) from None
    return MPI


def _mpi():
    if "mpi4py.MPI" in sys.modules:
        return sys.modules["mpi4py.MPI"]
    return require_mpi(launched=False)  # a one-line error when mpi4py is missing


def _world(comm):
    return _mpi().COMM_WORLD if comm is None else comm


def default_threads(comm=None) -> int:
    """Threads per rank so that ranks x threads <= cores on every host.

    The host's cores divided by the ranks running on that host, and never more
    than the cores this rank may run on (Open MPI binds each rank to one core by
    default; pass ``--bind-to none`` or ``--map-by slot:PE=<threads>`` to give a
    rank more). Collective: every rank must call it.
    """
    ranks_here = _ranks_on_this_host(_world(comm))
    host_cores = os.cpu_count() or 1
    return max(1, min(cpu_count(), host_cores // ranks_here))


def _ranks_on_this_host(comm) -> int:
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return local.Get_size()
    finally:
        local.Free()


def _check_thread_budget(comm, n_threads: int) -> None:
    """Collective: warn (once per host) when the threads oversubscribe the cores."""
    ranks_here = _ranks_on_this_host(comm)
    host_cores = os.cpu_count() or 1
    mine = cpu_count()
    if n_threads > mine:
        warnings.warn(
            f"rank {comm.Get_rank()} runs {n_threads} threads but may use only {mine} "
            "core(s): the launcher binds it (Open MPI: add --bind-to none or "
            f"--map-by slot:PE={n_threads})",
            RuntimeWarning,
            stacklevel=4,
        )
    elif ranks_here * n_threads > host_cores and comm.Get_rank() == 0:
        warnings.warn(
            f"{ranks_here} ranks x {n_threads} threads exceed this host's "
            f"{host_cores} cores: expect them to slow each other down",
            RuntimeWarning,
            stacklevel=4,
        )


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``n`` rows that ``rank`` of ``size``
    trains on: contiguous, in rank order, sizes differing by at most one."""
    return n * rank // size, n * (rank + 1) // size


def mpiexec_command(
    n: int, *, transport: str = "shm", mpiexec: str | None = None
) -> list[str]:
    """The ``mpiexec`` argument list that starts ``n`` ranks on this host only.

    Start it with ``env=mpiexec_env()`` so that it also runs as root.

    The command the tests and the benchmark use: loopback only, so it runs in a
    container without a configured network (a loopback interface is enough). For
    Open MPI it adds ``--allow-run-as-root`` when run as root and
    ``--oversubscribe`` (so that ``n`` may exceed the cores), and restricts the byte
    transfer layer to ``transport``: "shm" (shared memory, the single-host default)
    or "tcp" (TCP over the loopback interface). Append the program and its
    arguments.

    Raises
    ------
    MPIUnavailableError
        When no ``mpiexec`` is on the PATH.
    """
    n = check_int("n", n, 1)
    if transport not in ("shm", "tcp"):
        raise ValueError(f"transport must be 'shm' or 'tcp', got {transport!r}")
    exe = mpiexec or shutil.which("mpiexec")
    if exe is None:
        raise MPIUnavailableError(f"mpiexec is not on the PATH: {_INSTALL_HINT}")
    cmd = [exe, "-n", str(n)]
    launcher = _mpi_probe.launcher_info(exe)
    if launcher["flavour"] == "openmpi":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        # more ranks than cores (or than hwloc's cores: SMT, cpusets) still start;
        # Open MPI then leaves them unbound, and binds each to a core otherwise
        cmd.append("--oversubscribe")
        btl = "self,vader" if transport == "shm" else "self,tcp"
        cmd += ["--mca", "btl", btl]
        if _major(launcher["version"]) < 5:
            # Open MPI 4's runtime talks over TCP; Open MPI 5's (PRRTE) refuses a
            # loopback-only interface list and needs none between local ranks
            cmd += ["--mca", "oob_tcp_if_include", "lo"]
        if transport == "tcp":
            cmd += ["--mca", "btl_tcp_if_include", "lo"]
        else:  # single-copy through ptrace (CMA) is refused in many containers
            cmd += ["--mca", "btl_vader_single_copy_mechanism", "none"]
    elif transport == "tcp":  # MPICH / Intel MPI (Hydra): the loopback interface
        cmd += ["-iface", "lo"]
    return cmd


def mpiexec_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start :func:`mpiexec_command` with: ``base`` (default: a
    copy of ``os.environ``) plus, when running as root, Open MPI's consent to run as
    root (``OMPI_ALLOW_RUN_AS_ROOT=1``, ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1``), which
    the launcher passes on to the ranks. Only the returned mapping changes:
    ``os.environ`` of this process is left alone."""
    env = dict(os.environ if base is None else base)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def _mpi_flavour(exe: str) -> str:
    return _mpi_probe.launcher_info(exe)["flavour"]


def _major(version: str | None) -> int:
    """The major number of a version string (0 when unknown)."""
    try:
        return int(version.split(".")[0]) if version else 0
    except ValueError:
        return 0


# -------------------------------------------------------------- rank agreement
def _mark(exc: BaseException) -> BaseException:
    """Mark an exception as raised on every rank alike (no abort needed)."""
    exc.fastnn_collective = True
    return exc


def _is_collective(exc: BaseException) -> bool:
    return bool(getattr(exc, "fastnn_collective", False))


_REMOTE_TYPES: dict[str, type[Exception]] = {
    t.__name__: t
    for t in (
        ValueError,
        TypeError,
        RuntimeError,
        KeyError,
        FileNotFoundError,
        PermissionError,
        OSError,
        CheckpointError,
        DataError,
        MPIUnavailableError,
    )
}


def _describe(error: BaseException | None) -> tuple[str, str] | None:
    """What another rank needs to raise ``error``: (type name, message). Never
    raises: an exception whose ``str()`` fails is described as the traceback module
    prints it (else this rank would raise before the collective the others wait
    in)."""
    if error is None:
        return None
    try:
        message = str(error)
    except Exception:
        message = "<exception str() failed>"
    return type(error).__name__, message


def _remote(described: tuple[str, str], rank: int) -> Exception:
    """Rank ``rank``'s error, described by :func:`_describe`, to raise on another:
    the same type when it is one of :data:`_REMOTE_TYPES`, else a RuntimeError whose
    message starts with the type's name; the message ends with the rank."""
    name, message = described
    cls = _REMOTE_TYPES.get(name)
    if cls is None:
        cls, message = RuntimeError, f"{name}: {message}"
    return _mark(cls(f"{message} (on rank {rank})"))


def _raise_agreed(comm, error: BaseException | None) -> None:
    """Collective: if any rank passes an error, raise the lowest rank's on all."""
    errors = comm.allgather(_describe(error))
    for r, e in enumerate(errors):
        if e is None:
            continue
        if r == comm.Get_rank() and error is not None:
            raise _mark(error)
        raise _remote(e, r)


def _raise_held(errors: list, error: BaseException | None) -> None:
    """After an allgather of every rank's held error (``errors``, as described by
    :func:`_describe`): raise this rank's own ``error`` (type, message and traceback
    unchanged) when it holds one, else the lowest failing rank's, naming that rank;
    nothing when no rank holds one."""
    if error is not None:
        raise _mark(error)
    for r, e in enumerate(errors):
        if e is not None:
            raise _remote(e, r)


def _agreed(comm, fn: Callable, *args: Any) -> Any:
    """Run ``fn`` on every rank; an exception on any rank is raised on all."""
    try:
        result = fn(*args)
    except Exception as exc:
        _raise_agreed(comm, exc)
        raise  # unreachable: _raise_agreed always raises for a local error
    _raise_agreed(comm, None)
    return result


def _on_root(comm, fn: Callable, *args: Any) -> Any:
    """Run ``fn`` on rank 0 and broadcast its result (or raise its error on all)."""
    payload, error = None, None
    if comm.Get_rank() == 0:
        try:
            payload = (True, fn(*args))
        except Exception as exc:
            error = exc
            payload = (False, _describe(exc))
    ok, value = comm.bcast(payload, root=0)
    if ok:
        return value
    if error is not None:
        raise _mark(error)
    raise _remote(value, 0)


def _same_everywhere(comm, facts: dict[str, Any]) -> None:
    """Collective: raise on every rank unless ``facts`` are equal on all ranks."""
    everything = comm.allgather(facts)
    root = everything[0]
    for r, theirs in enumerate(everything[1:], start=1):
        for key in root:
            if theirs.get(key) != root[key]:
                raise _mark(
                    ValueError(
                        f"every rank must call distributed.fit with the same model "
                        f"and data, but {key} is {root[key]!r} on rank 0 and "
                        f"{theirs.get(key)!r} on rank {r}"
                    )
                )


def _abort(comm, exc: BaseException) -> None:
    """Report a failure of this rank alone and end the whole MPI job."""
    rank = comm.Get_rank()
    interrupted = isinstance(exc, KeyboardInterrupt)
    try:
        if os.environ.get("FASTNN_DEBUG"):
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        what = "interrupted" if interrupted else _one_line(exc)
        sys.stderr.write(f"fastnn: rank {rank}: {what}; aborting the MPI job\n")
        sys.stderr.flush()
    finally:
        comm.Abort(_EXIT_INTERRUPTED if interrupted else _EXIT_ERROR)


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (ValueError, RuntimeError)):
        message = f"{type(exc).__name__}: {message}"
    return f"error: {message}"


def _gather_sum(comm, values: Iterable[float]) -> np.ndarray:
    """Sum of float64 ``values`` over the ranks, added in rank order (bitwise the
    same on every rank)."""
    local = np.ascontiguousarray(np.asarray(list(values), dtype=np.float64))
    parts = np.empty((comm.Get_size(), local.size), dtype=np.float64)
    comm.Allgather(local, parts)
    total = np.zeros(local.size, dtype=np.float64)
    for row in parts:
        total += row
    return total


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is not None:
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


# ------------------------------------------------------------------------ fit
def fit(
    model,
    X: Any,
    y: Any,
    *args: Any,
    comm: Any = None,
    abort_on_error: bool = True,
    **kwargs: Any,
) -> History:
    """Train ``model`` data-parallel on every rank of ``comm`` (collective).

    Call it on every rank with the same model (architecture, loss, optimizer,
    dtype, backend), the same full training data and the same arguments; each rank
    trains on its slice of every global batch (see the module docstring for the
    exact definition). Parameters are those of :meth:`fastnn.Sequential.fit`,
    with these differences:

    Parameters
    ----------
    batch_size : int, default=32
        The global batch: rows per optimizer step summed over all ranks.
    seed : int, optional
        As in ``Sequential.fit``; when None, rank 0 draws one and broadcasts it.
    verbose : int, default=1
        0: silent; 1 or more: one line per epoch, printed by rank 0 (no progress
        bar: the launcher forwards each rank's output through a pseudo-terminal of
        its own, where a bar cannot be drawn).
    checkpoint : path, optional
        Written by rank 0 alone (atomically); on resume rank 0 reads it and
        broadcasts it, so only rank 0 needs access to the path.
    callbacks : iterable of Callback
        Run on every rank with the same (globally reduced) metrics; a stop asked
        for on any rank stops all.
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    abort_on_error : bool, default=True
        True: an exception raised on some ranks only (in a callback, in a step)
        calls ``MPI_Abort``: the launcher ends the whole job with a non-zero
        status instead of the other ranks waiting forever.

        False: an exception raised on some ranks only -- in a callback's
        ``on_train_begin``, ``on_epoch_end`` or ``on_train_end`` (including those
        that run on rank 0 alone, ``ModelCheckpoint`` and ``CSVLogger``: a
        missing folder, a failed write), the learning-rate schedule's epoch end,
        a training step (gathering the batch, the forward and backward pass,
        the optimizer update: e.g. a rank out of memory) or the epoch's
        validation pass -- is raised on every rank: the failing rank raises its
        own exception, every other rank the lowest failing rank's, of the same
        type for the usual ones (ValueError, TypeError, KeyError, RuntimeError,
        OSError and its FileNotFoundError and PermissionError, fastnn's
        CheckpointError and DataError; else a RuntimeError whose message starts
        with the type's name), its message ending in "(on rank R)". The error
        travels in the collectives the fit runs anyway: a flag in one more
        element of the step's gradient Allreduce (a failure before it is raised
        in that step, before any rank's update; one in the update at the next
        step's or the metrics' reduction), one more value in the sums of the
        metrics and the validation pass, and the ``allgather`` that closes
        each epoch, the fit and ``on_train_begin`` (the last agrees on a stop
        asked for there in either mode); so a run without errors exchanges
        nothing more. Not covered: an error inside MPI itself, and a rank that
        dies (the launcher ends the job). KeyboardInterrupt and SystemExit are
        never held: they end this rank at once (and the launcher the job, on a
        non-zero exit).

        Either way, errors found before training (bad input, a checkpoint that
        does not fit) and a checkpoint that rank 0 cannot write are raised on
        every rank alike and never abort.

    Returns
    -------
    History
        Identical metrics on every rank (the "time" and "samples_per_sec" of each
        rank's own clock); also "allreduce_time", seconds this rank spent in the
        gradient Allreduce per epoch (communication plus waiting for slower ranks).

    Notes
    -----
    Threads: ``model.n_threads`` per rank, or :func:`default_threads` when None.
    A step is the backend's ``loss_grad`` on the shard, the Allreduce and the
    optimizer's fused update (:class:`MPIStrategy`); in a single process the same
    kernels give the weights of ``Sequential.fit``.
    """
    comm = _world(comm)
    try:
        if not isinstance(model, Sequential):
            raise _mark(TypeError(f"{model!r} is not a fastnn model"))
        try:  # fit's arguments, positional ones included
            bound = _FIT_SIGNATURE.bind(model, X, y, *args, **kwargs).arguments
        except TypeError as exc:
            raise _mark(exc) from None
        del bound["self"], bound["X"], bound["y"]
        strategy = MPIStrategy(comm, hold_errors=not abort_on_error)
        return training.fit(model, X, y, **bound, strategy=strategy)
    except BaseException as exc:
        if (
            _is_collective(exc)
            or not abort_on_error
            or isinstance(exc, SystemExit)
            or comm.Get_size() == 1  # nobody waits for this rank
        ):
            raise
        _abort(comm, exc)
        raise  # only reached when Abort returns (a test double)


_FIT_SIGNATURE = inspect.signature(Sequential.fit)


class MPIStrategy(LocalStrategy):
    """Data-parallel training over an MPI communicator, for :func:`fastnn.training.fit`.

    Each rank runs ``loss_grad`` on its shard of every global batch; the gradients,
    scaled by the shard's share of the batch, are summed with one in-place
    ``Allreduce`` of the flat gradient buffer, then every rank applies the same
    fused optimizer update. Rank 0 alone reads and writes checkpoints and shows
    progress; validation is evaluated sharded. See the module docstring.

    With ``hold_errors=True`` an exception of this rank's own work (inside
    :meth:`hold_errors`, a batch's gathering, a step's forward and backward pass or
    update, the validation pass: :meth:`holds`) is held until the next agreement
    point (the next step's Allreduce, whose last element counts the
    ranks that hold one; the reductions of :meth:`sync_metrics` and
    :meth:`evaluate`, one more value; :meth:`after_train_begin`,
    :meth:`end_epoch`, :meth:`end_fit`), which raises it on this rank and the
    lowest failing rank's on every other; a rank that holds one skips the work of
    its steps until then. Else it propagates at once (and :func:`fit` aborts the
    job).
    """

    defers_sigint = False  # the launcher's Ctrl-C ends the job (MPI_Abort)

    def __init__(self, comm, *, hold_errors: bool = False) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.writes = self.rank == 0
        self._MPI = _mpi()
        self._comm_time = 0.0  # seconds in the gradient Allreduce, this epoch
        self._loss = 0.0  # this rank's sum of shard loss * rows since the last sync
        self._correct = 0
        self._holds = bool(hold_errors)
        self._held: Exception | None = None  # raised at the next agreement point

    def agreed(self, fn, *args):
        return _agreed(self.comm, fn, *args)

    def on_root(self, fn, *args):
        return _on_root(self.comm, fn, *args)

    def seed_entropy(self, entropy):
        if entropy is None:
            return self.comm.bcast(
                np.random.SeedSequence().entropy if self.writes else None, root=0
            )
        return entropy

    def check_same(self, model, data, arguments) -> None:
        facts = {
            "the model": json.dumps(model.get_config(), sort_keys=True, default=str),
            "the backend": model._kernels().name,
            "the training data (SHA-256)": data.fingerprint(),
            "the validation data": None
            if data.X_val is None
            else _digest(data.X_val, data.y_val),
            "the classes": _digest(np.asarray(data.classes).astype(str)),
            "the fit settings": data.settings,
            "the arguments": arguments,
        }
        _same_everywhere(self.comm, facts)

    def threads(self, model) -> int:
        if model.n_threads is None:
            return default_threads(self.comm)
        _check_thread_budget(self.comm, model.n_threads)
        return model.n_threads

    def resumed(self, train_state) -> None:
        written_by, comm_time = serialize.saved_data_parallel_state(train_state)
        if written_by != self.size and self.writes:
            warnings.warn(
                f"resuming on {self.size} ranks from a checkpoint written by "
                f"{written_by}: training continues with the same global batches, "
                "equal up to rounding (bitwise only with the same number of ranks)",
                RuntimeWarning,
                stacklevel=4,
            )
        self._comm_time = comm_time

    def share_state(self, model) -> None:
        _broadcast_state(self.comm, model)
        model._grads_with_flag[-1] = 0  # no rank holds an error (see step)

    def callbacks(self, callbacks):
        # callbacks that write files (ModelCheckpoint, CSVLogger) run on rank 0
        # only, as checkpoints do; the others run on every rank with the same metrics
        return [
            cb for cb in callbacks if self.writes or not getattr(cb, "root_only", False)
        ]

    def verbosity(self, verbose: int) -> int:
        # rank 0 shows one line per epoch (no bar: the launcher pipes the output)
        return 2 if verbose >= 1 and self.writes else 0

    def shard(self, i: int, j: int) -> tuple[int, int]:
        lo, hi = shard_bounds(j - i, self.rank, self.size)
        return i + lo, i + hi

    def begin_epoch(self) -> None:
        self._comm_time = 0.0

    def step(self, model, ws, weighted, batch_rows, l2):
        grads, flagged = model._grads, model._grads_with_flag
        loss, correct = 0.0, 0
        if self._held is None:  # a rank that holds an error skips its work
            try:
                if ws is None:  # fewer rows than ranks in this batch: nothing to add
                    grads.fill(0)
                else:
                    rows = ws.x.shape[0]
                    loss, correct = model._forward_backward(
                        ws.x, ws.y, ws.sw if weighted else None,
                        *(() if l2 is None else (l2,)),
                    )  # fmt: skip
                    if rows != batch_rows:  # the shard's share of the global mean
                        grads *= rows / batch_rows
            except Exception as exc:
                if not self.holds(exc):
                    raise
        # the element after the gradients counts the ranks that hold an error:
        # every rank learns of a failure in this same Allreduce. It is 0 on every
        # rank before each step (the sum of the last one, else set by share_state),
        # so only a failing rank writes it.
        if self._held is not None:
            flagged[-1] = 1
        t0 = time.perf_counter()
        self.comm.Allreduce(self._MPI.IN_PLACE, flagged, op=self._MPI.SUM)
        self._comm_time += time.perf_counter() - t0
        if flagged[-1]:
            flagged[-1] = 0
            self._raise_held_everywhere()
        try:
            model.optimizer.step()
        except Exception as exc:  # held: raised at the next step's or sum's reduction
            if not self.holds(exc):
                raise
        return loss, correct

    def add_batch(self, state, loss, rows, correct) -> None:
        self._loss += loss * rows
        self._correct += correct

    def sync_metrics(self, state) -> None:
        total = self._sum((self._loss, self._correct))
        state.loss_sum += float(total[0])
        state.correct += int(round(total[1]))
        self._loss, self._correct = 0.0, 0

    def evaluate(self, model, X, y_idx, prefix: str) -> dict[str, float]:
        n = X.shape[0]
        lo, hi = shard_bounds(n, self.rank, self.size)
        loss_sum, correct = 0.0, 0
        try:
            loss_sum, correct = model._loss_sum(X[lo:hi], y_idx[lo:hi], None, False)
        except Exception as exc:
            if not self.holds(exc):
                raise
        total = self._sum((loss_sum, correct))
        return model._metrics_from_sums(float(total[0]), float(total[1]), n, prefix)

    def _sum(self, values) -> np.ndarray:
        """``values`` summed over the ranks (:func:`_gather_sum`), with one more:
        whether this rank holds an error; a held error on any rank is raised on
        every rank."""
        total = _gather_sum(self.comm, (*values, self._held is not None))
        if total[-1]:
            self._raise_held_everywhere()
        return total[:-1]

    def _raise_held_everywhere(self) -> None:
        """Collective, once some rank is known to hold an error: this rank raises
        its own, the others the lowest failing rank's (:func:`_raise_held`)."""
        held = self._take_held()
        _raise_held(self.comm.allgather(_describe(held)), held)
        raise _mark(RuntimeError("a rank reported an error but none holds one"))

    def epoch_logs(self) -> dict[str, float]:
        return {"allreduce_time": self._comm_time}

    def progress_note(self) -> str:
        return f"  allreduce {self._comm_time:.2f} s"

    def hold_errors(self):
        return self._hold() if self._holds else contextlib.nullcontext()

    @contextlib.contextmanager
    def _hold(self):
        try:
            yield
        except Exception as exc:  # raised at the next agreement point
            self.holds(exc)

    def holds(self, exc: Exception) -> bool:
        if not self._holds:
            return False
        if self._held is None:  # the first: what the others were told of
            self._held = exc
        return True

    def _take_held(self) -> Exception | None:
        held, self._held = self._held, None
        return held

    def after_train_begin(self, model) -> None:
        # one allgather per fit: a rank that stopped here alone would wait at the
        # fit's end while the others wait in the first Allreduce
        held = self._take_held()
        gathered = self.comm.allgather((bool(model.stop_training), _describe(held)))
        _raise_held([g[1] for g in gathered], held)
        model.stop_training = any(g[0] for g in gathered)

    def end_epoch(self, model) -> None:
        # errors held on any rank are raised on all; a stop asked for on any rank
        # stops all; the weights must agree
        model.stop_training = _check_in_sync(
            self.comm, model, model.stop_training, self._take_held()
        )

    def end_fit(self, model) -> None:
        _check_in_sync(self.comm, model, False, self._take_held())

    def train_state_extra(self) -> dict[str, Any]:
        return serialize.data_parallel_state(self.size, self._comm_time)


def _broadcast_state(comm, model) -> None:
    """Rank 0's weights, optimizer buffers and optimizer scalars on every rank."""
    comm.Bcast(model._params, root=0)
    opt = model.optimizer
    for name in sorted(opt.state):
        comm.Bcast(opt.state[name], root=0)
    opt.load_state_dict(comm.bcast(opt.state_dict(), root=0))
    model._initialized = True


def _check_in_sync(comm, model, stop, held: Exception | None) -> bool:
    """Collective, one ``allgather``: raise the errors held on any rank (see
    :func:`_raise_held`), then raise unless every rank holds bitwise the same
    weights; return whether any rank asks to stop (``stop``)."""
    gathered = comm.allgather((bool(stop), _digest(model._params), _describe(held)))
    _raise_held([g[2] for g in gathered], held)
    digests = [g[1] for g in gathered]
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise _mark(
            RuntimeError(
                f"the weights of rank(s) {bad} differ from rank 0's: the MPI library's "
                "Allreduce did not give every rank the same sum"
            )
        )
    return any(g[0] for g in gathered)


# ------------------------------------------------------------- command line
class CLISession:
    """One rank of ``mpiexec -n N fastnn train --distributed``.

    Created by :func:`run_cli_train`; ``fastnn train`` asks it for the fit to run
    and whether this rank writes output.
    """

    def __init__(self, comm) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.started = False  # training began: fit_function was reached everywhere

    def fit_function(self, model) -> Callable[..., History]:
        """``model.fit``'s distributed twin (same keyword arguments).

        Collective: every rank got here without an error, or the lowest failing
        rank's error (raised before training, see :func:`run_cli_train`) is raised
        on every rank alike."""
        _raise_agreed(self.comm, None)
        self.started = True
        return functools.partial(fit, model, comm=self.comm)

    def summary(self, history: History) -> dict[str, Any]:
        """Distributed facts for the result of ``fastnn train``."""
        spent = history.history.get("allreduce_time", [])
        return {"ranks": self.size, "allreduce_s": float(sum(spent))}


def run_cli_train(train: Callable[..., int], args) -> int:
    """Run ``train(args, session)`` as one rank of a distributed ``fastnn train``.

    Checks mpi4py and the launcher first (one-line errors), sets the threads per
    rank (``--threads``, default :func:`default_threads`). Errors raised on every
    rank alike are reported once, by rank 0; an error on some ranks only aborts the
    whole job (``MPI_Abort``) so that no rank waits forever.
    """
    MPI = require_mpi()
    comm = MPI.COMM_WORLD
    session = CLISession(comm)
    try:
        if args.threads is None:
            args.threads = default_threads(comm)
        return train(args, session)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, Exception) and not (session.started or _is_collective(exc)):
            # before training (a bad option, a missing file): the ranks without an
            # error wait in fit_function's agreement, which this one joins, so that
            # the error is raised on every rank alike and reported once, by rank 0
            try:
                _raise_agreed(comm, exc)
            except Exception as agreed:
                exc = agreed
        if _is_collective(exc):
            if session.is_root:
                raise exc from None
            return _EXIT_ERROR  # rank 0 reports it
        _abort(comm, exc)
        raise
