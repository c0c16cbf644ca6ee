"""Whole-epoch training throughput: fastnn's backends against the pure-NumPy MLP,
PyTorch eager (when installed) and scikit-learn's MLPClassifier.

Same architecture, batch size, data (float32), SGD hyper-parameters and L2 for every
system (the systems are fastnn.bench.workloads', shared with ``fastnn bench``).
``benchmark.group = "train <layers>|batch <b>"`` lines the systems up; each entry
carries ``samples_per_s`` in ``extra_info``. pytest-benchmark times the whole call
(for fastnn that includes fit's one-time input checks, which ``fastnn bench`` leaves
out by using fit's own epoch timer), after one warm-up epoch that keeps JIT
compilation out.
Real run: ``pytest benchmarks/test_training.py --benchmark-enable --benchmark-only``.
Under plain ``pytest`` (``--benchmark-disable``) each body runs once on a small slice.
"""

from __future__ import annotations

import functools

import pytest

import fastnn
from fastnn.bench.workloads import Skip, Workload, make_data, make_system, system_names

N_BIG, N_SMALL = 8192, 32768
WORKLOADS = [
    ((784, 256, 128, 10), 32),
    ((784, 256, 128, 10), 128),
    ((784, 256, 128, 10), 512),
    ((64, 32, 10), 32),
]
SYSTEMS = system_names(
    list(fastnn.kernels.BACKEND_NAMES), ["numpy", "torch", "sklearn"]
) + ["fastnn-numba-layers", "fastnn-cython-layers"]  # compiled step vs layer by layer


@functools.cache
def _data(sizes, n):
    return make_data(sizes, n)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize(
    "sizes,batch",
    WORKLOADS,
    ids=[f"{'-'.join(map(str, s))}|b{b}" for s, b in WORKLOADS],
)
def test_training_epoch(benchmark, sizes, batch, system):
    smoke = benchmark.disabled
    n = 2 * batch if smoke else (N_BIG if sizes[0] == 784 else N_SMALL)
    wl = Workload(sizes, batch, n)
    X, y = _data(sizes, n)
    try:
        epoch = make_system(system, wl, X, y, fastnn.get_num_threads())
    except Skip as exc:
        pytest.skip(str(exc))
    benchmark.group = f"train {wl.name}|batch {batch}"
    benchmark.extra_info.update(
        system=system,
        workload=wl.name,
        batch_size=batch,
        n_samples=n,
        dtype="float32",
        threads=fastnn.get_num_threads(),
    )
    if smoke:
        benchmark(epoch)
        return
    epoch()  # warm-up: JIT compile, workspace allocation, first touch
    benchmark.pedantic(epoch, rounds=5, iterations=1)
    benchmark.extra_info["samples_per_s"] = n / benchmark.stats.stats.median
