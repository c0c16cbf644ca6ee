"""fastnn.show_config() / config(): what `fastnn info` reports."""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys

import fastnn
from fastnn import _config


def _shown() -> str:
    out = io.StringIO()
    fastnn.show_config(file=out)
    return out.getvalue()


def test_show_config_reports_backends_threads_blas_cpu():
    text = _shown()
    cfg = _config.config()
    for name in fastnn.available_backends():
        assert f"  {name:7s} available" in text
    if "cython" in fastnn.available_backends():
        info = cfg["backends"]["cython"]
        assert ("openmp on" in text) == bool(info.get("openmp"))
    assert f"threads:   {fastnn.get_num_threads()}" in text
    assert "pools:" in text and "BLAS:" in text and "CPU:" in text
    assert text.count("\n") >= 8


def test_mpi_line_does_not_start_mpi():
    # importing mpi4py.MPI would initialise MPI: show_config must only look
    code = (
        "import sys, io, fastnn; fastnn.show_config(file=io.StringIO()); "
        "print('mpi4py.MPI' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_mpi_line_says_what_is_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mpi4py" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(shutil, "which", lambda name: None)
    line = next(s for s in _shown().splitlines() if s.startswith("MPI:"))
    assert "unavailable" in line
    assert 'pip install "fastnn[mpi]"' in line and "mpiexec" in line
    assert _config.config()["distributed"] == {"mpi4py": None, "mpiexec": None}


def test_mpi_line_ready_when_both_present(monkeypatch):
    monkeypatch.setattr(_config, "_version", lambda name: "9.9")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object()
    )  # pretend present
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/mpi/bin/mpiexec")
    info = _config.distributed_info()
    assert info == {"mpi4py": "9.9", "mpiexec": "/opt/mpi/bin/mpiexec"}
