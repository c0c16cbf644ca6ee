"""fastnn.precompile (what ``pip install`` runs) leaves nothing for the numba backend
to compile: a fresh process that trains, predicts and evaluates through the CLI, the
model API and the estimators finds every kernel in the cache it filled.

One dtype (float32, the default): the precompile runs the same calls for float64, and
compiling both from an empty cache takes minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from _numba_events import RECORD_COMPILED

from fastnn.precompile import in_build

pytest.importorskip("numba")
pytest.importorskip("sklearn")

# The runtime dependencies that are not build requirements (pyproject.toml): pip
# builds (and precompiles) fastnn in an environment without them.
NOT_IN_BUILD_ENV = ("sklearn", "tqdm", "matplotlib")

# As pip's build environment runs it: none of NOT_IN_BUILD_ENV (nor optional extras).
_PRECOMPILE = """
import sys

BLOCKED = {blocked!r}


class NotInBuildEnv:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not a build requirement of fastnn")


sys.meta_path.insert(0, NotInBuildEnv())
import collections
import json
import re

import numpy as np
from numba.core import event

signatures = collections.defaultdict(set)


class Signatures(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        func = ev.data["dispatcher"].py_func
        # a read-only array is a type of its own (users pass read-only data)
        sig = re.sub(r", (True|False), aligned", ", aligned", str(ev.data["args"]))
        signatures[func.__module__ + "." + func.__qualname__].add(sig)


event.register("numba:compile", Signatures())
from fastnn.precompile import compile_all

compile_all(dtypes=(np.float32,))
print(json.dumps({{name: sorted(s) for name, s in signatures.items()}}))
""".format(
    blocked=NOT_IN_BUILD_ENV
    + ("pandas", "pyarrow", "onnx", "onnxruntime", "mpi4py", "torch", "jax")
)

# Names every function Numba compiles while users' calls run.
_USE = (
    """
import json
import warnings
import numpy as np
"""
    + RECORD_COMPILED
    + """
warnings.simplefilter("ignore")  # the estimators' ConvergenceWarning
import fastnn
from fastnn import MLPClassifier, MLPRegressor
from fastnn.cli import main

after = {}
main(["train", "--backend", "numba", "--epochs", "2", "--quiet"])
after["fastnn train"] = list(compiled)
main(["train", "--backend", "numba", "--epochs", "2", "--quiet",
      "--task", "regression", "--optimizer", "sgd"])
after["fastnn train --task regression"] = list(compiled)
rng = np.random.default_rng(0)
X = rng.standard_normal((300, 20)).astype(np.float32)
y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
for solver in ("sgd", "adam"):
    kw = dict(hidden_layer_sizes=(16,), solver=solver, backend="numba", max_iter=3)
    MLPClassifier(**kw).fit(X, y).predict_proba(X)
    MLPClassifier(**kw, early_stopping=True).fit(X, y % 2).predict(X)
    MLPClassifier(**kw).fit(X, np.c_[y % 2, y > 0]).predict(X)
    MLPRegressor(**kw).fit(X, X[:, 0]).predict(X)
    MLPClassifier(**kw).partial_fit(X, y, classes=[0, 1, 2])
after["estimators"] = list(compiled)
X.flags.writeable = False
model = fastnn.MLP((20, 32, 3), backend="numba")
model.fit(X, y, epochs=2, batch_size=64, verbose=0, sample_weight=np.ones(300))
model.evaluate(X, y)
after["MLP on read-only X"] = list(compiled)
# the fused loss_grad without a step (explain; L-BFGS and the distributed fit too)
fastnn.explain.input_gradients(model, X, y=y)
fastnn.explain.input_gradients(model, X.copy(), y=y)
after["explain.input_gradients"] = list(compiled)
print(json.dumps(after))
"""
)


def _run(script: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def precompiled(tmp_path_factory):
    """A fresh Numba cache that only the precompile filled; what it compiled."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("nb-cache")))
    return env, _run(_PRECOMPILE, env)


def test_nothing_left_to_compile_after_precompile(precompiled):
    env, _ = precompiled
    after = _run(_USE, env)
    assert after == {name: [] for name in after}, after
    assert len(after) == 5


def test_each_kernel_compiles_once_per_dtype(precompiled):
    # every caller passes a kernel the same array shapes (an optional output flat,
    # whether empty or not): a second specialisation costs seconds of every install
    # and first run. Read-only inputs are the one legitimate second type.
    _, signatures = precompiled
    ours = {n: s for n, s in signatures.items() if n.startswith("fastnn.")}
    assert len(ours) > 40, sorted(ours)
    assert {n: s for n, s in ours.items() if len(s) > 1} == {}
    # row assignments (a[i] = b[j]) bring Numba's shape-mismatch error formatting
    assert not [n for n in signatures if "shape_context" in n]


def test_blocked_modules_are_the_runtime_only_dependencies():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    build = re.search(
        r"\[build-system\]\s*(#[^\n]*\n)*requires = \[(.*?)\]", pyproject, re.S
    )
    build_names = set(re.findall(r'"([A-Za-z0-9_.-]+)', build.group(2)))
    runtime = {
        re.match(r"[A-Za-z0-9_.-]+", r).group(0)
        for r in metadata.requires("fastnn") or []
        if "extra ==" not in r
    }
    import_names = {"scikit-learn": "sklearn"}
    assert {import_names.get(n, n) for n in runtime - build_names} == set(
        NOT_IN_BUILD_ENV
    )


def test_in_build_clears_an_earlier_builds_cache_also_when_skipped(tmp_path):
    # a reused build/ folder: with the precompile skipped, the wheel shipped the
    # earlier build's entries, which Numba loads though a helper they inline (another
    # module) has changed since
    cache = tmp_path / "fastnn" / "kernels" / "nb" / "__pycache__"
    cache.mkdir(parents=True)
    names = ["train._loss_grad-249.py311.nbi", "train._loss_grad-249.py311.1.nbc"]
    for name in [*names, "train.cpython-311.pyc"]:
        (cache / name).write_bytes(b"stale")
    assert in_build(tmp_path, {"FASTNN_NUMBA_PRECOMPILE": "0"}) is None
    assert [p.name for p in cache.iterdir()] == ["train.cpython-311.pyc"]


def test_in_build_precompiles_the_built_package_without_numba_settings(
    tmp_path, monkeypatch
):
    # NUMBA_OPT, NUMBA_BOUNDSCHECK...: not in Numba's cache key, so a build made with
    # them would hand their code to every user; NUMBA_CACHE_DIR: not in the package
    runs = []

    def run(command, cwd, env):
        runs.append((command, cwd, env))
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess, "run", run)
    environ = {
        "NUMBA_CACHE_DIR": "/elsewhere",
        "NUMBA_OPT": "0",
        "NUMBA_BOUNDSCHECK": "1",
        "PYTHONPATH": "/build-env/site",
        "HOME": "/home/user",
    }
    assert in_build(tmp_path, environ) == 3
    ((command, cwd, env),) = runs
    assert command == [sys.executable, "-m", "fastnn.precompile"] and cwd == tmp_path
    built_first = os.pathsep.join([str(tmp_path.resolve()), "/build-env/site"])
    # and no GEMM plan timed into the builder's cache
    assert env == {
        "PYTHONPATH": built_first,
        "HOME": "/home/user",
        "FASTNN_GEMM_PLAN": "rule",
    }
