"""The environment fingerprint of a report: fastnn.show_config()'s facts plus what a
benchmark needs on top (date, clock, caches, OpenMP runtime, Numba threading layer,
versions of the peers and of the report's own tools, thread-related environment
variables, load average, the source revision)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .._config import _version

_EXTRA_PACKAGES = ("torch", "jax", "matplotlib", "tqdm", "pytest-benchmark")
_ENV_PREFIXES = ("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "NUMBA_", "KMP_", "FASTNN_")


def cpu_details() -> dict[str, Any]:
    """Clock (as /proc/cpuinfo reports it) and cache sizes (sysfs)."""
    out: dict[str, Any] = {"mhz": None, "caches": {}}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    out["mhz"] = float(line.split(":")[1])
                    break
    except (OSError, ValueError):
        pass
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.exists() else []:
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + (
            "d" if kind == "Data" else "i" if kind == "Instruction" else ""
        )
        out["caches"][name] = _parse_size(size)
    return out


def _parse_size(text: str) -> int | None:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text[-1] in mult:
            return int(text[:-1]) * mult[text[-1]]
        return int(text)
    except (ValueError, IndexError):
        return None


def llc_bytes(env: dict[str, Any]) -> int | None:
    caches = env.get("cpu", {}).get("caches", {})
    for name in ("L3", "L2"):
        if caches.get(name):
            return caches[name]
    return None


def openmp_info() -> list[dict[str, Any]]:
    """OpenMP runtimes loaded in this process (threadpoolctl's view)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            "library": i.get("internal_api"),
            "version": i.get("version"),
            "threads": i.get("num_threads"),
            "path": i.get("filepath"),
        }
        for i in threadpool_info()
        if i.get("user_api") == "openmp"
    ]


def numba_threading() -> dict[str, Any]:
    try:
        import numba
    except ImportError:
        return {"available": False}
    info: dict[str, Any] = {
        "available": True,
        "configured": numba.config.THREADING_LAYER,
        "num_threads": numba.config.NUMBA_NUM_THREADS,
    }
    try:
        info["active"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        info["active"] = None
    return info


def source_revision() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": rev or None, "dirty": bool(dirty.strip())}


def fingerprint() -> dict[str, Any]:
    """Everything a reader needs to judge where the numbers came from."""
    from .._config import config

    env = config()
    env["cpu"].update(cpu_details())
    env["packages"].update({p: _version(p) for p in _EXTRA_PACKAGES})
    env["openmp"] = openmp_info()
    env["numba_threading"] = numba_threading()
    env["env_vars"] = {
        k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)
    }
    env["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    env["python_implementation"] = platform.python_implementation()
    env["loadavg_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env["source"] = source_revision()
    return env
