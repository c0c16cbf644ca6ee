"""What Keras and PyTorch users reach for: summary(), ModelCheckpoint, CSVLogger,
LambdaCallback, plain callables as callbacks, Keras' verbose levels through logging,
py.typed."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import textwrap
from importlib import resources

import numpy as np
import pytest

import fastnn


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    X = rng.normal(size=(3, 6))[y] * 2 + rng.normal(size=(120, 6))
    return X, y


def _model():
    return fastnn.MLP((6, 8, 3), backend="numpy")


def test_summary_lists_layers_shapes_and_parameters():
    model = fastnn.Sequential(
        [fastnn.Linear(784, 256), fastnn.ReLU(), fastnn.Linear(256, 10, bias=False)]
    )
    text = model.summary(print_fn=None)
    lines = text.splitlines()
    assert lines[0] == 'Model: "Sequential"'
    assert any(s.split() == ["linear_0", "(Linear)", "(None,", "256)", "200,960"]
               for s in lines)  # fmt: skip
    assert any(s.split() == ["relu_0", "(ReLU)", "(None,", "256)", "0"] for s in lines)
    assert any(s.split() == ["linear_1", "(Linear)", "(None,", "10)", "2,560"]
               for s in lines)  # fmt: skip
    assert "Total params: 203,520" in text and "not fitted" in text
    printed = []
    assert model.summary(print_fn=printed.append) == text and printed == [text]


def test_info_model_prints_the_summary(tmp_path, data):
    X, y = data
    model = _model()
    model.fit(X, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    cmd = [
        sys.executable,
        "-m",
        "fastnn.cli",
        "info",
        "--model",
        str(tmp_path / "m.npz"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('Model: "MLP"')
    assert "Total params: 83" in out.stdout and "classes: [0, 1, 2]" in out.stdout


def test_plain_callable_and_lambda_callback(data):
    X, y = data
    seen, events = [], []
    cb = fastnn.LambdaCallback(
        on_train_begin=lambda: events.append("begin"),
        on_epoch_end=lambda epoch, logs: events.append(epoch),
        on_train_end=lambda: events.append("end"),
    )

    def plain(epoch, logs):
        seen.append((epoch, logs["loss"]))

    _model().fit(X, y, epochs=3, verbose=0, callbacks=[plain, cb])
    assert [e for e, _ in seen] == [0, 1, 2] and all(v > 0 for _, v in seen)
    assert events == ["begin", 0, 1, 2, "end"]
    with pytest.raises(TypeError, match="not a fastnn.Callback or a callable"):
        _model().fit(X, y, epochs=1, verbose=0, callbacks=[42])


def test_model_checkpoint_best_only_and_every_n(tmp_path, data):
    X, y = data
    best = fastnn.ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss",
                                  save_best_only=True)  # fmt: skip
    every = fastnn.ModelCheckpoint(str(tmp_path / "e{epoch:02d}.npz"), every=2)
    X_val, y_val = X[::4], y[::4]
    model = fastnn.MLP((6, 8, 3), backend="numpy", optimizer=fastnn.SGD(lr=0.3))
    history = model.fit(
        X, y, epochs=8, verbose=0, validation_data=(X_val, y_val), seed=0,
        callbacks=[best, every],
    )  # fmt: skip
    assert every.saved == [str(tmp_path / f"e{k:02d}.npz") for k in (2, 4, 6, 8)]
    assert all((tmp_path / f"e{k:02d}.npz").exists() for k in (2, 4, 6, 8))
    losses = history["val_loss"]
    assert best.best == pytest.approx(min(losses))
    improvements = [v for i, v in enumerate(losses) if v < min(losses[:i], default=9)]
    assert len(best.saved) == len(improvements)
    # the file holds the best epoch's weights
    saved = fastnn.load(tmp_path / "best.npz")
    assert saved.evaluate(X_val, y_val)["loss"] == pytest.approx(min(losses), 1e-5)
    needs_val = fastnn.ModelCheckpoint(tmp_path / "x.npz", save_best_only=True)
    with pytest.raises(ValueError, match="monitors 'val_loss'"):
        _model().fit(X, y, epochs=1, verbose=0, callbacks=[needs_val])


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing/m.npz", "folder .* does not exist"),
        ("missing/m{epoch}.npz", "folder .* does not exist"),
        ("a_folder", "is a folder, not a file"),
    ],
)
def test_model_checkpoint_refuses_an_unwritable_path_before_training(
    tmp_path, data, name, message
):
    X, y = data
    (tmp_path / "a_folder").mkdir()
    epochs = []
    callbacks = [
        fastnn.ModelCheckpoint(str(tmp_path / name)),
        lambda epoch, logs: epochs.append(epoch),
    ]
    with pytest.raises(ValueError, match="ModelCheckpoint filepath .*" + message):
        _model().fit(X, y, epochs=2, verbose=0, callbacks=callbacks)
    assert epochs == []  # no epoch was trained for nothing


def test_model_checkpoint_checks_its_folder_when_a_fit_resumes(tmp_path, data):
    """A resumed fit runs no on_train_begin: the folder is checked with the
    checkpoint's callback state, before any epoch (a missing one failed only after
    the first resumed epoch)."""
    X, y = data
    saved = tmp_path / "run.ckpt"
    epochs = []

    def fit(where, n):
        callbacks = [fastnn.ModelCheckpoint(str(where / "m{epoch}.npz")),
                     lambda epoch, logs: epochs.append(epoch)]  # fmt: skip
        return _model().fit(X, y, epochs=n, verbose=0, seed=0, checkpoint=saved,
                            resume=True, callbacks=callbacks)  # fmt: skip

    fit(tmp_path, 1)
    assert epochs == [0]
    with pytest.raises(ValueError, match="ModelCheckpoint filepath .*does not exist"):
        fit(tmp_path / "gone", 3)  # resumed, e.g. in a new process
    assert epochs == [0]  # no epoch was trained for nothing
    fit(tmp_path, 3)
    assert epochs == [0, 1, 2]


def test_model_checkpoint_keeps_its_files_when_the_fit_diverges(tmp_path, data):
    X, y = data

    def diverge(epoch, logs):  # runs before the checkpoint of the same epoch
        if epoch == 1:
            model._params[:] = np.nan

    model = _model()
    every = fastnn.ModelCheckpoint(str(tmp_path / "e{epoch}.npz"))
    with pytest.warns(RuntimeWarning, match="after epoch 2 are not finite") as seen:
        history = model.fit(X, y, epochs=4, verbose=0, callbacks=[diverge, every])
    assert len(history["loss"]) == 4  # the fit went on, as in Keras
    assert [str(w.message).count("ModelCheckpoint") for w in seen] == [1]  # once
    assert seen[0].filename == __file__  # attributed to the call of fit
    assert every.saved == [str(tmp_path / "e1.npz")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.npz"]
    assert np.isfinite(fastnn.load(tmp_path / "e1.npz").predict_proba(X)).all()


@pytest.mark.parametrize("terminate_first", [True, False])
def test_model_checkpoint_leaves_a_diverged_fit_to_terminate_on_nan(
    tmp_path, terminate_first
):
    """A fit that TerminateOnNaN stops at its first non-finite epoch: the checkpoint
    skips that epoch's save without the warning that advises passing TerminateOnNaN
    (the user did), in either order of the two callbacks, as fit's own checkpoint
    is skipped silently then."""
    import warnings

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 6)) * 100, np.arange(256) % 3
    stop = fastnn.TerminateOnNaN()
    every = fastnn.ModelCheckpoint(str(tmp_path / "e{epoch}.npz"))
    model = fastnn.MLP((6, 64, 3), backend="numpy",
                       optimizer=fastnn.SGD(lr=1e6, momentum=0.9))  # fmt: skip
    callbacks = [stop, every] if terminate_first else [every, stop]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.fit(X, y, epochs=4, verbose=0, seed=0, callbacks=callbacks)
    assert stop.stopped_epoch is not None  # it diverged and was stopped
    assert not np.isfinite(model._params).all()
    assert [str(w.message) for w in seen if "ModelCheckpoint" in str(w.message)] == []
    kept = range(1, stop.stopped_epoch + 1)  # the finite epochs before
    assert every.saved == [str(tmp_path / f"e{e}.npz") for e in kept]


def test_model_checkpoint_warning_names_a_caller_whose_path_begins_like_fastnn(
    tmp_path, data
):
    """The warning goes to the first frame outside the fastnn package, compared by
    folder: a user's file next to the package whose name begins with "fastnn"
    (e.g. fastnn_train.py beside an editable checkout's fastnn/) is outside it (a
    plain prefix test skipped that frame and named its caller)."""
    import os

    X, y = data
    user_file = os.path.dirname(os.path.abspath(fastnn.__file__)) + "_train.py"
    source = textwrap.dedent(
        """
        def run(model, X, y, callbacks):
            return model.fit(X, y, epochs=2, verbose=0, callbacks=callbacks)
        """
    )
    namespace: dict = {}
    exec(compile(source, user_file, "exec"), namespace)  # no file is written

    def diverge(epoch, logs):
        model._params[:] = np.nan

    model = _model()
    every = fastnn.ModelCheckpoint(str(tmp_path / "e{epoch}.npz"))
    with pytest.warns(RuntimeWarning, match="not finite") as seen:
        namespace["run"](model, X, y, [diverge, every])
    assert [w.filename for w in seen if "ModelCheckpoint" in str(w.message)] == [
        user_file
    ]


def test_csv_logger_writes_a_row_per_epoch(tmp_path, data):
    X, y = data
    path = tmp_path / "log.csv"
    path.write_text("old\n")
    _model().fit(X, y, epochs=3, verbose=0, callbacks=[fastnn.CSVLogger(path)])
    rows = list(csv.reader(path.open()))
    assert rows[0][:3] == ["epoch", "loss", "accuracy"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"] and len(rows) == 4
    _model().fit(X, y, epochs=2, verbose=0,
                 callbacks=[fastnn.CSVLogger(path, append=True)])  # fmt: skip
    assert len(list(csv.reader(path.open()))) == 6  # appended, no second header


_VERBOSE = textwrap.dedent(
    """
    import sys, numpy as np, fastnn
    X = np.random.default_rng(0).normal(size=(60, 4)); y = np.arange(60) % 2
    fastnn.MLP((4, 5, 2), backend="numpy").fit(
        X, y, epochs=3, verbose=int(sys.argv[1]), validation_split=0.2, seed=0)
    """
)


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_verbose_lines_when_stdout_is_not_a_terminal(verbose):
    out = subprocess.run([sys.executable, "-c", _VERBOSE, str(verbose)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if verbose == 0:
        assert lines == []
    else:  # Keras: 1 off a terminal and 2 both give one line per epoch
        assert [s.split()[:2] for s in lines] == [
            ["epoch", f"{k}/3"] for k in (1, 2, 3)
        ]
        assert all("val_accuracy=" in s and "samples/s" in s for s in lines)


def test_verbose_lines_go_through_logging(caplog, data):
    X, y = data
    with caplog.at_level(logging.INFO, logger="fastnn.train"):
        _model().fit(X, y, epochs=2, verbose=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastnn.train"]
    assert [m.split()[:2] for m in messages] == [["epoch", "1/2"], ["epoch", "2/2"]]


def test_py_typed_marker_ships():
    assert resources.files("fastnn").joinpath("py.typed").is_file()
    from importlib import metadata

    files = metadata.files("fastnn") or []
    # an editable install lists no package files; a regular one must list py.typed
    if any(str(f).startswith("fastnn/") and str(f).endswith(".py") for f in files):
        assert any(str(f) == "fastnn/py.typed" for f in files)


_ON_A_TERMINAL = textwrap.dedent(
    """
    import numpy as np, fastnn
    X = np.random.default_rng(0).normal(size=(64, 4)); y = np.arange(64) % 2
    fastnn.MLP((4, 5, 2), backend="numpy").fit(X, y, epochs=3, verbose=1,
                                               batch_size=8)
    print("done")
    """
)


def test_verbose_1_on_a_terminal_is_one_bar_over_the_run_that_stays():
    pty = pytest.importorskip("pty")
    import fcntl
    import os
    import struct
    import termios

    main, child = pty.openpty()
    # a terminal of 24 x 120 (a fresh pseudo-terminal is 0 x 0: no room for a bar)
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", _ON_A_TERMINAL], stdout=child,
                            stderr=subprocess.PIPE)  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    os.close(main)
    lines = b"".join(chunks).decode().replace("\r\n", "\n").split("\n")
    # the bar redraws itself with \r; what stays is its final state, on one line
    final = [s.split("\r")[-1] for s in lines if "sample" in s]
    assert len(final) == 1, lines
    assert "epoch 3/3" in final[0] and "100%" in final[0] and "192/192" in final[0]
    assert "val_" not in final[0] and "loss=" in final[0]
    assert lines[lines.index(next(s for s in lines if "sample" in s)) + 1] == "done"


def test_history_answers_in_and_iterates_its_metric_names():
    """docs/distributed.md reads history["allreduce_time"]; a user checks for a key
    first: ``"val_loss" in history`` raised KeyError: 0 (no __contains__, so Python
    iterated with __getitem__(0))."""
    X, y = fastnn.load_digits_split()[0::2]
    m = fastnn.MLP((64, 8, 10))
    history = m.fit(X[:200], y[:200], epochs=2, verbose=0, seed=0)
    assert "loss" in history and "val_loss" not in history
    assert list(history) == list(history.history) == list(history.keys())
    assert {k: history[k] for k in history} == history.history
    assert len(history) == 2  # epochs, as before
