"""Checkpoints: save/load, integrity checks, exact resume (also after SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import checkpoint
from fastnn.callbacks import EarlyStopping
from fastnn.checkpoint import CheckpointError
from fastnn.layers import Linear, Tanh
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.model import MLP, Sequential
from fastnn.optim import SGD, Adam, CosineAnnealingLR, ReduceLROnPlateau

BACKENDS = fastnn.available_backends()


def data(n=40, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * 2 + rng.normal(size=(n, d))
    return X, y


def make_model(**kw):
    return MLP((6, 10, 3), optimizer=Adam(lr=0.01, schedule=CosineAnnealingLR(4)), **kw)


# ------------------------------------------------------------ save / load
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_predict_bitwise(tmp_path, backend, dtype):
    X, y = data()
    labels = np.array(["ant", "bee", "cow"])[y]
    model = make_model(dtype=dtype, backend=backend)
    model.fit(X, labels, epochs=3, seed=0, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastnn.load(path, backend=backend)
    assert type(loaded) is MLP and loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.predict_proba(X).tobytes() == model.predict_proba(X).tobytes()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.steps == model.optimizer.steps
    for name, buf in model.optimizer.state.items():
        assert loaded.optimizer.state[name].tobytes() == buf.tobytes()
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_sequential_round_trip_and_no_pickle(tmp_path):
    X, y = data()
    model = Sequential(
        [Linear(6, 5, bias=False), Tanh(), Linear(5, 3)],
        loss=SoftmaxCrossEntropy(class_weight={0: 2.0}, l2=1e-3),
        optimizer=SGD(lr=0.1, momentum=0.9),
    )
    model.fit(X, y, epochs=2, seed=0, verbose=0)
    path = tmp_path / "s.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as npz:  # loads without pickle
        assert all(npz[k].dtype != object for k in npz.files)
    loaded = fastnn.load(path)
    assert type(loaded) is Sequential and loaded.linears[0].bias is None
    assert loaded.loss.class_weight == {0: 2.0}
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


# --------------------------------------------------------- damaged files
@pytest.fixture
def saved(tmp_path):
    X, y = data()
    model = make_model()
    model.fit(X, y, epochs=2, seed=0, verbose=0)
    path = tmp_path / "good.npz"
    model.save(path)
    return path


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy a checkpoint, edit (meta, arrays) and re-seal it with a valid checksum."""
    meta, arrays = checkpoint.read(src)
    edit(meta, arrays)
    meta.pop("checksum")
    meta["checksum"] = checkpoint._checksum(meta, arrays)
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(checkpoint._canonical(meta), dtype=np.uint8)
    np.savez(dst, **payload)


def _damaged(saved: Path, tmp_path: Path, kind: str) -> Path:
    raw = saved.read_bytes()
    bad = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(b"not a checkpoint at all" * 10)
    elif kind.startswith("bitflip"):
        pos = {
            "bitflip-start": 200,
            "bitflip-mid": len(raw) // 2,
            "bitflip-end": len(raw) - 300,
        }[kind]
        b = bytearray(raw)
        b[pos] ^= 0x10
        bad.write_bytes(bytes(b))
    elif kind == "pickle":
        meta, arrays = checkpoint.read(saved)
        payload = dict(arrays)
        payload["param.0.weight"] = np.array([{"evil": 1}, None], dtype=object)
        payload["__meta__"] = np.frombuffer(checkpoint._canonical(meta), np.uint8)
        np.savez(bad, **payload)
    elif kind == "shape":
        _rewrite(
            saved,
            bad,
            lambda m, a: a.__setitem__("param.0.weight", np.zeros((6, 11), np.float32)),
        )
    elif kind == "dtype":
        _rewrite(
            saved,
            bad,
            lambda m, a: a.__setitem__(
                "param.0.weight", a["param.0.weight"].astype(np.float64)
            ),
        )
    elif kind == "nan":

        def edit(m, a):
            a["param.2.weight"] = a["param.2.weight"].copy()
            a["param.2.weight"][0, 0] = np.nan

        _rewrite(saved, bad, edit)
    elif kind == "missing":
        _rewrite(saved, bad, lambda m, a: a.pop("param.2.bias"))
    elif kind == "not-fastnn":
        np.savez(bad, X=np.ones(3))
    elif kind == "metadata":
        meta, arrays = checkpoint.read(saved)
        meta["model"]["config"]["sizes"] = [6, 99, 3]  # checksum left stale
        payload = dict(arrays)
        payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(bad, **payload)
    return bad


KINDS = [
    "truncated",
    "empty",
    "garbage",
    "bitflip-start",
    "bitflip-mid",
    "bitflip-end",
    "pickle",
    "shape",
    "dtype",
    "nan",
    "missing",
    "not-fastnn",
    "metadata",
]
DAMAGED = "is damaged or not a checkpoint"
MESSAGES = {
    "truncated": DAMAGED,
    "empty": DAMAGED,
    "garbage": DAMAGED,
    "bitflip-start": DAMAGED,
    "bitflip-mid": DAMAGED,
    "bitflip-end": DAMAGED,
    "not-fastnn": "has no fastnn metadata",
    "pickle": "pickled object arrays",
    "shape": "has shape",
    "dtype": "has dtype",
    "nan": "NaN or infinity",
    "missing": "lacks array",
    "metadata": "checksum",
}


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoint_rejected_and_model_unchanged(saved, tmp_path, kind):
    bad = _damaged(saved, tmp_path, kind)
    with pytest.raises(CheckpointError, match=MESSAGES[kind]) as info:
        fastnn.load(bad)
    assert "\n" not in str(info.value)  # one clear line
    X, y = data()
    model = make_model()
    model.fit(X, y, epochs=1, seed=1, verbose=0)
    before = model.get_flat_parameters()
    state_before = {k: v.copy() for k, v in model.optimizer.state.items()}
    steps = model.optimizer.steps
    with pytest.raises(CheckpointError):
        model.fit(X, y, epochs=3, seed=1, verbose=0, checkpoint=bad, resume=True)
    assert model.get_flat_parameters().tobytes() == before.tobytes()
    assert model.optimizer.steps == steps
    for k, v in state_before.items():
        assert model.optimizer.state[k].tobytes() == v.tobytes()


def test_mismatched_architecture_rejected(saved):
    other = MLP((6, 11, 3))
    other.initialize(0)
    before = other.get_flat_parameters()
    X, y = data()
    with pytest.raises(CheckpointError, match="architecture does not match"):
        other.fit(X, y, epochs=2, verbose=0, checkpoint=saved, resume=True)
    assert other.get_flat_parameters().tobytes() == before.tobytes()
    assert not hasattr(other, "classes_")
    with pytest.raises(FileNotFoundError):
        fastnn.load(saved.parent / "nope.npz")


def test_failed_write_keeps_the_old_file(saved, monkeypatch):
    good = saved.read_bytes()
    model = make_model()
    X, y = data()
    model.fit(X, y, epochs=1, seed=3, verbose=0)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(saved)
    assert saved.read_bytes() == good
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


# ------------------------------------------------------------ exact resume
def _fit(model, X, y, path, **kw):
    args = dict(
        epochs=4,
        batch_size=7,
        seed=9,
        verbose=0,
        validation_split=0.2,
        checkpoint=path,
        checkpoint_every=2,
        resume=True,
    )
    args.update(kw)
    return model.fit(
        X,
        y,
        callbacks=[EarlyStopping("val_loss", patience=50, restore_best_weights=True)],
        **args,
    )


def _model():
    return MLP(
        (6, 10, 3),
        optimizer=SGD(
            lr=0.05,
            momentum=0.9,
            schedule=ReduceLROnPlateau("val_loss", patience=0, factor=0.5),
        ),
    )


def test_resume_after_crash_mid_epoch_is_exact(tmp_path):
    X, y = data()
    ref = _model()
    ref_hist = _fit(ref, X, y, tmp_path / "ref.npz")
    path = tmp_path / "run.npz"
    crashing = _model()
    calls = {"n": 0}
    original = crashing._train_step

    def flaky_step(xb, yb, sw):
        calls["n"] += 1
        if calls["n"] == 11:  # mid epoch 2, one step after a checkpoint
            raise RuntimeError("simulated crash")
        return original(xb, yb, sw)

    crashing._train_step = flaky_step
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(crashing, X, y, path)
    meta, _ = checkpoint.read(path)
    assert meta["train_state"]["step"] == 10 and meta["train_state"]["batch"] > 0
    resumed = _model()
    hist = _fit(resumed, X, y, path)
    assert (
        resumed.get_flat_parameters().tobytes() == ref.get_flat_parameters().tobytes()
    )
    assert hist.history["loss"] == ref_hist.history["loss"]
    assert hist.history["lr"] == ref_hist.history["lr"]
    # A finished checkpoint resumes to the same place without training.
    again = _model()
    _fit(again, X, y, path)
    assert again.get_flat_parameters().tobytes() == ref.get_flat_parameters().tobytes()


def _ignore_sigint(signum, frame):  # a handler of the caller's, to be put back
    pass


@pytest.fixture(params=["as_found", "ignored", "custom"])
def sigint_on_entry(request):
    """The SIGINT handler in force when fit starts: whatever the test runner left
    (SIG_IGN from a background job), ignored, or a handler of the caller's."""
    found = signal.getsignal(signal.SIGINT)
    entry = {"as_found": found, "ignored": signal.SIG_IGN, "custom": _ignore_sigint}
    signal.signal(signal.SIGINT, entry[request.param])
    try:
        yield entry[request.param]
    finally:
        signal.signal(signal.SIGINT, found)


def test_ctrl_c_saves_checkpoint_then_resumes_exactly(tmp_path, sigint_on_entry):
    X, y = data()
    ref = _model()
    _fit(ref, X, y, tmp_path / "ref.npz", checkpoint_every="epoch")
    path = tmp_path / "run.npz"
    model = _model()
    original = model._train_step
    calls = {"n": 0}

    def step(xb, yb, sw):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # deferred to the step boundary
        return original(xb, yb, sw)

    model._train_step = step
    with pytest.raises(KeyboardInterrupt) as interrupted:
        _fit(model, X, y, path, checkpoint_every="epoch")
    assert interrupted.value.checkpoint == path  # named for the CLI's message
    meta, _ = checkpoint.read(path)
    assert meta["train_state"]["step"] == 7  # saved right after the interrupted step
    assert signal.getsignal(signal.SIGINT) is sigint_on_entry  # put back as found
    resumed = _model()
    _fit(resumed, X, y, path, checkpoint_every="epoch")
    assert (
        resumed.get_flat_parameters().tobytes() == ref.get_flat_parameters().tobytes()
    )


def test_resume_refuses_other_data_or_settings(tmp_path):
    X, y = data()
    path = tmp_path / "c.npz"
    _fit(_model(), X, y, path, epochs=1)
    model = _model()
    with pytest.raises(CheckpointError, match="different training data"):
        _fit(model, X + 1.0, y, path)
    with pytest.raises(CheckpointError, match="different settings"):
        _fit(model, X, y, path, batch_size=5)
    with pytest.raises(CheckpointError, match="optimizer"):
        _fit(MLP((6, 10, 3), optimizer=Adam()), X, y, path)
    assert not hasattr(model, "classes_")


WORKER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    ckpt, out, backend = sys.argv[1:4]
    delay = float(sys.argv[4])
    _fsync = os.fsync
    die_at = int(os.environ.get("DIE_AT_FSYNC", "0"))
    calls = [0]
    def slow_fsync(fd):  # widen the window in which a kill lands mid-save
        calls[0] += 1
        if calls[0] == die_at:  # die inside a save, the temp file written
            os.kill(os.getpid(), 9)
        time.sleep(delay)
        _fsync(fd)
    os.fsync = slow_fsync
    import fastnn
    from fastnn.callbacks import EarlyStopping
    from fastnn.model import MLP
    from fastnn.optim import Adam, ReduceLROnPlateau
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = rng.normal(size=(3, 6))[y] + rng.normal(size=(90, 6))
    model = MLP((6, 12, 3), backend=backend, optimizer=Adam(
        lr=0.01, schedule=ReduceLROnPlateau("val_loss", patience=1, factor=0.5)))
    print("start", flush=True)  # imports done: the test times its kill from here
    model.fit(X, y, epochs=8, batch_size=8, seed=5, verbose=0, validation_split=0.2,
              checkpoint=ckpt, checkpoint_every=3, resume=True,
              callbacks=[EarlyStopping(patience=100, restore_best_weights=True)])
    np.save(out, model.get_flat_parameters())
    """
)


def _run_worker(tmp_path, ckpt, out, backend, delay, kill_after=None, die_at=0):
    """Run the worker; SIGKILL it ``kill_after`` seconds into training if given.

    Returns (finished, seconds from the start of training to exit or kill).
    """
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # One thread everywhere, set through the environment so that the worker does
    # not pay for loading every backend. The GEMM plan's rule: a measured plan
    # writes its file (two fsyncs) in whichever run first keeps a measurement (the
    # serial threshold is kept only where parallel wins, so under load a later run
    # can be the first), which would move the fsync that die_at counts to.
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        FASTNN_GEMM_PLAN="rule",
        DIE_AT_FSYNC=str(die_at),
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(out), backend, str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline()
    t0 = time.perf_counter()
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert line == b"start\n" and proc.returncode == 0, err.decode()[-2000:]
        return True, time.perf_counter() - t0
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode == 0, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False, time.perf_counter() - t0
    finally:
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", sorted({"numpy", BACKENDS[0]}), ids=lambda b: b
)  # the reference and the fastest backend
def test_sigkill_at_random_points_then_resume_is_bitwise_equal(tmp_path, backend):
    delay = 0.01
    ref_out = tmp_path / "ref.npy"
    _, full = _run_worker(tmp_path, tmp_path / "ref.npz", ref_out, backend, delay)
    ckpt, out = tmp_path / "run.npz", tmp_path / "run.npy"
    # First a kill certain to land mid-save: inside the 7th fsync (the 4th save,
    # its temp file complete but not yet moved into place).
    done, _ = _run_worker(tmp_path, ckpt, out, backend, delay, kill_after=60, die_at=7)
    assert not done and list(tmp_path.glob(".run.npz.*.tmp"))
    meta, _ = checkpoint.read(ckpt)  # the previous complete checkpoint
    assert meta["train_state"]["step"] == 9
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    kills, done = 0, False
    for trial in range(5):
        # 24 saves x 2 fsyncs x delay put a floor of ~0.48 s under a whole run: the
        # first kill always lands before the end.
        high = min(0.45, 0.9 * full) if trial == 0 else 0.9 * full
        done, _ = _run_worker(
            tmp_path, ckpt, out, backend, delay, kill_after=rng.uniform(0.02, high)
        )
        if done:
            break
        kills += 1
        if ckpt.exists():  # never a partial file: whatever is there loads
            meta, _ = checkpoint.read(ckpt)
            assert meta["train_state"] is not None
    if not done:
        _run_worker(tmp_path, ckpt, out, backend, delay)
    assert kills >= 1
    assert np.load(out).tobytes() == np.load(ref_out).tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_of_a_finished_fit_extends_to_the_new_epoch_count(tmp_path, backend):
    X, y = data()
    straight = make_model(backend=backend)
    straight.fit(X, y, epochs=5, batch_size=8, seed=3, verbose=0)
    path = tmp_path / "c.npz"
    first = make_model(backend=backend)
    first.fit(X, y, epochs=3, batch_size=8, seed=3, verbose=0, checkpoint=path)
    resumed = make_model(backend=backend)
    history = resumed.fit(
        X, y, epochs=5, batch_size=8, seed=3, verbose=0, checkpoint=path, resume=True
    )
    assert history.epoch == [0, 1, 2, 3, 4]
    assert resumed.get_flat_parameters().tobytes() == (
        straight.get_flat_parameters().tobytes()
    )
    ts = checkpoint.read(path)[0]["train_state"]
    assert ts["epoch"] == 5 and ts["finished"]
    # asking for no more epochs than were run leaves everything as it is
    again = make_model(backend=backend)
    assert len(again.fit(X, y, epochs=4, batch_size=8, seed=3, verbose=0,
                         checkpoint=path, resume=True)) == 5  # fmt: skip
    assert again.get_flat_parameters().tobytes() == (
        straight.get_flat_parameters().tobytes()
    )


# ------------------------------------------------------------ files
def _fitted():
    X, y = data()
    model = make_model()
    model.fit(X, y, epochs=1, seed=0, verbose=0)
    return model, X


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask_and_keep_an_existing_files_mode(tmp_path, umask):
    model, _ = _fitted()
    old = os.umask(umask)
    try:
        model.save(tmp_path / "new.npz")
        checkpoint.write_atomic(tmp_path / "p.csv", lambda f: f.write(b"a\n"))
    finally:
        os.umask(old)
    for name in ("new.npz", "p.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"old")
    existing.chmod(0o640)
    model.save(existing)
    assert existing.stat().st_mode & 0o777 == 0o640
    assert checkpoint.read(existing)  # replaced by the new, complete file


def test_saving_to_a_symlink_writes_its_target(tmp_path):
    model, X = _fitted()
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.npz"
    target.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    loaded = fastnn.load(target)
    assert loaded.predict_proba(X).tobytes() == model.predict_proba(X).tobytes()


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from fastnn.model import MLP
    model = MLP((6, 10, 3))
    model.initialize(0)
    def die(fd):  # the temp file is complete, the move not yet done
        os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = die
    model.save(sys.argv[1])
    """
)


def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "c.npz"
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)
    proc = subprocess.run([sys.executable, str(script), str(target)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    stale = list(tmp_path.glob(".c.npz.*.tmp"))
    assert len(stale) == 1 and not target.exists()
    # a temp file of a process still running is not touched, nor other files
    live = tmp_path / f".c.npz.{os.getppid()}.0123abcd.tmp"
    live.write_bytes(b"in progress")
    other = tmp_path / ".d.npz.999999999.0123abcd.tmp"
    other.write_bytes(b"another target's")
    model, _ = _fitted()
    model.save(target)
    assert not stale[0].exists() and live.exists() and other.exists()
    assert checkpoint.read(target)


def test_fit_checks_the_checkpoint_folder_before_training(tmp_path):
    X, y = data()
    model = make_model()
    with pytest.raises(ValueError, match="does not exist"):
        model.fit(X, y, epochs=1, verbose=0, checkpoint=tmp_path / "nodir" / "c.npz")
    assert not hasattr(model, "classes_")  # nothing trained


# ------------------------------------------------- metadata meaning
def _edit(path, meta_edit=None, arrays_edit=None):
    """Change a checkpoint and recompute its checksum, as a deliberate edit would
    (the checksum detects damage, not tampering)."""
    meta, arrays = checkpoint.read(path)
    meta.pop("checksum")
    if meta_edit:
        meta_edit(meta)
    if arrays_edit:
        arrays_edit(arrays)
    meta["checksum"] = checkpoint._checksum(meta, arrays)
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(checkpoint._canonical(meta), dtype=np.uint8)
    np.savez(path, **payload)


def _set(*keys, value):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _duplicate_classes(arrays):
    arrays["classes"] = np.array(["ant", "ant", "cow"])


@pytest.mark.parametrize(
    "meta_edit, arrays_edit, message",
    [
        (None, _duplicate_classes, "classes are not unique"),
        (_set("train_state", "step", value=-1), None, "step is invalid"),
        (_set("train_state", "epoch", value=-3), None, "epoch is invalid"),
        (_set("optimizer", "state", "steps", value=-5), None, "steps is invalid"),
        (_set("model", "config", "sizes", value=[6, 10**12, 3]), None,
         "has shape"),
    ],
)  # fmt: skip
def test_edited_checkpoint_with_a_valid_checksum_is_validated(
    tmp_path, meta_edit, arrays_edit, message
):
    X, y = data()
    labels = np.array(["ant", "bee", "cow"])[y]
    path = tmp_path / "c.npz"
    make_model().fit(X, labels, epochs=1, seed=0, verbose=0, checkpoint=path)
    _edit(path, meta_edit, arrays_edit)
    with pytest.raises(CheckpointError, match=message):
        fastnn.load(path)
    with pytest.raises(CheckpointError, match=message):
        make_model().fit(X, labels, epochs=2, seed=0, verbose=0, checkpoint=path,
                         resume=True)  # fmt: skip


def test_member_that_is_not_an_npy_array_is_a_checkpoint_error(tmp_path):
    # np.load returns the raw bytes of a zip member without the .npy magic
    import zipfile

    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", b"garbage")
    with pytest.raises(CheckpointError, match="'__meta__' is not a .npy array"):
        fastnn.load(path)
    make_model().save(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("param.extra", b"garbage")
    with pytest.raises(CheckpointError, match="'param.extra' is not a .npy array"):
        fastnn.load(path)


def test_save_to_a_folder_or_into_a_missing_folder_names_the_path(tmp_path):
    model = make_model()
    with pytest.raises(IsADirectoryError, match="is a folder") as info:
        model.save(tmp_path)
    assert ".tmp" not in str(info.value)
    missing = tmp_path / "nope" / "m.npz"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        model.save(missing)
    assert ".tmp" not in str(info.value) and "nope" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_save_into_a_folder_without_write_permission_names_the_path(
    tmp_path, monkeypatch
):
    model = make_model()
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError, match="not writable") as info:
        model.save(tmp_path / "m.npz")
    assert ".tmp" not in str(info.value) and "m.npz" in str(info.value)


def _delete(*keys):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


@pytest.mark.parametrize(
    "meta_edit",
    [
        _set("model", "config", "loss", value=None),
        _delete("model", "config", "activation"),
        _set("optimizer", value=None),
        _set("optimizer", "state", value={}),
        _set("optimizer", "state", "steps", value=10**19),
        _set("optimizer", "state_names", value=None),
        _set("train_state", value=-1),
        _set("train_state", "history", value=None),
        _set("train_state", "history", "history", value={"loss": ["x"]}),
        _set("train_state", "callbacks", value=None),
        _set("train_state", "fit", value=-1),
        _set("train_state", "seed_entropy", value=-1),
        _set("train_state", "rng", "state", "inc", value=-1),
        _set("train_state", "rng", "uinteger", value=-1),
        _delete("train_state", "batch"),
        _delete("train_state", "correct"),
    ],
    ids=lambda f: f.__closure__[-1].cell_contents.__repr__()[:40],
)
def test_malformed_metadata_with_a_valid_checksum_is_a_checkpoint_error(
    tmp_path, meta_edit
):
    # KeyError, TypeError, AttributeError, OverflowError from deep inside (numpy's
    # PCG64, SeedSequence, History.from_dict, the optimizer) before
    X, y = data()
    labels = np.array(["ant", "bee", "cow"])[y]
    path = tmp_path / "c.npz"
    make_model().fit(X, labels, epochs=1, seed=0, verbose=0, checkpoint=path)
    _edit(path, meta_edit)
    try:
        fastnn.load(path).predict(X)
    except CheckpointError:
        pass
    model = make_model()
    model.fit(X, labels, epochs=1, seed=1, verbose=0)
    before = model.get_flat_parameters().tobytes()
    steps = model.optimizer.steps
    with pytest.raises(CheckpointError):
        model.fit(X, labels, epochs=2, seed=0, verbose=0, checkpoint=path,
                  resume=True)  # fmt: skip
    assert model.get_flat_parameters().tobytes() == before
    assert model.optimizer.steps == steps
