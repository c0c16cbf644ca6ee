"""show_config(): what this fastnn can do on this machine, and why.

``config()`` returns the same facts as a JSON-ready dict; the benchmark report uses it
as its environment fingerprint.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from . import _gemm_wisdom, _mpi_probe, kernels, threads

_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
               "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd",
               "sve")  # fmt: skip
_PACKAGES = ("numpy", "scipy", "numba", "llvmlite", "Cython", "threadpoolctl",
             "scikit-learn")  # fmt: skip


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _package_version(package: str, status: dict[str, str]) -> str:
    version = _version(package)
    if package == "Cython" and version == "not installed":
        # Cython only builds the extension; the backend runs without it
        built = status.get("cython") == "available"
        return "not needed (extension built)" if built else "not installed"
    return version


def cpu_info() -> dict[str, Any]:
    """CPU model and SIMD features (from /proc/cpuinfo where it exists)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                    break
    except OSError:
        pass
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": threads.cpu_count(),
        "simd": [f for f in _SIMD_FLAGS if f in flags],
    }


#: Environment variables that decide how the thread pools behave: reported (never
#: set) by fastnn, so a report says which settings its numbers were measured under.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "OPENBLAS_CORETYPE",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
)


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl's view)."""
    controller = threads._blas_controller()
    controller = type(controller)()  # fresh view: thread counts may have changed
    return [
        {
            "library": p.internal_api,
            "version": p.version,
            "threads": p.num_threads,
            "architecture": getattr(p, "architecture", None),
            "path": p.filepath,
        }
        for p in controller.lib_controllers
        if p.user_api == "blas"
    ]


def config() -> dict[str, Any]:
    """Every fact show_config() prints, as a dict."""
    status = kernels.backend_status()
    backends = {
        name: {
            "available": state == "available",
            "reason": None if state == "available" else state,
            **(kernels.get_backend(name).info if state == "available" else {}),
        }
        for name, state in status.items()
    }
    return {
        "fastnn": _version("fastnn"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _package_version(p, status) for p in _PACKAGES},
        "backends": backends,
        "default_backend": kernels.get_default_backend(),
        "auto_backend": _auto_backend(),
        "threads": threads.get_num_threads(),
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "blas": blas_info(),
        "cpu": cpu_info(),
        "distributed": distributed_info(),
    }


def _auto_backend() -> str:
    """The backend "auto" picks, or why it has none (a bad FASTNN_ISA): the report
    must still print to show what is wrong."""
    try:
        return kernels.get_backend("auto").name
    except ValueError as exc:
        return f"none ({exc})"


def distributed_info() -> dict[str, Any]:
    """What ``fastnn train --distributed`` needs, without initialising MPI here:
    mpi4py, the MPI library it loads (asked in a child process), an ``mpiexec``
    launcher, and whether the two match ("mismatch": why not, or None)."""
    import importlib.util
    import shutil

    found = importlib.util.find_spec("mpi4py") is not None
    exe = shutil.which("mpiexec")
    info: dict[str, Any] = {
        "mpi4py": _version("mpi4py") if found else None,
        "mpiexec": exe,
        "library": _mpi_probe.library_info() if found else None,
        "launcher": _mpi_probe.launcher_info(exe) if exe else None,
    }
    info["mismatch"] = (
        _mpi_probe.compare(info["library"], info["launcher"])
        if info["library"] and info["launcher"]
        else None
    )
    return info


def _mpi_lines(mpi: dict[str, Any]) -> list[str]:
    lib = mpi["library"]
    if lib and "error" in lib:
        return [
            f"MPI:       mpi4py {mpi['mpi4py']} cannot load an MPI library: "
            f'{lib["error"]} (pip install "fastnn[mpi]" brings Open MPI)'
        ]
    if mpi["mpi4py"] and mpi["mpiexec"]:
        launcher = mpi["launcher"] or {}
        state = (
            f"ready: mpi4py {mpi['mpi4py']} loads {lib['name']} ({lib['path']}); "
            f"mpiexec {mpi['mpiexec']}"
            + (f" ({launcher['version']})" if launcher.get("version") else "")
        )
    else:
        missing = [
            what
            for what, ok in (
                ('mpi4py (pip install "fastnn[mpi]")', mpi["mpi4py"]),
                (
                    'an mpiexec on the PATH (pip install "fastnn[mpi]" brings Open '
                    "MPI's, or use the system's MPI)",
                    mpi["mpiexec"],
                ),
            )
            if not ok
        ]
        state = "unavailable: needs " + " and ".join(missing)
    lines = [f"MPI:       {state} (fastnn train --distributed)"]
    if mpi["mismatch"]:
        lines.append(f"MPI:       warning: {mpi['mismatch']}")
    return lines


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def show_config(file: Any = None) -> None:
    """Print versions, backends (and why one is unavailable), threads, BLAS and CPU."""
    cfg = config()
    lines = [f"fastnn {cfg['fastnn']}  (Python {cfg['python']}, {cfg['platform']})"]
    lines.append(
        "packages:  " + ", ".join(f"{k} {v}" for k, v in cfg["packages"].items())
    )
    lines.append(
        f"backends:  default {cfg['default_backend']!r} -> {cfg['auto_backend']}"
    )
    for name, info in cfg["backends"].items():
        if not info["available"]:
            lines.append(f"  {name:7s} unavailable: {info['reason']}")
            continue
        extra = {k: v for k, v in info.items() if k not in ("available", "reason")}
        details = "; ".join(f"{k} {_format_value(v)}" for k, v in extra.items())
        lines.append(f"  {name:7s} available" + (f": {details}" if details else ""))
    lines.append(
        f"threads:   {cfg['threads']} (fastnn.set_num_threads: fastnn's own calls)"
    )
    user_set = {k: v for k, v in cfg["thread_env"].items() if v is not None}
    lines.append(
        "pools:     "
        + (
            "the runtimes' defaults (no thread variable set; fastnn sets none)"
            if not user_set
            else ", ".join(f"{k}={v}" for k, v in user_set.items())
            + " (set in the environment; fastnn sets none)"
        )
    )
    for blas in cfg["blas"]:
        lines.append(
            f"BLAS:      {blas['library']} {blas['version']} ({blas['architecture']}), "
            f"{blas['threads']} threads, {blas['path']}"
        )
    cpu = cfg["cpu"]
    lines.append(
        f"CPU:       {cpu['model']} ({cpu['machine']}), {cpu['cores']} cores, "
        f"SIMD {_format_value(cpu['simd'])}"
    )
    plan = _gemm_wisdom.status()
    kept = "" if plan["file"] is None else f"; {plan['kept']} kept in {plan['file']}"
    lines.append(f"GEMM plan: {plan['how']}{kept}")
    measured = "; ".join(
        f"from {work:,} work units on {threads} threads (measured)"
        for threads, work in sorted(plan["parallel"].items())
    )
    default = f"from {kernels.parallel_min_work(1):,} work units"
    # only a plan that measures (it keeps a file) measures thresholds: the rule, no
    # own GEMM or an unusable folder leave the default (the GEMM plan line says why)
    when = "measured when a model first trains on 2+ threads"
    lines.append(
        "parallel:  element-wise kernels "
        + (measured or f"{default} ({when if plan['file'] else 'not measured'})")
    )
    lines += _mpi_lines(cfg["distributed"])
    print("\n".join(lines), file=file if file is not None else sys.stdout)
