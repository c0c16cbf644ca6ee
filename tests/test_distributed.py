"""Data-parallel training over MPI: ``mpiexec -n 2`` runs of
tests/_distributed_worker.py (subprocesses with a timeout) against single-process fits,
exact resume from rank 0's checkpoint, a failing or killed rank ending the job, and
the command line.

The MPI tests skip only when mpi4py or mpiexec is missing (the optional ``mpi``
extra: mpi4py and pip's Open MPI); with FASTNN_REQUIRE_MPI=1 (set by .ci/run) they
fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import _distributed_worker as worker
import numpy as np
import pytest

import fastnn
from fastnn import checkpoint, distributed
from fastnn.cli import main

WORKER = str(Path(__file__).with_name("_distributed_worker.py"))
HAVE_MPI = bool(importlib.util.find_spec("mpi4py")) and bool(shutil.which("mpiexec"))
needs_mpi = pytest.mark.skipif(
    not HAVE_MPI and os.environ.get("FASTNN_REQUIRE_MPI") != "1",
    reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'",
)
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


@pytest.fixture(scope="module", autouse=True)
def _warm_caches():
    """Load every backend here first, so that a fresh install compiles (and caches)
    the Numba kernels once, not in two ranks at the same time."""
    fastnn.available_backends()
    with fastnn.num_threads(1):
        pass


def _env() -> dict[str, str]:
    # mpiexec_env: Open MPI's consent to run as root (CI runs as root)
    return distributed.mpiexec_env(
        dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    )


def _mpiexec(*args: str) -> list[str]:
    # loopback only: TCP over lo (works in a container without a configured network)
    return distributed.mpiexec_command(2, transport="tcp") + list(args)


def launch(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Start ``mpiexec`` in a session of its own (its ranks join it)."""
    return subprocess.Popen(cmd, env=_env(), start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen) -> None:
    """End ``mpiexec`` and every process of its session (no rank left behind)."""
    if proc.poll() is None:
        proc.terminate()  # mpiexec passes it on to every rank, then SIGKILLs them
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in _session(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux /proc; empty elsewhere)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def mpirun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python tests/_distributed_worker.py ARGS``."""
    return run_mpiexec(_mpiexec(sys.executable, WORKER, *args), timeout)


def outcomes(tmp_path, mode: str, *args: str) -> list[str]:
    """Run a 2-rank worker ``mode`` that writes each rank's outcome to
    ``caught.<rank>.txt`` in ``tmp_path``; it must end normally (no hang, no abort).
    Returns the two outcomes, rank 0's first."""
    out = mpirun(mode, *args, str(tmp_path), timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MPI_ABORT" not in out.stderr
    return [(tmp_path / f"caught.{r}.txt").read_text() for r in (0, 1)]


def run_mpiexec(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd``; on a timeout end the whole job and fail."""
    proc = launch(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} still ran after {timeout} s:\n{err[-3000:]}")
    finally:
        stop(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _assert_close(actual, expected, dtype, what):
    tol = TOL[np.dtype(dtype)]
    err = float(np.max(np.abs(actual - expected)))
    assert err <= tol, f"{what}: max |difference| {err:.3g} > {tol:g}"


# ------------------------------------------------------------ without MPI
def test_shards_cover_each_batch_in_rank_order():
    for n in (1, 2, 7, 14, 256):
        for size in (1, 2, 3, 8):
            bounds = [distributed.shard_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 0


def _without_launcher(monkeypatch):
    for name in distributed.LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)


def test_cli_distributed_without_launcher_says_how_to_launch(monkeypatch, capsys):
    _without_launcher(monkeypatch)
    code = main(["train", "--distributed", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("fastnn: error: ")
    assert "mpiexec -n 2 fastnn train --distributed" in err


def test_cli_distributed_without_mpi4py_says_how_to_install(monkeypatch, capsys):
    _without_launcher(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        distributed.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mpi4py" else real(name, *a),
    )
    code = main(["train", "--distributed"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "pip install 'fastnn[mpi]'" in err and "docs/distributed.md" in err
    assert "mpiexec -n 2" in err


@pytest.mark.parametrize("uid", [0, 1000])
def test_mpiexec_env_consents_to_root_in_the_child_only(monkeypatch, uid):
    monkeypatch.setattr(distributed.os, "geteuid", lambda: uid)
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT", raising=False)
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", raising=False)
    env = distributed.mpiexec_env({"PATH": "/bin"})
    expected = {"PATH": "/bin"}
    if uid == 0:
        expected.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    assert env == expected
    assert ("OMPI_ALLOW_RUN_AS_ROOT" in distributed.mpiexec_env()) == (uid == 0)
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in os.environ  # the caller's stays as it was


class _FakeComm:
    """allgather returns what each of three ranks would contribute."""

    def __init__(self, contributions):
        self.contributions = contributions

    def Get_rank(self):
        return 0

    def Get_size(self):
        return len(self.contributions)

    def allgather(self, value):
        return [value, *self.contributions[1:]]


def test_ranks_that_disagree_are_named():
    facts = {"the model": "a", "the fit settings": {"batch_size": 32}}
    other = {"the model": "a", "the fit settings": {"batch_size": 64}}
    with pytest.raises(ValueError, match=r"fit settings .* on rank 0 .* on rank 2"):
        distributed._same_everywhere(_FakeComm([facts, facts, other]), facts)
    distributed._same_everywhere(_FakeComm([facts, facts]), facts)  # agrees: no error
    # an error on rank 1 only is raised on rank 0 too, with its type and rank
    comm = _FakeComm([None, ("FileNotFoundError", "data.npz does not exist")])
    with pytest.raises(FileNotFoundError, match=r"data.npz does not exist \(on rank 1"):
        distributed._raise_agreed(comm, None)


def test_held_errors_raise_their_own_else_the_lowest_failing_rank():
    """abort_on_error=False: a rank that holds an error raises its own (the same
    object); the others the lowest failing rank's, its type named."""
    mine = ValueError("mine")
    described = [("KeyError", "'x'"), ("ValueError", "mine")]
    with pytest.raises(ValueError, match="^mine$") as info:
        distributed._raise_held(described, mine)
    assert info.value is mine and distributed._is_collective(mine)
    others = [None, ("SimulatedError", "boom"), ("OSError", "later")]
    with pytest.raises(RuntimeError, match=r"^SimulatedError: boom \(on rank 1\)$"):
        distributed._raise_held(others, None)
    with pytest.raises(OSError, match=r"^later \(on rank 2\)$"):
        distributed._raise_held([None, None, ("OSError", "later")], None)
    distributed._raise_held([None, None], None)  # nothing held: no error


class _Unprintable(Exception):
    """An exception whose str() fails (its __str__ reads an attribute never set)."""

    def __str__(self):
        return self.detail


def test_held_error_whose_message_cannot_be_read_is_still_raised_everywhere():
    """abort_on_error=False: a held exception whose str() fails is still described
    to the other ranks (before: describing it raised on the failing rank before
    the epoch's allgather, and every other rank waited in it forever)."""
    name, message = distributed._describe(_Unprintable())
    assert name == "_Unprintable" and isinstance(message, str)
    model = SimpleNamespace(_params=np.zeros(3))
    mine = _Unprintable()
    other = (False, distributed._digest(model._params), None)
    with pytest.raises(_Unprintable) as info:
        distributed._check_in_sync(_FakeComm([None, other]), model, False, mine)
    assert info.value is mine
    # the other rank raises it by its type's name
    theirs = [None, distributed._describe(mine)]
    with pytest.raises(RuntimeError, match=r"^_Unprintable: .* \(on rank 1\)$"):
        distributed._raise_held(theirs, None)


def test_gradient_buffer_carries_one_flag_element_also_after_copies():
    """The step's Allreduce reduces _grads_with_flag: the gradients and one more
    element (the failure flag), the same memory as _grads and the layers' views,
    rebuilt (not pickled twice) by pickle and deepcopy."""
    import copy
    import pickle

    model = fastnn.MLP((3, 4, 2), dtype=np.float32)
    model._grads[:] = np.arange(model._grads.size)
    assert "_grads_with_flag" not in model.__getstate__()
    for m in (model, pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        flagged = m._grads_with_flag
        assert flagged.size == m._grads.size + 1 and flagged[-1] == 0
        assert flagged[:-1].ctypes.data == m._grads.ctypes.data
        assert m._grads.ctypes.data % 64 == 0
        assert np.shares_memory(m.layers[0].grad_weight, flagged)
        np.testing.assert_array_equal(m._grads, np.arange(m._grads.size))


# --------------------------------------------------------------- with MPI
@needs_mpi
def test_mpiexec_command_is_loopback_only():
    cmd = distributed.mpiexec_command(2, transport="tcp")
    assert cmd[1:3] == ["-n", "2"]
    if distributed._mpi_flavour(cmd[0]) == "openmpi":
        assert (
            "btl_tcp_if_include" in cmd
            and cmd[cmd.index("btl_tcp_if_include") + 1] == "lo"
        )
    with pytest.raises(ValueError, match="transport"):
        distributed.mpiexec_command(2, transport="ib")


@needs_mpi
def test_two_ranks_match_one_process_on_the_same_global_batches(tmp_path):
    out = mpirun("equivalence", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    for name, (factory, (X, y), kwargs) in worker.scenarios().items():
        got = np.load(tmp_path / f"{name}.npz")
        assert int(got["steps"]) == 10, name
        history = json.loads(str(got["history"]))
        for compiled in (False, True):
            ref = factory()
            ref_hist = ref.fit(X, y, verbose=0, compiled_step=compiled, **kwargs)
            _assert_close(
                got["params"], ref.get_flat_parameters(), ref.dtype, f"{name} weights"
            )
        for key in ("loss", "accuracy", "val_loss", "val_mse", "lr"):
            if key in ref_hist.history:
                np.testing.assert_allclose(
                    history[key], ref_hist.history[key], rtol=1e-5, err_msg=key
                )
        assert len(history["allreduce_time"]) == len(ref_hist.history["loss"])
    # data that differs on one rank: the same error on both ranks, no abort
    caught = [(tmp_path / f"caught.{r}.txt").read_text() for r in (0, 1)]
    assert caught[0] == caught[1] and "training data" in caught[0], caught
    assert "on rank 0" in caught[0] and "on rank 1" in caught[0]


@needs_mpi
def test_rank_failure_aborts_job_and_checkpoint_resumes_exactly(tmp_path):
    ckpt, out, ref = tmp_path / "run.npz", tmp_path / "out.npy", tmp_path / "ref.npy"
    t0 = time.perf_counter()
    # rank 1 raises in its 7th step: the job ends non-zero, rank 0's checkpoint of
    # step 6 stays
    failed = mpirun(
        "run", str(ckpt), str(out), "--fail-step", "7", "--fail-rank", "1", timeout=90
    )
    assert failed.returncode != 0 and time.perf_counter() - t0 < 60
    assert "rank 1: error: simulated failure" in failed.stderr
    meta, _ = checkpoint.read(ckpt)
    assert meta["train_state"]["step"] == 6
    assert meta["train_state"]["distributed"]["world_size"] == 2
    assert not out.exists()
    copy = tmp_path / "copy.npz"
    copy.write_bytes(ckpt.read_bytes())
    # resumed on 2 ranks: bitwise the weights of an uninterrupted run
    done = mpirun("run", str(ckpt), str(out), "--reference", str(ref))
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.load(out).tobytes() == np.load(ref).tobytes()
    final = fastnn.load(ckpt)
    assert final.get_flat_parameters().tobytes() == np.load(out).tobytes()
    assert checkpoint.read(ckpt)[0]["train_state"]["finished"]
    # a single process resumes the same checkpoint format: the finished one without
    # training, the one of step 6 on the same global batches (equal up to rounding)
    for path in (ckpt, copy):
        model, X, y, kwargs = worker.resume_scenario()
        model.fit(
            X, y, epochs=3, checkpoint=path, checkpoint_every=2, resume=True, **kwargs
        )
        if path == ckpt:
            assert model.get_flat_parameters().tobytes() == np.load(out).tobytes()
        _assert_close(model.get_flat_parameters(), np.load(ref), np.float64, "resume")


@needs_mpi
def test_killed_rank_ends_the_job_non_zero_within_60_s(tmp_path):
    ckpt, out = tmp_path / "run.npz", tmp_path / "out.npy"
    with open(tmp_path / "output.txt", "w") as log:
        proc = launch(
            _mpiexec(
                sys.executable,
                WORKER,
                "run",
                str(ckpt),
                str(out),
                "--epochs",
                "100000",
                "--announce",
                str(tmp_path),
            ),  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ready = [tmp_path / f"ready.{r}" for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ckpt.exists() and all(p.exists() for p in ready):
                break
            time.sleep(0.02)
        assert proc.poll() is None and ckpt.exists(), (
            f"the job did not start training: {proc.poll()}, "
            f"{(tmp_path / 'output.txt').read_text()[-3000:]}"
        )
        pids = [int(p.read_text()) for p in ready]
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.perf_counter()
        code = proc.wait(timeout=60)
        elapsed = time.perf_counter() - t0
        left = _session(proc.pid)  # no rank left behind
    finally:
        stop(proc)
    assert code != 0 and elapsed < 60
    assert left == [], left
    meta, _ = checkpoint.read(ckpt)  # the last checkpoint loads
    assert meta["train_state"]["step"] >= 2 and not meta["train_state"]["finished"]
    fastnn.load(ckpt)


@needs_mpi
def test_cli_distributed_matches_single_process(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    X = rng.normal(size=(3, 5))[y] * 2 + rng.normal(size=(150, 5))
    data = tmp_path / "d.npz"
    np.savez(data, X=X, y=y)
    common = [
        "train", "--data", str(data), "--hidden", "16", "--epochs", "3",
        "--batch-size", "10", "--optimizer", "sgd", "--lr", "0.05",
        "--dtype", "float64", "--json", "--seed", "1",
    ]  # fmt: skip
    dist_out = tmp_path / "dist.npz"
    out = run_mpiexec(
        _mpiexec(
            sys.executable,
            "-m",
            "fastnn.cli",
            *common,
            "--distributed",
            "--out",
            str(dist_out),
            "--checkpoint",
            str(tmp_path / "c.npz"),
        ),  # fmt: skip
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # rank 0 alone reports
    result = json.loads(lines[0])
    assert result["ranks"] == 2 and 1 <= 2 * result["threads"] <= max(2, os.cpu_count())
    assert result["allreduce_s"] >= 0 and result["n_train"] == 112
    single_out = tmp_path / "single.npz"
    assert main([*common, "--threads", "1", "--out", str(single_out)]) == 0
    single = json.loads(capsys.readouterr().out)
    got = fastnn.load(dist_out).get_flat_parameters()
    _assert_close(got, fastnn.load(single_out).get_flat_parameters(), np.float64, "cli")
    assert result["test_accuracy"] == pytest.approx(single["test_accuracy"])
    assert result["test_loss"] == pytest.approx(single["test_loss"], rel=1e-9)


_FILE_CALLBACKS = """
import sys
import numpy as np
import fastnn
from fastnn import distributed
out = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 5)); y = np.arange(64) % 2
seen = []
distributed.fit(fastnn.MLP((5, 4, 2), backend="numpy"), X, y, epochs=3, verbose=0,
                seed=0, callbacks=[fastnn.CSVLogger(out + "/log.csv"),
                                   fastnn.ModelCheckpoint(out + "/m{epoch}.npz"),
                                   lambda epoch, logs: seen.append(epoch)])
assert seen == [0, 1, 2]  # a plain callable runs on every rank
"""


@needs_mpi
def test_file_writing_callbacks_run_on_rank_0_only(tmp_path):
    out = run_mpiexec(
        _mpiexec(sys.executable, "-c", _FILE_CALLBACKS, str(tmp_path)), timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,")  # one writer: no duplicates
    assert sorted(p.name for p in tmp_path.glob("m*.npz")) == [
        "m1.npz",
        "m2.npz",
        "m3.npz",
    ]


@needs_mpi
@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.npz"], "data file 'missing.npz' does not exist"),
        (["--activation", "swish"], "unknown activation 'swish'"),
        (["--out", "nodir/m.npz"], "--out 'nodir/m.npz': folder"),
    ],
    ids=["missing-data", "bad-option", "out-folder"],
)
def test_cli_distributed_error_before_training_is_one_message(tmp_path, args, message):
    """docs/distributed.md, Faults: an error found before training is raised on every
    rank alike, one message from rank 0, exit status 1 (before: every rank printed
    it and called MPI_Abort, or exited on its own)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(40, 3)), y=np.arange(40) % 2)
    cmd = _mpiexec(
        sys.executable, "-m", "fastnn.cli", "train", "--distributed",
        "--data", "d.npz", "--epochs", "1", "--quiet", *args,
    )  # fmt: skip
    proc = launch(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        stop(proc)
    assert proc.returncode == 1, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("fastnn:")]
    assert len(ours) == 1 and ours[0].startswith("fastnn: error: "), err[-3000:]
    assert message in ours[0]
    assert "MPI_ABORT" not in err


@needs_mpi
@pytest.mark.parametrize(
    "where, failing, own",
    [
        ("epoch_end", 0, "SimulatedError: simulated epoch_end failure"),
        ("train_begin", 1, "SimulatedError: simulated train_begin failure"),
        ("train_end", 0, "SimulatedError: simulated train_end failure"),
        ("checkpoint_folder", 0, "ValueError: ModelCheckpoint filepath "),
        ("checkpoint_write", 0, "FileNotFoundError: [Errno 2] cannot write "),
        # the last epoch (the fit's end follows), a stop asked for on the other
        # rank, a checkpoint every epoch and a validation split
        ("last_epoch", 1, "SimulatedError: simulated epoch_end failure"),
    ],
)
def test_callback_error_on_one_rank_is_raised_on_every_rank(
    tmp_path, where, failing, own
):
    """abort_on_error=False: an exception in a callback on one rank only (a user's
    callback, or ModelCheckpoint, which runs on rank 0 alone) is raised on every
    rank; the failing rank raises its own, the other names it (before: the other
    rank waited forever in its next collective)."""
    caught = outcomes(tmp_path, "callback-error", where)
    mine = caught[failing]
    assert mine.startswith(own), caught
    name = mine.split(":", 1)[0]
    theirs = (
        mine if name in ("ValueError", "FileNotFoundError") else f"RuntimeError: {mine}"
    )
    assert caught[1 - failing] == f"{theirs} (on rank {failing})", caught


@needs_mpi
def test_callback_error_on_one_rank_aborts_by_default(tmp_path):
    """abort_on_error=True (the default): the job ends with MPI_Abort, as before."""
    out = mpirun("callback-error", "epoch_end", str(tmp_path), "--abort", timeout=90)
    assert out.returncode != 0
    assert "rank 0: error: SimulatedError: simulated epoch_end failure" in out.stderr
    assert not (tmp_path / "caught.0.txt").exists()


@needs_mpi
def test_model_checkpoint_folder_is_needed_on_rank_0_alone_also_on_resume(tmp_path):
    # ModelCheckpoint writes on rank 0 alone; a resume checked its folder on every
    # rank, so a folder on rank 0's host only failed the resume everywhere
    caught = outcomes(tmp_path, "checkpoint-folder-on-rank-0")
    assert caught == ["no error", "no error"], caught
    assert sorted(p.name for p in (tmp_path / "host0").iterdir()) == [
        "m1.npz",
        "m2.npz",
        "m3.npz",
    ]
    assert not (tmp_path / "host1").exists()


@needs_mpi
def test_a_stop_asked_for_in_on_train_begin_on_one_rank_stops_all(tmp_path):
    # the stop was agreed at epoch ends only: the asking rank skipped the epochs and
    # waited at the fit's end while the others waited in the first Allreduce
    caught = outcomes(tmp_path, "stop-at-begin")
    assert caught == ["epochs run: 0", "epochs run: 0"], caught


@needs_mpi
@pytest.mark.parametrize(
    "where, failing, at, own, steps",
    [
        # rank 1's 5th forward and backward pass (epoch 2): raised in that step's
        # Allreduce, before any rank's update
        pytest.param(
            "forward", 1, 5, "SimulatedError: simulated forward failure", (4, 4),
            id="forward",
        ),
        # the workspace of rank 1's 5th batch (the loop's call): out of memory
        pytest.param(
            "workspace", 1, 9, "MemoryError: simulated workspace failure", (4, 4),
            id="workspace",
        ),
        # rank 0's update after the Allreduce, in step 5: raised in step 6's
        # Allreduce; in step 4 (a checkpoint follows): in its metrics' reduction;
        # in step 3 (the epoch's last): in the epoch's metrics' reduction
        pytest.param(
            "update", 0, 5, "ValueError: simulated update failure", (4, 5),
            id="update-mid",
        ),
        pytest.param(
            "update", 0, 4, "ValueError: simulated update failure", (3, 4),
            id="update-checkpoint",
        ),
        pytest.param(
            "update", 0, 3, "ValueError: simulated update failure", (2, 3),
            id="update-last",
        ),
        # rank 1's shard of the second epoch's validation pass
        pytest.param(
            "validation", 1, 2, "RuntimeError: simulated validation failure", (6, 6),
            id="validation",
        ),
    ],
)  # fmt: skip
def test_step_error_on_one_rank_is_raised_on_every_rank(
    tmp_path, where, failing, at, own, steps
):
    """abort_on_error=False: an exception inside a step or the validation pass on
    one rank only is raised on every rank, as a callback's is (before: the other
    rank waited forever in the Allreduce or the validation's reduction)."""
    caught = outcomes(tmp_path, "step-error", where, "--rank", str(failing),
                      "--at", str(at))  # fmt: skip
    mine = caught[failing]
    assert mine == own, caught
    name = mine.split(":", 1)[0]
    theirs = mine if name in ("ValueError", "RuntimeError") else f"RuntimeError: {mine}"
    assert caught[1 - failing] == f"{theirs} (on rank {failing})", caught
    state = [(tmp_path / f"state.{r}.txt").read_text().split() for r in (0, 1)]
    assert tuple(int(s[0]) for s in state) == steps, state
    if steps[0] == steps[1]:  # no rank updated alone: the weights still agree
        assert state[0][1] == state[1][1]
