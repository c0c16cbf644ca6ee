"""Cold start of one backend, measured in a fresh process: run as a script
(``python .../fastnn/bench/coldstart.py --backend numba``, not ``-m``, which would
import fastnn before the clock starts); prints one JSON object.

* ``import_s``: ``import fastnn``; ``load_s``: loading the backend (for Numba this
  includes reading its on-disk cache, or nothing when kernels compile lazily);
* ``first_step_s``: the first training step of a fresh model, as fit's history
  records it (JIT compilation of every kernel the step needs, or cache loading);
* ``steady_step_s``: per-step times of later single-epoch fits (epoch time / steps);
* ``compile_s`` = first step - median steady step;
* ``time_to_first_step_s``: from before ``import fastnn`` to the end of the first step.

The parent chooses the cache state: ``NUMBA_CACHE_DIR`` pointing at an empty folder
gives a cold compile; the default cache (as a user's second run sees it) a warm one.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

if __name__ == "__main__":
    sys.path.pop(0)  # this folder: nothing in it may shadow a top-level module


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="steps per steady epoch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    import numpy as np

    import fastnn

    t1 = time.perf_counter()
    fastnn.get_backend(a.backend)
    t2 = time.perf_counter()
    sizes = tuple(int(s) for s in a.sizes.split(","))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((a.batch * a.steps, sizes[0]), dtype=np.float32)
    y = np.arange(X.shape[0]) % sizes[-1]
    model = fastnn.MLP(
        sizes,
        optimizer=fastnn.SGD(lr=0.01, momentum=0.9),
        loss=fastnn.SoftmaxCrossEntropy(l2=1e-4),
        backend=a.backend,
        n_threads=a.threads,
    )
    h = model.fit(
        X[: a.batch],
        y[: a.batch],
        epochs=1,
        batch_size=a.batch,
        verbose=0,
        classes=np.arange(sizes[-1]),
    )
    first = h.first_step_time
    t3 = time.perf_counter()
    steady = []
    for _ in range(a.rounds):
        h = model.fit(X, y, epochs=1, batch_size=a.batch, verbose=0)
        steady.append(h["time"][-1] / a.steps)
    print(
        json.dumps(
            {
                "backend": a.backend,
                "import_s": t1 - t0,
                "load_s": t2 - t1,
                "first_step_s": first,
                "steady_step_s": steady,
                "time_to_first_step_s": t3 - t0,
                "python_start_to_import_s": t0 - _T0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
