"""Which MPI library mpi4py loads and which ``mpiexec`` is on the PATH.

Both are looked at without starting MPI in this process: importing ``mpi4py.MPI``
loads ``libmpi`` (and by default initialises MPI), so the library is asked in a short
child process. The launcher and the library must come from the same MPI: an
``mpiexec`` of another MPI starts ranks that cannot join each other.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from typing import Any

__all__ = ["compare", "launcher_info", "library_info", "mpi_flavour"]

# Run in a child: the MPI library's own version string and the libmpi file it came
# from (Linux: /proc/self/maps), with MPI left uninitialised.
_PROBE = r"""
import json, re, sys
import mpi4py
mpi4py.rc.initialize = False
mpi4py.rc.finalize = False
from mpi4py import MPI
path = None
if sys.platform.startswith("linux"):
    with open("/proc/self/maps") as maps:
        libs = sorted({s.split()[-1] for s in maps if re.search(r"/libmpi\S*\.so", s)})
    path = libs[0] if libs else None
print(json.dumps({"version": MPI.Get_library_version(), "path": path}))
"""

_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")


def mpi_flavour(text: str) -> str:
    """The MPI a version text names: "openmpi", "mpich" (MPICH, Intel MPI) or
    "unknown"."""
    text = text.lower()
    if "open mpi" in text or "openrte" in text or "open-mpi" in text:
        return "openmpi"
    if "hydra" in text or "mpich" in text or "intel" in text:
        return "mpich"
    return "unknown"


def _version_of(text: str) -> str | None:
    match = _VERSION.search(text)
    return match.group(0) if match else None


@functools.lru_cache(maxsize=4)
def library_info(python: str = sys.executable) -> dict[str, Any]:
    """The MPI library mpi4py loads under ``python``: {"name", "flavour", "version",
    "path"}, or {"error": one line} when it cannot load one."""
    try:
        out = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if out.returncode != 0:
        lines = [s for s in out.stderr.strip().splitlines() if s.strip()]
        return {"error": lines[-1] if lines else f"exit status {out.returncode}"}
    try:
        found = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unexpected output {out.stdout[-200:]!r}"}
    name = found["version"].strip().splitlines()[0].split(",")[0].strip()
    return {
        "name": name,
        "flavour": mpi_flavour(found["version"]),
        "version": _version_of(found["version"]),
        "path": found["path"],
    }


@functools.lru_cache(maxsize=8)
def launcher_info(exe: str) -> dict[str, Any]:
    """``exe --version`` read as {"flavour", "version"} ("unknown" / None when it
    does not say)."""
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return {"flavour": "unknown", "version": None}
    text = out.stdout + out.stderr
    return {"flavour": mpi_flavour(text), "version": _version_of(text)}


def compare(library: dict[str, Any], launcher: dict[str, Any]) -> str | None:
    """Why ``launcher`` cannot start ranks of ``library``, or None when they agree
    (or when either does not say enough to tell)."""
    if "error" in library:
        return None
    lib = (library["flavour"], library["version"])
    run = (launcher["flavour"], launcher["version"])
    if "unknown" in (lib[0], run[0]) or None in (lib[1], run[1]):
        return None
    if lib != run:
        names = {"openmpi": "Open MPI", "mpich": "MPICH", "unknown": "?"}
        return (
            f"mpiexec on the PATH is {names[run[0]]} {run[1]} but mpi4py loads "
            f"{names[lib[0]]} {lib[1]}: ranks would not start; put the matching "
            "mpiexec first on the PATH (see docs/distributed.md)"
        )
    return None
