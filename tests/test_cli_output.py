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
    assert out.returncode == 1 and "--test-size must lie in [0, 1)" in out.stderr
