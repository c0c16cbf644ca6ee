"""Build the Cython kernels (kernels/cy/*.pyx) as extensions of fastnn.kernels.cy.

Everything else lives in pyproject.toml. OpenMP is used when the compiler accepts
-fopenmp; otherwise the kernels build serially (``fastnn.show_config()`` says so).
``FASTNN_NATIVE=1`` adds -march=native (faster here, but the binary may not run on an
older CPU, so it is opt-in).
"""

import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
CY_DIR = HERE / "kernels" / "cy"


def tuning_macros() -> list[tuple[str, str]]:
    """The float32 numerics and the stack scratch sizes of kernels/tuning.py (one spec
    for nb/ and cy/)."""
    spec = importlib.util.spec_from_file_location(
        "tuning", HERE / "kernels" / "tuning.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.c_macros()


def openmp_works() -> bool:
    """Compile and link a tiny OpenMP program with the build's compiler."""
    if os.environ.get("FASTNN_NO_OPENMP") == "1":
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = (
        "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.c"
        path.write_text(src)
        cmd = cc.split() + ["-fopenmp", str(path), "-o", str(Path(tmp) / "t")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


OPENMP = openmp_works()
if not OPENMP:
    print("fastnn: OpenMP not available, building serial kernels", file=sys.stderr)
# -fno-trapping-math and -fno-math-errno only let GCC vectorise loops with selects
# (such as leaky_relu, the branch-free float32 exp) and sqrt; they assume nothing
# about NaN/inf.
compile_args = ["-O3", "-fno-trapping-math", "-fno-math-errno"] + (
    ["-fopenmp"] if OPENMP else []
)
link_args = ["-fopenmp"] if OPENMP else []
if os.environ.get("FASTNN_NATIVE") == "1":
    compile_args.append("-march=native")

extensions = [
    Extension(
        f"fastnn.kernels.cy.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include(), str(CY_DIR)],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + tuning_macros(),
        # gemm.pyx compiles fastnn's own GEMM (C headers, one kernel per ISA)
        depends=[str(h.relative_to(HERE)) for h in sorted(CY_DIR.glob("*.h"))],
    )
    for pyx in sorted(CY_DIR.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(CY_DIR)],
        compile_time_env={"FASTNN_OPENMP": OPENMP},
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "binding": True,
        },
    ),
)
