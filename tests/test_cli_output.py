"""What the ``fastnn`` command shows: test-size, validation metrics, per-epoch lines,
the progress bar, --version, broken pipes, flag names in messages, help texts. Run
through subprocesses, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


FAST = ["--epochs", "2", "--hidden", "16", "--backend", "numpy"]


def test_test_size_zero_keeps_every_digit_for_training():
    out = run_cli("train", "--test-size", "0", "--json", *FAST)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n_train"] == 1797 and result["n_test"] == 0
    assert "test_accuracy" not in result
    out = run_cli("train", "--test-size", "0.5", "--json", *FAST)
    assert json.loads(out.stdout)["n_test"] == 899


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_test_size_out_of_range_names_the_flag(value):
    out = run_cli("train", "--test-size", value, *FAST)
    assert out.returncode == 2
    assert "argument --test-size: expected a number >= 0 and < 1" in out.stderr


def _all_actions():
    import argparse

    from fastnn.cli import build_parser

    parser = build_parser()
    todo = [("fastnn", parser)]
    while todo:
        name, p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {k}", v) for k, v in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                yield name, p, action


def test_every_flag_has_help_and_says_its_default():
    missing = []
    for name, parser, action in _all_actions():
        if not action.help:
            missing.append(f"{name} {action.option_strings}: no help")
            continue
        flag_only = action.nargs == 0  # store_true / store_const: on or off
        if not (action.required or flag_only):
            text = parser._get_formatter()._get_help_string(action)
            if "default" not in text:
                missing.append(f"{name} {action.option_strings}: no default shown")
    assert missing == []


def test_validation_metrics_in_text_and_json_and_honest_n_train():
    from fastnn.data import load_digits_split
    from fastnn.model import validation_size

    y_train = load_digits_split()[2]
    out = run_cli("train", "--validation-split", "0.2", "--json", *FAST)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert 0 < r["val_loss"] and 0 < r["val_accuracy"] <= 1
    assert r["n_validation"] == validation_size(y_train, 0.2) > 0
    assert r["n_train"] + r["n_validation"] == len(y_train)
    text = run_cli("train", "--validation-split", "0.2", "--quiet", *FAST)
    line = next(s for s in text.stdout.splitlines() if s.startswith("val accuracy"))
    assert f"{r['val_accuracy']:.4f}" in line and str(r["n_validation"]) in line


def test_verbose_prints_one_line_per_epoch():
    out = run_cli("train", "--verbose", "--validation-split", "0.2", *FAST)
    assert out.returncode == 0, out.stderr
    lines = [s for s in out.stdout.splitlines() if s.startswith("epoch ")]
    assert [s.split()[1] for s in lines] == ["1/2", "2/2"]
    assert all("val_accuracy=" in s and " s " in s for s in lines)
    # with --json, stdout is the JSON object alone and the lines go to stderr
    out = run_cli("train", "--verbose", "--json", *FAST)
    assert json.loads(out.stdout)["epochs"] == 2
    assert [s.split()[1] for s in out.stderr.splitlines() if s.startswith("epoch")] == [
        "1/2",
        "2/2",
    ]
    quiet = run_cli("train", "--quiet", *FAST)
    assert not any(s.startswith("epoch ") for s in quiet.stdout.splitlines())


def test_patience_stops_early_and_keeps_the_best_epoch():
    args = ["train", "--patience", "0", "--validation-split", "0.3", "--epochs", "40",
            "--optimizer", "sgd", "--lr", "0.5", "--hidden", "32", "--backend",
            "cython", "--json"]  # fmt: skip
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["epochs"] < 40 and "stopped_early" in r
    assert r["stopped_early"]["monitor"] == "val_loss"
    assert r["stopped_early"]["best_epoch"] == r["epochs"] - 1


def test_version():
    out = run_cli("--version")
    from importlib import metadata

    assert out.returncode == 0 and out.stdout.strip() == (
        f"fastnn {metadata.version('fastnn')}"
    )


@pytest.mark.parametrize("command", [["info"], ["train", "--help"]])
def test_closed_pipe_is_a_normal_end(command):
    # what `fastnn info | head -1` does: the reader leaves before fastnn writes
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastnn.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_more_threads_than_cores_is_warned():
    from fastnn.threads import cpu_count

    n = cpu_count() + 1
    out = run_cli("train", "--threads", str(n), "--json", "--epochs", "1",
                  "--hidden", "4", "--backend", "cython")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"fastnn: warning: --threads {n} is more than the {cpu_count()} cores" in (
        out.stderr
    )
    ok = run_cli("train", "--threads", "1", "--json", "--epochs", "1", "--hidden",
                 "4", "--backend", "cython")  # fmt: skip
    assert "warning" not in ok.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--resume needs --checkpoint"),
        (["--lr", "-1"], "argument --lr: expected a number > 0"),
        (["--validation-split", "1"], "argument --validation-split: expected a number"),
        (["--momentum", "nan"], "argument --momentum: expected a number"),
        (["--weight-decay", "-0.1"], "argument --weight-decay: expected a number >= 0"),
        (["--validation-split", "0.0001"], "--validation-split 0.0001 holds out 0 of"),
    ],
)
def test_messages_name_the_flag(args, message):
    out = run_cli("train", *args, *FAST)
    assert out.returncode in (1, 2)
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_jit_compile_is_mentioned_for_numba_only(backend):
    out = run_cli("train", "--epochs", "1", "--hidden", "4", "--backend", backend)
    assert out.returncode == 0, out.stderr
    line = next(s for s in out.stdout.splitlines() if s.startswith("first step"))
    assert ("JIT" in line) == (backend == "numba")


def test_info_does_not_call_the_built_cython_backend_missing():
    import fastnn

    out = run_cli("info")
    packages = next(s for s in out.stdout.splitlines() if s.startswith("packages:"))
    if "cython" in fastnn.available_backends():
        assert "Cython not installed" not in packages
