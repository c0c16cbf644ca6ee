"""The ``fastnn`` command line: training, prediction, evaluation, error paths."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import checkpoint
from fastnn.cli import main
from fastnn.data import DataError, load_dataset, load_digits_split


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m fastnn.cli`` as a user would (fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", "fastnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def npz_data(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    X = rng.normal(size=(3, 5))[y] * 3 + rng.normal(size=(120, 5))
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


def test_digits_split_is_fixed_and_standardized():
    X_tr, X_te, y_tr, y_te = load_digits_split()
    assert X_tr.shape == (1347, 64) and X_te.shape == (450, 64)
    assert X_tr.dtype == np.float32
    np.testing.assert_allclose(X_tr.mean(axis=0), 0, atol=1e-5)
    assert np.bincount(y_te).min() >= 43  # stratified: every digit 43-46 times
    again = load_digits_split()
    assert np.array_equal(again[0], X_tr) and np.array_equal(again[3], y_te)


def test_train_predict_evaluate_round_trip(tmp_path, npz_data, capsys):
    path, X, y = npz_data
    model_path = tmp_path / "m.npz"
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--hidden",
            "16",
            "--epochs",
            "30",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
            "--json",
            "--out",
            str(model_path),
            "--backend",
            "numpy",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["test_accuracy"] >= 0.9 and result["backend"] == "numpy"
    assert result["n_train"] == 90 and result["n_test"] == 30
    for key in ("test_loss", "samples_per_sec", "first_step_s", "train_time_s"):
        assert result[key] > 0
    pred_path = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_path),
                "--data",
                str(path),
                "--out",
                str(pred_path),
                "--proba",
            ]
        )
        == 0
    )
    lines = pred_path.read_text().splitlines()
    assert lines[0] == "prediction,proba_0,proba_1,proba_2" and len(lines) == 121
    model = fastnn.load(model_path)
    np.testing.assert_array_equal(
        [int(r.split(",")[0]) for r in lines[1:]], model.predict(X)
    )
    assert (
        main(["evaluate", "--model", str(model_path), "--data", str(path), "--json"])
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    assert ev == pytest.approx(model.evaluate(X, y))


def test_csv_with_label_column(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = np.array(["red", "green"])[np.arange(60) % 2]
    X = (np.arange(60) % 2)[:, None] * 4 + rng.normal(size=(60, 3))
    path = tmp_path / "d.csv"
    rows = ["a,colour,b,c"] + [
        f"{r[0]},{c},{r[1]},{r[2]}" for r, c in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    Xl, yl = load_dataset(path, "colour")
    np.testing.assert_allclose(Xl, X)
    np.testing.assert_array_equal(yl, y)
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--label-column",
                "colour",
                "--hidden",
                "8",
                "--epochs",
                "10",
                "--lr",
                "0.02",
                "--quiet",
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy" in out and "backend         numpy" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.npz"], "does not exist"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--hidden", "ten"], "comma-separated integers"),
        (["train", "--epochs", "0"], "expected an integer >= 1"),
        (["train", "--backend", "fortran"], "unknown backend"),
        (["train", "--activation", "swish", "--data", "{csv}"], "unknown activation"),
        (["train", "--data", "{csv}", "--label-column", "nope"], "label column 'nope'"),
        (
            ["train", "--data", "{text}", "--label-column", "y"],
            "non-numeric value 'abc'",
        ),
        (["train", "--data", "{ragged}"], "has 2 columns, expected 3"),
        (["train", "--data", "{noy}"], "no array 'y'"),
        (["train", "--data", "{txt}"], "unsupported data file"),
        (
            ["train", "--data", "{csv}", "--seed", "-1"],
            "argument --seed: expected an integer in [0, 4294967295]",
        ),
        (["train", "--data", "{semi}"], "pass --delimiter ';'"),
        (["train", "--data", "{infcell}"], "row 2, column 'b': an infinite value"),
        (
            ["train", "--data", "{csv}", "--lr", "-1"],
            "argument --lr: expected a number",
        ),
        (
            ["predict", "--model", "{csv}", "--data", "{csv}"],
            "--model: checkpoint '{csv}' is damaged or not a checkpoint",
        ),
        # bad input names the flags (README, "Command line")
        (
            ["evaluate", "--model", "missing.npz", "--data", "{csv}"],
            "--model: checkpoint 'missing.npz' does not exist",
        ),
        (
            ["info", "--model", "missing.npz"],
            "--model: checkpoint 'missing.npz' does not exist",
        ),
        (
            ["predict", "--model", "{model}", "--data", "{wide}"],
            "--data '{wide}' has 4 feature columns, but the --model expects 2",
        ),
        (
            ["evaluate", "--model", "{model}", "--data", "{wide}"],
            "--data '{wide}' has 4 feature columns, but the --model expects 2",
        ),
        (
            [
                "evaluate",
                "--model",
                "{model}",
                "--data",
                "{csv}",
                "--label-column",
                "y",
            ],
            "previously unseen labels",
        ),
        (["evaluate", "--model", "{model}", "--data", "{csv}"], "previously unseen"),
        (
            ["predict", "--data", "x.npz"],
            "the following arguments are required: --model",
        ),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys, args, message):
    files = {
        "csv": "a,b,y\n1,2,7\n3,4,8\n5,6,7\n7,8,8\n",
        "text": "a,b,y\n1,abc,0\n3,4,1\n",
        "ragged": "1,2,0\n3,4\n",
        "txt": "hello",
        "semi": "a;b;y\n1;2;7\n3;4;8\n5;6;7\n7;8;8\n",
        "infcell": "a,b,y\n1,2,7\n3,inf,8\n5,6,7\n7,8,8\n",
    }
    paths = {}
    for name, text in files.items():
        p = tmp_path / f"{name}.{'txt' if name == 'txt' else 'csv'}"
        p.write_text(text)
        paths[name] = str(p)
    np.savez(tmp_path / "noy.npz", X=np.ones((3, 2)))
    paths["noy"] = str(tmp_path / "noy.npz")
    np.savez(tmp_path / "wide.npz", X=np.ones((3, 4)), y=np.zeros(3))
    paths["wide"] = str(tmp_path / "wide.npz")
    from fastnn.model import MLP

    m = MLP((2, 3, 2))
    m.fit(
        np.random.default_rng(0).normal(size=(8, 2)),
        np.arange(8) % 2,
        epochs=1,
        verbose=0,
    )
    m.save(tmp_path / "model.npz")
    paths["model"] = str(tmp_path / "model.npz")
    argv = [a.format(**paths) for a in args]
    with pytest.raises(SystemExit) if _is_usage_error(message) else _nullcontext():
        code = main(argv)
        assert code != 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("fastnn: error: "), err
    assert message.format(**paths) in err
    assert "Traceback" not in captured.err + captured.out


def _is_usage_error(message: str) -> bool:
    return any(
        s in message for s in ("unrecognized", "required", "integer", "argument --")
    )


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cli_process_exit_codes(tmp_path):
    proc = run_cli("train", "--data", str(tmp_path / "none.csv"))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().startswith("fastnn: error:")
        and "Traceback" not in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_data_errors_name_the_problem(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(p)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_dataset(empty)


@pytest.mark.slow
def test_ctrl_c_saves_checkpoint_and_exits_130(tmp_path, npz_data):
    path, _, _ = npz_data
    ckpt = tmp_path / "c.npz"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastnn.cli",
            "train",
            "--data",
            str(path),
            "--epochs",
            "100000",
            "--checkpoint",
            str(ckpt),
            "--checkpoint-every",
            "epoch",
            "--backend",
            "numpy",
            "--quiet",
            "--hidden",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == f"fastnn: interrupted; checkpoint saved to {ckpt}"
    meta, _ = checkpoint.read(ckpt)
    assert meta["train_state"]["epoch"] >= 1 and not meta["train_state"]["finished"]


@pytest.mark.slow
def test_default_train_reaches_97_percent_on_digits():
    # how long it takes is the bench report's business (cold start), not a test's
    proc = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "train", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dataset"] == "digits"
    assert result["test_accuracy"] >= 0.97


def test_resume_with_more_epochs_trains_the_extra_epochs(tmp_path, npz_data, capsys):
    path, _, _ = npz_data
    ckpt = tmp_path / "c.npz"
    common = ["train", "--data", str(path), "--hidden", "8", "--backend", "numpy"]
    common += ["--checkpoint", str(ckpt), "--json"]
    assert main([*common, "--epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 3
    assert main([*common, "--epochs", "5", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 5
    assert checkpoint.read(ckpt)[0]["train_state"]["epoch"] == 5


@pytest.mark.parametrize(
    "option, path, message",
    [
        ("--out", "nodir/m.npz", "folder .* does not exist"),
        ("--checkpoint", "nodir/c.npz", "folder .* does not exist"),
        ("--out", "m.txt", "must be a .npz file"),
        ("--checkpoint", ".", "must be a .npz file"),
        ("--out", "sub.npz", "is a folder"),
    ],
)
def test_train_checks_output_paths_before_training(
    tmp_path, npz_data, capsys, monkeypatch, option, path, message
):
    from fastnn.model import MLP

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output paths")

    monkeypatch.setattr(MLP, "fit", no_training)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.npz").mkdir()
    data_path, _, _ = npz_data
    code = main(["train", "--data", str(data_path), option, path])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("fastnn: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_divergence_stops_training_with_exit_1_and_strict_json(
    tmp_path, npz_data, capsys
):
    path, _, _ = npz_data
    out, ckpt = tmp_path / "m.npz", tmp_path / "c.npz"
    argv = ["train", "--data", str(path), "--hidden", "8", "--backend", "numpy"]
    argv += ["--optimizer", "sgd", "--lr", "1000", "--epochs", "20"]
    argv += ["--out", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "1"]
    with np.errstate(all="ignore"):
        code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "training diverged" in captured.err and captured.err.count("\n") == 1

    def no_nan(token):
        raise AssertionError(f"{token} is not JSON")

    result = json.loads(captured.out, parse_constant=no_nan)
    assert result["status"] == "diverged" and result["train_loss"] is None
    assert result["epochs"] < 20 and "test_loss" not in result
    assert not out.exists()  # no model from a diverged fit
    saved = checkpoint.read(ckpt)[1]  # the last finite state, readable
    assert all(np.isfinite(a).all() for a in saved.values() if a.dtype.kind == "f")
    with np.errstate(all="ignore"):
        assert main([*argv, "--resume", "--quiet"]) == 1  # text report, same status
    assert "training diverged" in capsys.readouterr().err


def test_train_json_reports_status_ok(npz_data, capsys):
    path, _, _ = npz_data
    argv = ["train", "--data", str(path), "--hidden", "8", "--backend", "numpy"]
    assert main([*argv, "--epochs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_ctrl_c_before_any_checkpoint_does_not_claim_one(
    tmp_path, npz_data, capsys, monkeypatch
):
    from fastnn.model import MLP

    def interrupted_at_once(*args, **kwargs):  # e.g. while the first step compiles
        raise KeyboardInterrupt

    monkeypatch.setattr(MLP, "fit", interrupted_at_once)
    path, _, _ = npz_data
    ckpt = tmp_path / "c.npz"
    code = main(["train", "--data", str(path), "--checkpoint", str(ckpt)])
    assert code == 130
    assert capsys.readouterr().err == "fastnn: interrupted; no checkpoint saved\n"
    assert not ckpt.exists()


def test_a_class_with_one_row_that_lands_in_the_test_set_is_known(tmp_path, capsys):
    # too small to stratify, the split is plain: for some seeds the one row of
    # class 2 is a test row; the model (3 outputs) must know it, not fail with
    # "previously unseen labels" after training and lose the model
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = np.r_[np.zeros(20, int), np.ones(19, int), [2]]
    path = tmp_path / "rare.csv"
    lines = ["a,b,c,label"] + [
        ",".join(map(str, row)) + f",{label}" for row, label in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.npz"
    for seed in range(6):
        args = ["train", "--data", str(path), "--epochs", "1", "--hidden", "4"]
        code = main([*args, "--quiet", "--seed", str(seed), "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert fastnn.load(out).classes_.tolist() == [0, 1, 2]
        out.unlink()
