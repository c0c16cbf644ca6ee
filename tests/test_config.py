"""fastnn.show_config() / config(): what `fastnn info` reports."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys

import pytest

import fastnn
from fastnn import _config, _mpi_probe

needs_mpi4py = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None
    and os.environ.get("FASTNN_REQUIRE_MPI") != "1",
    reason="needs mpi4py: pip install -e '.[mpi]'",
)


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
    info = _config.config()["distributed"]
    assert info["mpi4py"] is None and info["mpiexec"] is None
    assert info["library"] is None and info["mismatch"] is None


def test_mpi_line_ready_when_both_present(monkeypatch):
    monkeypatch.setattr(_config, "_version", lambda name: "9.9")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object()
    )  # pretend present
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/mpi/bin/mpiexec")
    library = {"name": "Open MPI v5.0.1", "flavour": "openmpi", "version": "5.0.1",
               "path": "/opt/mpi/lib/libmpi.so.40"}  # fmt: skip
    monkeypatch.setattr(_mpi_probe, "library_info", lambda: library)
    monkeypatch.setattr(
        _mpi_probe,
        "launcher_info",
        lambda exe: {"flavour": "openmpi", "version": "5.0.1"},
    )
    info = _config.distributed_info()
    assert info["mpi4py"] == "9.9" and info["mpiexec"] == "/opt/mpi/bin/mpiexec"
    assert info["library"] == library and info["mismatch"] is None
    line = next(s for s in _shown().splitlines() if s.startswith("MPI:"))
    assert "ready" in line and "Open MPI v5.0.1 (/opt/mpi/lib/libmpi.so.40)" in line


def _fake_mpiexec(folder, version_text: str) -> str:
    exe = folder / "mpiexec"
    exe.write_text(f"#!/bin/sh\nprintf '%s\\n' '{version_text}'\n")
    exe.chmod(0o755)
    return str(folder)


def _info_with_path(path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@needs_mpi4py
def test_info_names_the_mpi_library_and_warns_on_another_launcher(tmp_path):
    library = _mpi_probe.library_info()
    assert "error" not in library, library
    assert library["flavour"] in ("openmpi", "mpich") and library["version"]
    # an mpiexec of another MPI first on the PATH: a warning naming both
    other = "MPICH" if library["flavour"] == "openmpi" else "Open MPI"
    fake = "HYDRA build details:" if other == "MPICH" else "mpiexec (Open MPI)"
    out = _info_with_path(_fake_mpiexec(tmp_path, f"{fake} 1.2.3"))
    assert out.returncode == 0, out.stderr
    lines = [s for s in out.stdout.splitlines() if s.startswith("MPI:")]
    assert f"loads {library['name']}" in lines[0]
    assert str(tmp_path / "mpiexec") in lines[0]
    assert len(lines) == 2 and "warning" in lines[1]
    assert f"{other} 1.2.3" in lines[1] and library["version"] in lines[1]


@needs_mpi4py
def test_info_gives_no_warning_when_launcher_and_library_match(tmp_path):
    library = _mpi_probe.library_info()
    text = {"openmpi": "mpiexec (Open MPI)", "mpich": "HYDRA build details: Version:"}
    fake = f"{text[library['flavour']]} {library['version']}"
    out = _info_with_path(_fake_mpiexec(tmp_path, fake))
    assert out.returncode == 0, out.stderr
    lines = [s for s in out.stdout.splitlines() if s.startswith("MPI:")]
    assert (
        len(lines) == 1
        and "ready" in lines[0]
        and "MPI:       warning" not in out.stdout
    )
