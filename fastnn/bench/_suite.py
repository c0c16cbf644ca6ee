"""Load modules of the benchmarks/ suite (kernel_cases, numpy_mlp, torch_mlp).

The per-op registry and the baselines live in ``benchmarks/`` so the pytest suite and
``fastnn bench`` share one definition. They are found, in order: as the package
``fastnn.benchmarks`` (if a build ships the folder under that name), in
``$FASTNN_BENCHMARKS_DIR``, beside the package in a source checkout, or in
``./benchmarks``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


class SuiteNotFound(ImportError):
    pass


def _candidates() -> list[Path]:
    out = []
    if os.environ.get("FASTNN_BENCHMARKS_DIR"):
        out.append(Path(os.environ["FASTNN_BENCHMARKS_DIR"]))
    out.append(Path(__file__).resolve().parents[2] / "benchmarks")
    out.append(Path.cwd() / "benchmarks")
    return out


def folder() -> Path:
    """The folder holding the suite's files (for processes that load them by path)."""
    spec = importlib.util.find_spec("fastnn.benchmarks")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    for candidate in _candidates():
        if (candidate / "numpy_mlp.py").is_file():
            return candidate
    raise SuiteNotFound(
        "benchmarks/ not found (looked in "
        + ", ".join(str(p) for p in _candidates())
        + "); run from a source checkout or set FASTNN_BENCHMARKS_DIR"
    )


def load(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (registered as ``fastnn_benchmarks.<name>``)."""
    try:
        return importlib.import_module(f"fastnn.benchmarks.{name}")
    except ImportError:
        pass
    key = f"fastnn_benchmarks.{name}"
    if key in sys.modules:
        return sys.modules[key]
    for folder in _candidates():
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[key]
                raise
            return module
    raise SuiteNotFound(
        f"benchmarks/{name}.py not found (looked in "
        + ", ".join(str(p) for p in _candidates())
        + "); run from a source checkout or set FASTNN_BENCHMARKS_DIR"
    )
