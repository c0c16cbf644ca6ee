"""Training peak memory of one backend, measured in a fresh process: run as a script
(``python .../fastnn/bench/memory.py --backend numba --samples 60000``); prints one
JSON object.

* **needed** = the dataset (X and y as passed to fit) + weights + gradients +
  optimizer state + one batch of activations (:func:`needed_bytes`, computed from the
  model's shapes: per layer the output, the kept pre-activation, the input gradient;
  the logits gradient; the batch copy of x and y).
* **peak increase** = ``ru_maxrss`` (``resource.getrusage``, KiB on Linux) at the end
  of the fit minus the resident set size (``/proc/self/statm``) measured right before
  the dataset is allocated: after the imports and after a warm-up fit of a separate
  model on a tiny dataset, so the interpreter, the libraries, thread pools and the JIT
  compile (or cache load) are excluded. The warm-up model stays alive so the measured
  model cannot reuse memory it freed.
* **ratio** = peak increase / needed.

``ru_maxrss`` is the high-water mark of the whole process. Right before the baseline
it is reset to the resident size of the moment (Linux >= 4.0: ``"5"`` written to
``/proc/self/clear_refs``), so memory the warm-up touched and freed is not taken for
the fit's: a first fit on a machine measures the kernels' serial threshold with two
16 MB arrays (fastnn/_gemm_wisdom.py), which alone gave the tiny preset's 7.8 MB
job a ratio of 3.6. Where the reset is refused, the high-water mark stays that of
the whole process; on Linux a process started by ``exec`` also inherits in it the
resident size of the process that spawned it (the kernel keeps the old address
space's high-water mark at exec), so a large parent (a benchmark run, pytest) would
inflate it. The script therefore forks once, before any import, and measures in the
child, whose count starts fresh. ``maxrss_at_baseline`` reports the high-water mark
at the baseline (the baseline itself after a reset): when the final peak equals it,
the fit never exceeded it.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    sys.path.pop(0)  # this folder: nothing in it may shadow a top-level module


def _fresh_rusage_count() -> None:
    """Continue in a forked child (fresh ``ru_maxrss``); the parent relays its exit."""
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        return
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)  # killed by a signal: 128 + signum


def rss_bytes() -> int:
    """Current resident set size (``/proc/self/statm``, Linux)."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> None:
    """Reset the high-water mark to the current resident size (Linux >= 4.0; where
    refused, it keeps the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def maxrss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``: KiB on Linux)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024


def needed_bytes(model, X, y, batch_size: int) -> dict[str, int]:
    """What training ``model`` on (X, y) at ``batch_size`` needs to hold, in bytes.

    * ``dataset``: ``X.nbytes + y.nbytes`` (the arrays as passed to fit);
    * ``weights``: every parameter (weights and biases); ``gradients``: the same size;
    * ``optimizer_state``: one parameter-sized buffer per name in the optimizer's
      ``state_names`` (Adam: m and v; SGD with momentum: the velocity);
    * ``activations``: one batch of the training workspace: per stage the output
      (b x out), the pre-activation where the activation's backward needs it
      (b x out), the gradient w.r.t. the input of every Linear but the first
      (b x in); the gradient of the logits (b x classes); the batch copy of x
      (b x features, model dtype) and of y (b class indices, intp).
    """
    import numpy as np

    item = model.dtype.itemsize
    weights = sum(int(p.size) for p in model.parameters()) * item
    b = min(int(batch_size), int(X.shape[0]))
    width = model.n_features_in_
    act = b * width * item + b * np.dtype(np.intp).itemsize  # batch copy of x, y
    for s, st in enumerate(model._stages):
        out = st.linear.out_features if st.linear is not None else width
        act += b * out * item  # stage output
        if st.keep_z:
            act += b * out * item  # kept pre-activation
        if st.linear is not None and s > 0:
            act += b * width * item  # gradient w.r.t. the stage's input
        width = out
    act += b * width * item  # gradient of the logits
    parts = {
        "dataset": int(X.nbytes + y.nbytes),
        "weights": weights,
        "gradients": weights,
        "optimizer_state": len(model.optimizer.state_names) * weights,
        "activations": act,
    }
    parts["needed"] = sum(parts.values())
    return parts


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--samples", type=int, default=60_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    import gc

    import numpy as np

    import fastnn

    sizes = tuple(int(s) for s in a.sizes.split(","))

    def make_data(n: int, seed: int):
        # no temporaries: a teacher's X @ W (_worker.make_data) would make
        # multi-threaded OpenBLAS touch ~1.3 KB of buffer per row, kept resident
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], size=n, dtype=np.intp)
        return X, y

    def make_model():
        return fastnn.MLP(
            sizes,
            activation="relu",
            optimizer=fastnn.Adam(lr=1e-3),
            dtype=np.float32,
            backend=a.backend,
            n_threads=a.threads,
        )

    # warm-up: JIT compile / cache load, thread pools, lazy imports (sklearn's label
    # checks); with a last, partial batch like the real fit's
    n_warm = 2 * a.batch + (a.samples % a.batch)
    X_warm, y_warm = make_data(n_warm, seed=1)
    warm = make_model()  # kept alive (with its data) to the end: see the docstring
    warm.fit(X_warm, y_warm, epochs=1, batch_size=a.batch, verbose=0)
    gc.collect()
    reset_peak()
    baseline = rss_bytes()
    maxrss_at_baseline = maxrss_bytes()

    X, y = make_data(a.samples, seed=0)
    model = make_model()
    h = model.fit(X, y, epochs=a.epochs, batch_size=a.batch, verbose=0)
    peak = maxrss_bytes()
    parts = needed_bytes(model, X, y, a.batch)
    print(
        json.dumps(
            {
                "backend": a.backend,
                "n_samples": int(X.shape[0]),
                "epochs": a.epochs,
                "batch_size": a.batch,
                "fit_s": float(sum(h["time"])),
                "baseline_rss": baseline,
                "maxrss_at_baseline": maxrss_at_baseline,
                "peak_rss": peak,
                "rss_after_fit": rss_bytes(),
                **parts,
            }
        )
    )
    return 0


if __name__ == "__main__":
    _fresh_rusage_count()
    raise SystemExit(main())
