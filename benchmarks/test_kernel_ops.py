"""Per-op kernel benchmarks: each backend side by side with the NumPy backend.

`benchmark.group = "op|shape"` lines the implementations up; each body is checked
against the NumPy backend's result before it is timed, and run once untimed first so
JIT compilation stays out of the timings.
`pytest benchmarks --benchmark-enable --benchmark-only` for the real run; plain
`pytest` runs each body once (--benchmark-disable) as a smoke test.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import BACKEND_NAMES
from kernel_cases import cases

import fastnn

CASES = cases()


def _result_arrays(result):
    items = result if isinstance(result, tuple) else (result,)
    return [np.asarray(r) for r in items if r is not None]


@pytest.mark.parametrize("impl", BACKEND_NAMES)
@pytest.mark.parametrize("op,shape,setup", CASES, ids=[f"{c[0]}|{c[1]}" for c in CASES])
def test_op(benchmark, impl, op, shape, setup):
    backend = fastnn.get_backend(impl)
    fn = setup(backend)
    if not op.endswith("_update"):  # updates change their state; checked in tests/
        got = _result_arrays(fn())
        expected = _result_arrays(setup(fastnn.get_backend("numpy"))())
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=2e-3, atol=2e-3)
    fn()  # warm-up (JIT compile, page faults) outside the timings
    benchmark.group = f"{op}|{shape}"
    benchmark.extra_info.update(op=op, shape=shape, impl=impl, dtype="float32",
                                threads=fastnn.get_num_threads())  # fmt: skip
    benchmark(fn)
