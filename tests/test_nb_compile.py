"""What the Numba backend compiles from an empty cache (its cold start).

Each check runs in a fresh process with its own empty NUMBA_CACHE_DIR, so nothing
compiled or cached by another test can hide a compilation.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
from _numba_events import RECORD_COMPILED

pytest.importorskip("numba")

# Records the name of every function Numba compiles after the import of the
# backend, and whether the import itself compiled a parallel kernel.
_CHILD = (
    """
import json
import numpy as np
"""
    + RECORD_COMPILED
    + """
from fastnn.kernels import nb
from fastnn.kernels.nb import linear

at_import = list(compiled)
layer = nb.BACKEND_INFO["threading_layer"]
# 3 rows, 4 columns: the GEMM is cut by columns, each block's epilogue _bias_act_cols
x = np.ones((3, 2), np.float32)
w = np.ones((2, 4), np.float32)
b = np.ones(4, np.float32)
y = np.empty((3, 4), np.float32)
z = np.empty((3, 4), np.float32)
linear.linear_forward(x, w, b, y, z, 1, 0.0)
print(json.dumps({"at_import": at_import, "layer": layer, "compiled": compiled}))
"""
)


@pytest.fixture(scope="module")
def cold_child(tmp_path_factory):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("nb-cache")))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_backend_import_compiles_nothing(cold_child):
    # the threading layer is named by starting Numba's threads, not by compiling
    # (seconds from an empty cache) and running a tiny parallel kernel
    assert cold_child["at_import"] == []
    assert cold_child["layer"] in ("tbb", "omp", "workqueue")


def test_forward_epilogue_links_no_error_formatting(cold_child):
    # an array slice assignment brings Numba's shape-mismatch message (string
    # formatting) into the kernel and every kernel that calls it
    assert "_bias_act_cols" in cold_child["compiled"]
    assert not [n for n in cold_child["compiled"] if "shape_context" in n]


def test_loss_flags_have_no_default():
    # a jitted caller that omits a defaulted flag compiles the callee (and the
    # parallel kernel under it) once more for the omitted type
    from fastnn.kernels.nb import loss

    for kernel in (loss._se_serial, loss._se_parallel):
        param = inspect.signature(kernel.py_func).parameters["sigmoid"]
        assert param.default is inspect.Parameter.empty
