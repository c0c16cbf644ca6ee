"""The instruction-set builds of the Cython backend (kernels/isa.py): the choice at
import, its errors, and every build this CPU runs against the oracle and bit for bit
against the others (each in a process of its own: the build is chosen at import)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from fastnn.kernels import cy, isa

import fastnn

HERE = Path(__file__).parent
CPU_BEST = cy.GEMM_PLAN.cpu_isa
RUNNABLE = isa.ISAS[: isa.ISAS.index(CPU_BEST) + 1]
# the build this process runs is tested by the rest of the suite; the others this
# CPU runs here (one it lacks cannot run: forcing it is an error, tested below)
OTHERS = tuple(i for i in RUNNABLE if i != cy.ELEMENTWISE_ISA)
# the oracle, finite-difference and fused-step tests of the compiled kernels
KERNEL_SUITES = ("test_kernels.py", "test_gradients.py", "test_train_step.py",
                 "test_loss_grad.py", "test_squared_error.py")  # fmt: skip


def _run_with_isa(
    name: str | None, args: list[str], **kw
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(isa.ISA_ENV, None)
    if name is not None:
        env[isa.ISA_ENV] = name
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True,
        timeout=900, **kw,
    )  # fmt: skip


def _cpu_best_from_proc() -> str:
    """The best ISA by the kernel's own view of the CPU (/proc/cpuinfo), not cpuid."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "generic"


@pytest.mark.skipif(
    not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo"
)
def test_default_is_the_cpus_best_isa_for_both_families():
    code = (
        "from fastnn.kernels import cy; "
        "print(cy.ELEMENTWISE_ISA, cy.GEMM_PLAN.isa, cy.BACKEND_INFO['isa'])"
    )
    proc = _run_with_isa(None, ["-c", code])
    assert proc.returncode == 0, proc.stderr
    best = _cpu_best_from_proc()
    elementwise, gemm, info = proc.stdout.split(maxsplit=2)
    assert (elementwise, gemm) == (best, best) == (CPU_BEST, CPU_BEST)
    assert info.strip() == f"GEMM {best}, element-wise {best}"


def test_forced_isa_shows_in_backend_info():
    forced = RUNNABLE[0]  # generic: every CPU runs it
    code = "import fastnn; fastnn.show_config()"
    proc = _run_with_isa(forced, ["-c", code])
    assert proc.returncode == 0, proc.stderr
    expected = f"GEMM {forced}, element-wise {forced}"
    if forced != CPU_BEST:
        expected += f" (forced; CPU: {CPU_BEST})"
    assert f"isa {expected}" in proc.stdout


@pytest.mark.parametrize("name", [n for n in isa.ISAS if n not in RUNNABLE])
def test_forcing_an_isa_the_cpu_lacks_is_a_clear_error(name):
    code = "import fastnn.kernels.cy"
    proc = _run_with_isa(name, ["-c", code])
    assert proc.returncode != 0
    assert f"FASTNN_ISA={name}: this CPU lacks it (its best is {CPU_BEST})" in (
        proc.stderr
    )


def test_choose():
    built = ("generic", "avx2", "avx512")
    assert isa.choose("avx512", built, None) == "avx512"
    assert isa.choose("avx2", built, None) == "avx2"
    assert isa.choose("avx512", ("generic", "avx2"), None) == "avx2"
    assert isa.choose("avx512", built, "generic") == "generic"
    with pytest.raises(RuntimeError, match="FASTNN_ISA=avx512: this CPU lacks it"):
        isa.choose("avx2", built, "avx512")
    with pytest.raises(RuntimeError, match="FASTNN_ISA=avx2: the element-wise kernels"):
        isa.choose("avx512", ("generic",), "avx2")


def test_unknown_isa_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(isa.ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="FASTNN_ISA='sse9': expected one of"):
        isa.requested()


@pytest.mark.parametrize("name", OTHERS)
def test_every_isa_gives_the_same_bits(name, tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        import _isa_outputs
    finally:
        sys.path.remove(str(HERE))
    path = tmp_path / "out.npz"
    proc = _run_with_isa(name, [str(HERE / "_isa_outputs.py"), str(path)])
    assert proc.returncode == 0, proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
        here = _isa_outputs.outputs()
    with np.load(path) as there:
        assert sorted(there.files) == sorted(here)
        differ = [k for k in here if here[k].tobytes() != there[k].tobytes()]
    assert not differ, f"{name} vs {cy.ELEMENTWISE_ISA}: {differ}"


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHERS)
def test_kernel_suites_pass_on_every_isa(name):
    """The Cython kernel tests (oracle, finite differences, fused step) again with
    FASTNN_ISA forcing another build."""
    args = ["-m", "pytest", "-x", "-p", "no:cacheprovider", "-k", "cython"]
    suites = [str(HERE / s) for s in KERNEL_SUITES]
    proc = _run_with_isa(name, args + suites, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"isa GEMM {name}, element-wise {name}" in proc.stdout  # the header
    assert " passed" in proc.stdout.splitlines()[-1]


def test_isa_builds_cover_fastnn():
    """The modules built per ISA are the ones the backend imports."""
    assert {m.__name__.rsplit(".", 1)[-1] for m in cy._KERNEL_MODULES} == {
        isa.module_name(m, cy.ELEMENTWISE_ISA) for m in isa.PER_ISA_MODULES
    }
    assert fastnn.get_backend("cython").info["isa"] == cy.BACKEND_INFO["isa"]


@pytest.mark.parametrize("name", ["sse9", *(n for n in isa.ISAS if n not in RUNNABLE)])
def test_a_bad_isa_is_an_error_not_a_slower_default_backend(name):
    """The default ("auto") backend raises FASTNN_ISA's error instead of quietly
    training on a backend that ignores it (the NumPy reference: the compiled
    backends both run the chosen ISA's GEMM); a backend named explicitly that
    needs no ISA still runs, and show_config still reports what is wrong."""
    code = (
        "import numpy as np, fastnn\n"
        "X, y = np.zeros((8, 4)), np.arange(8) % 3\n"
        "fastnn.MLP((4, 3), backend='numpy').fit(X, y, epochs=1, verbose=0)\n"
        "print('numpy ran')\n"
        "fastnn.show_config()\n"
        "fastnn.MLP((4, 3)).fit(X, y, epochs=1, verbose=0)\n"
    )
    proc = _run_with_isa(name, ["-c", code])
    assert "numpy ran" in proc.stdout, proc.stderr
    assert "default 'auto' -> none (backend 'cython' is unavailable" in proc.stdout
    assert proc.returncode != 0
    assert f"FASTNN_ISA={name!r}" in proc.stderr or f"FASTNN_ISA={name}:" in (
        proc.stderr
    )
