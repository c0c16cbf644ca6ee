"""Which instruction set (ISA) the compiled kernels run, chosen at run time.

Both kernel families of the Cython backend run the best ISA this CPU has:

- the GEMM (kernels/cy/_gemm.h) holds a micro-kernel per ISA, each under its own
  ``target`` attribute, and switches between them (kernels/gemm.py);
- the element-wise and row-wise kernels (activations, losses, optimizer updates, the
  fused train_step) are compiled once per ISA from the same source: setup.py builds
  each module of ``PER_ISA_MODULES`` again under ``module_name(module, isa)`` with
  ``BUILD_FLAGS[isa]``, and kernels/cy/__init__.py imports the chosen build.

Never from build flags: a wheel built on any x86-64 machine carries every build, and
the CPU's features (cpuid, through ``__builtin_cpu_supports``) pick one. Every build
compiles with ``-ffp-contract=off`` (no a*b+c fused into one rounding), so all give
the same bits. ``FASTNN_ISA=generic|avx2|avx512`` forces a lower one (for tests);
asking for one the CPU lacks is an error. This module imports nothing compiled:
setup.py reads it as a plain file.
"""

from __future__ import annotations

import os

ISA_ENV = "FASTNN_ISA"
#: From the baseline up; "generic" is baseline x86-64 (SSE2) or whatever the
#: target's baseline is (NEON on arm64).
ISAS = ("generic", "avx2", "avx512")

#: The Cython modules holding element-wise loops, built once per ISA.
PER_ISA_MODULES = ("activations", "linear", "loss", "optim", "train")

#: GCC/Clang flags of each x86-64 build beyond the baseline ("generic" has none).
#: avx512 is the Skylake-X set (F, BW, DQ, VL): GCC vectorises the narrower loops
#: with 256-bit masked forms only with VL. kernels/cy/_gemm.h's cpu check asks for
#: the same features.
BUILD_FLAGS = {
    "avx2": ("-mavx2", "-mfma"),
    "avx512": ("-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq",
               "-mavx512vl"),
}  # fmt: skip

#: Added to every build (the baseline included): identical bits on every ISA.
COMMON_FLAGS = ("-ffp-contract=off",)


class ISAError(ValueError, RuntimeError):
    """FASTNN_ISA names an instruction set this process cannot run (a setting to
    fix, not a backend to skip: the backend registry raises it instead of falling
    back to a backend that ignores FASTNN_ISA)."""


def module_name(module: str, isa: str) -> str:
    """The name of ``module``'s build for ``isa`` (the baseline's: the plain name)."""
    return module if isa == "generic" else f"_{module}_{isa}"


def requested() -> str | None:
    """The ISA that FASTNN_ISA forces, or None when it is unset or empty; ISAError
    (a ValueError) for a name not in :data:`ISAS`."""
    value = os.environ.get(ISA_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ISAS:
        raise ISAError(f"{ISA_ENV}={value!r}: expected one of {', '.join(ISAS)}")
    return value


def choose(cpu_best: str, built: tuple[str, ...], wanted: str | None) -> str:
    """The ISA to run: ``wanted`` (FASTNN_ISA), else the best of ``built`` that this
    CPU (whose best is ``cpu_best``) runs.

    Raises ISAError (a RuntimeError) when ``wanted`` is past the CPU's best or was
    not built.
    """
    runnable = ISAS[: ISAS.index(cpu_best) + 1]
    if wanted is None:
        return max((i for i in built if i in runnable), key=ISAS.index)
    if wanted not in runnable:
        raise ISAError(
            f"{ISA_ENV}={wanted}: this CPU lacks it (its best is {cpu_best}); "
            f"use one of {', '.join(runnable)}"
        )
    if wanted not in built:
        raise ISAError(
            f"{ISA_ENV}={wanted}: the element-wise kernels were not built for it "
            f"(built: {', '.join(built)}; setup.py builds avx2 and avx512 on x86-64 "
            "when the compiler takes their flags)"
        )
    return wanted
