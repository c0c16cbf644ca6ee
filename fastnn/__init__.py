"""fastnn: fast neural-network training on the CPU.

The kernel backends (numpy reference, Numba, Cython) live in :mod:`fastnn.kernels`;
this package holds the settings and the model API built on them.
"""

from __future__ import annotations

import importlib.util as _importlib_util
import os as _os
import sys as _sys

# kernels/ becomes fastnn.kernels only through an install (pyproject's package-dir):
# a checkout's fastnn/ folder that shadows the installed package (Python started in
# the repository root) has none. Say so in one line instead of a circular import.
if _importlib_util.find_spec(f"{__name__}.kernels") is None:
    raise ImportError(
        f"fastnn was imported from the source folder {__path__[0]}, which lacks "
        "fastnn.kernels (only an install maps kernels/ there): run Python outside "
        "the repository root to use the installed fastnn, or install this checkout "
        'in editable mode: pip install -e ".[test]"'
    )


# threadpoolctl (fastnn.threads' view of the BLAS pools) sets KMP_DUPLICATE_LIB_OK=True
# in os.environ when first imported; fastnn sets no environment variable (README,
# docs/threading.md), and this one would silence Intel OpenMP's guard against two
# copies of its runtime for every library in the process. fastnn's use of it (reading
# and setting the pools of libraries already loaded) does not need it: put back what
# the user had.
if "threadpoolctl" not in _sys.modules:
    _kmp_before = _os.environ.get("KMP_DUPLICATE_LIB_OK")
    import threadpoolctl as _threadpoolctl  # noqa: F401

    if _kmp_before is None:
        _os.environ.pop("KMP_DUPLICATE_LIB_OK", None)
    del _kmp_before

from ._config import show_config
from ._version import __version__
from .callbacks import Callback, EarlyStopping, History, TerminateOnNaN
from .checkpoint import CheckpointError
from .data import load_dataset, load_digits_split
from .kernels import available_backends, get_backend, set_backend
from .layers import GELU, Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import MLP, NotFittedError, Sequential
from .optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    ReduceLROnPlateau,
    StepLR,
)
from .serialize import load
from .standard_callbacks import CSVLogger, LambdaCallback, ModelCheckpoint
from .threads import get_num_threads, num_threads, set_num_threads

# Loaded on first use (kept out of `import fastnn`): name -> (module, attribute).
_LAZY = {
    "calibrate": ("calibration", "calibrate"),
    "TemperatureScaled": ("calibration", "TemperatureScaled"),
    "expected_calibration_error": ("calibration", "expected_calibration_error"),
    "calibration": ("calibration", None),
    "explain": ("explain", None),
}


def __getattr__(name: str):
    # the estimators import scikit-learn (~0.8 s): load them on first use only
    if name == "MLPClassifier":
        from .estimator import MLPClassifier

        return MLPClassifier
    if name == "MLPRegressor":
        from .regressor import MLPRegressor

        return MLPRegressor
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")


__all__ = [
    "GELU",
    "MLP",
    "SGD",
    "Adam",
    "AdamW",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "ConstantLR",
    "CosineAnnealingLR",
    "EarlyStopping",
    "TerminateOnNaN",
    "History",
    "Identity",
    "LambdaCallback",
    "LeakyReLU",
    "Linear",
    "MLPClassifier",
    "MLPRegressor",
    "MeanSquaredError",
    "ModelCheckpoint",
    "NotFittedError",
    "ReLU",
    "ReduceLROnPlateau",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "StepLR",
    "Tanh",
    "TemperatureScaled",
    "__version__",
    "available_backends",
    "calibrate",
    "calibration",
    "expected_calibration_error",
    "explain",
    "get_backend",
    "get_num_threads",
    "load",
    "load_dataset",
    "load_digits_split",
    "num_threads",
    "set_backend",
    "set_num_threads",
    "show_config",
]
