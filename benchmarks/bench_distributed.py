"""Data-parallel training over MPI: samples/s and time in the gradient Allreduce.

``python benchmarks/bench_distributed.py`` launches ``mpiexec`` with 1 and 2 ranks x
1 thread, each training a 784-256-128-10 MLP (float32, SGD momentum 0.9) with
``fastnn.distributed.fit`` on a global batch of 256 rows per step, and prints a
Markdown table: throughput, time per step, the part of it spent in the Allreduce
(inside the loop, including waiting for the slower rank), the same Allreduce timed
alone (after a barrier), and the bytes each rank sends per step. For comparison it
also times single-process ``fit`` (its compiled whole-step kernel) with 1 and 2
threads. Needs mpi4py and an MPI runtime (``pip install -e ".[mpi]"``).

Options: ``--ranks 1,2``, ``--steps 60`` (steps per epoch), ``--epochs 4`` (the first
is warm-up and left out), ``--repeats 3`` (rounds, run interleaved; the table shows
medians and the samples/s range), ``--transport shm|tcp`` (shared memory, or TCP over
the loopback interface), ``--json``.
"""

from __future__ import annotations  # noqa: I001  (fastnn before NumPy, below)

import argparse
import json
import os
import subprocess
import sys
import time

import fastnn  # first: its thread-pool settings apply before NumPy loads
import numpy as np

SIZES = (784, 256, 128, 10)
BATCH = 256


def _data(steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = steps * BATCH
    y = rng.integers(0, SIZES[-1], size=n)
    centers = rng.normal(size=(SIZES[-1], SIZES[0])).astype(np.float32)
    X = centers[y] + rng.normal(size=(n, SIZES[0])).astype(np.float32)
    return X, y


def _model(threads: int) -> fastnn.MLP:
    return fastnn.MLP(
        SIZES,
        optimizer=fastnn.SGD(lr=0.01, momentum=0.9),
        dtype=np.float32,
        n_threads=threads,
    )


def _steady(history, key: str) -> float:
    """Median of an epoch metric, the first (warm-up) epoch left out."""
    values = history[key][1:] or history[key]
    return float(np.median(values))


def worker(args: argparse.Namespace) -> None:
    """One rank: train, time the Allreduce alone, report from rank 0."""
    from mpi4py import MPI

    from fastnn import distributed

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = _data(args.steps)
    model = _model(1)
    hist = distributed.fit(
        model, X, y, epochs=args.epochs, batch_size=BATCH, seed=0, verbose=0
    )
    per_epoch = _steady(hist, "time")
    allreduce = _steady(hist, "allreduce_time")
    # The same Allreduce alone, all ranks released together.
    buf = model._grads.copy()
    for _ in range(5):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    laps = []
    for _ in range(50):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        laps.append(time.perf_counter() - t)
    alone = comm.allreduce(float(np.median(laps)), op=MPI.MAX)
    row = {
        "setup": f"{size} rank{'s' if size > 1 else ''} x 1 thread (distributed.fit)",
        "ranks": size,
        "threads": 1,
        "samples_per_s": _steady(hist, "samples_per_sec"),
        "step_ms": 1e3 * per_epoch / args.steps,
        "allreduce_ms": 1e3 * allreduce / args.steps,
        "allreduce_alone_ms": 1e3 * alone,
        "bytes_per_step": int(model._grads.nbytes),
        "n_params": int(sum(p.size for p in model.parameters())),
    }
    rows = comm.gather(row, root=0)
    if rank == 0:
        # the slowest rank sets the pace: report its step time
        row["step_ms"] = max(r["step_ms"] for r in rows)
        row["allreduce_ms"] = float(np.median([r["allreduce_ms"] for r in rows]))
        print("RESULT " + json.dumps(row), flush=True)


def single(args: argparse.Namespace, threads: int) -> dict:
    """Single-process fit (compiled whole-step kernel) for comparison."""
    X, y = _data(args.steps)
    model = _model(threads)
    hist = model.fit(X, y, epochs=args.epochs, batch_size=BATCH, seed=0, verbose=0)
    per_epoch = _steady(hist, "time")
    return {
        "setup": f"1 process x {threads} thread{'s' if threads > 1 else ''} (fit)",
        "ranks": 1,
        "threads": threads,
        "samples_per_s": _steady(hist, "samples_per_sec"),
        "step_ms": 1e3 * per_epoch / args.steps,
        "allreduce_ms": None,
        "allreduce_alone_ms": None,
        "bytes_per_step": 0,
        "n_params": int(sum(p.size for p in model.parameters())),
    }


def launch(args: argparse.Namespace, ranks: int) -> dict:
    from fastnn.distributed import mpiexec_command

    cmd = mpiexec_command(ranks, transport=args.transport) + [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--steps",
        str(args.steps),
        "--epochs",
        str(args.epochs),
    ]
    env = dict(
        os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}"
    )


def combine(rounds: list[list[dict]]) -> list[dict]:
    """Median of every figure over the rounds; speed-up against 1 rank taken round
    by round (the shared machine drifts: compare within a round)."""
    rows = []
    for k, first in enumerate(rounds[0]):
        runs = [r[k] for r in rounds]
        row = dict(first)
        for key in ("samples_per_s", "step_ms", "allreduce_ms", "allreduce_alone_ms"):
            if first[key] is not None:
                row[key] = float(np.median([r[key] for r in runs]))
        row["samples_per_s_range"] = [
            min(r["samples_per_s"] for r in runs),
            max(r["samples_per_s"] for r in runs),
        ]
        base = [
            next(x for x in rnd if x["ranks"] == 1 and x["allreduce_ms"] is not None)
            for rnd in rounds
        ]
        row["vs_1_rank"] = float(
            np.median(
                [
                    r["samples_per_s"] / b["samples_per_s"]
                    for r, b in zip(runs, base, strict=True)
                ]
            )
        )
        rows.append(row)
    return rows


def table(rows: list[dict], transport: str, repeats: int) -> str:
    lines = [
        f"MLP {'-'.join(map(str, SIZES))}, float32, SGD momentum, global batch "
        f"{BATCH}; {rows[0]['n_params']:,} parameters, gradient buffer "
        f"{max(r['bytes_per_step'] for r in rows) / 2**20:.2f} MiB per rank per "
        f"step; transport {transport}; medians of {repeats} interleaved rounds",
        "",
        "| setup | samples/s (range) | ms/step | allreduce ms/step (in loop) "
        "| allreduce alone ms | vs 1 rank |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ar = "-" if r["allreduce_ms"] is None else f"{r['allreduce_ms']:.2f}"
        alone = (
            "-" if r["allreduce_alone_ms"] is None else f"{r['allreduce_alone_ms']:.2f}"
        )
        lo, hi = r["samples_per_s_range"]
        lines.append(
            f"| {r['setup']} | {r['samples_per_s']:,.0f} ({lo:,.0f}-{hi:,.0f}) "
            f"| {r['step_ms']:.2f} | {ar} | {alone} | {r['vs_1_rank']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ranks", default="1,2", help="rank counts (default 1,2)")
    p.add_argument("--steps", type=int, default=60, help="steps per epoch (60)")
    p.add_argument("--epochs", type=int, default=4, help="epochs, first = warm-up")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--transport", default="shm", choices=["shm", "tcp"])
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    if 1 not in ranks:
        ranks.insert(0, 1)  # the reference of the speed-ups
    rounds = []
    for _ in range(args.repeats):
        rnd = [launch(args, r) for r in ranks]
        rnd += [single(args, 1), single(args, 2)]
        rounds.append(rnd)
    rows = combine(rounds)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows, args.transport, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
