"""Every system in its own fresh process, alternated round by round.

A baseline is worth what its process is worth: timed inside a process that imported
fastnn, NumPy or PyTorch would run next to fastnn's pools and settings, which is not
how their users run them. So each system (fastnn's backends included) gets a process
of its own (fastnn/bench/_worker.py), started with this process's environment as it
is (only a thread count below the core count is added, the way users of that library
set it), warmed up, and then asked for one sample per round. The rounds rotate which
system goes first, and after each sample the harness waits ``settle_s`` so that no
process's idle threads (OpenBLAS spins ~0.1 s after its last GEMM) still hold a core
when the next one starts. Ratios are then paired round by round (runner.pair_ratios).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import threads as _threads
from ..distributed import mpiexec_command, mpiexec_env
from . import _suite
from ._worker import environ_digest

WORKER = Path(__file__).with_name("_worker.py")

#: Variables a user sets to run a library on fewer threads than cores.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class WorkerError(RuntimeError):
    pass


def _added(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in after.items() if before.get(k) != v}


def thread_environment(system: str, threads: int) -> dict[str, str]:
    """The variables added to a baseline's environment for ``threads`` threads:
    none at the core count (every library's default); below it, what its users set.
    fastnn's own processes take ``n_threads=`` instead."""
    if system.startswith("fastnn-") or threads >= _threads.cpu_count():
        return {}
    env = {name: str(threads) for name in _THREAD_VARS}
    if system == "jax-jit":
        env["XLA_FLAGS"] = (
            f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        )
    return env


class Worker:
    """One system's process: started and warmed up on construction."""

    def __init__(self, spec: dict[str, Any], timeout: float = 900.0) -> None:
        self.added = thread_environment(spec["system"], spec["threads"])
        self.environ = {**os.environ, **self.added}
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")
        full = {**spec, "suite": str(_suite.folder()), "cores": _threads.cpu_count()}
        command = [sys.executable, str(WORKER), json.dumps(full)]
        if spec.get("ranks"):  # an MPI job: the launcher starts one worker per rank
            command = mpiexec_command(spec["ranks"]) + command
            launch_env = mpiexec_env(self.environ)
            self.added = {**self.added, **_added(self.environ, launch_env)}
            self.environ = launch_env
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.environ,
            text=True,
            start_new_session=hasattr(os, "killpg"),
        )
        try:
            self.info = self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            why = "no answer" if not ready else f"exit status {self.proc.poll()}"
            self._stderr.seek(0)
            tail = self._stderr.read().strip().splitlines()[-1:] or ["no output"]
            raise WorkerError(f"{why}: {tail[0]}")
        return json.loads(line)

    def sample(self, case: str | None = None) -> float:
        self.proc.stdin.write("run\n" if case is None else f"run {case}\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def process(self) -> dict[str, Any]:
        """The facts of this process a report row records."""
        return {
            "pid": self.info["pid"],
            "same_environment": self.info["environ_sha256"]
            == environ_digest(self.environ),
            "environment_added": self.added,
            "imported_fastnn": self.info["fastnn_imported"],
            "setup_s": self.info["setup_s"],
        }

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, AttributeError):
                self.proc.kill()
            self.proc.wait()
        self._stderr.close()


@contextlib.contextmanager
def started(
    specs: Mapping[str, dict[str, Any]],
) -> Iterator[tuple[dict[str, Worker], dict[str, str]]]:
    """One process per spec, started and warmed up one after the other: yields
    ``(workers, skipped)`` (the systems that could not run, with the reason) and
    ends every process afterwards."""
    workers: dict[str, Worker] = {}
    skipped: dict[str, str] = {}
    try:
        for name, spec in specs.items():
            try:
                w = Worker({**spec, "system": spec.get("system", name)})
            except (OSError, ValueError, RuntimeError) as exc:  # WorkerError too
                skipped[name] = f"{type(exc).__name__}: {exc}"
                continue
            if "skip" in w.info:
                skipped[name] = w.info["skip"]
                w.close()
                continue
            workers[name] = w
        yield workers, skipped
    finally:
        for w in workers.values():
            w.close()


def alternate(
    workers: Mapping[str, Worker],
    rounds: int,
    settle_s: float = 0.0,
    tick: Callable[[], None] | None = None,
    case: str | None = None,
) -> dict[str, list[float]]:
    """``rounds`` rounds of one sample per process (of ``case``, for op processes),
    the first one rotated every round, ``settle_s`` of pause after each sample."""
    names = list(workers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            times[name].append(workers[name].sample(case))
            if settle_s:
                time.sleep(settle_s)
        if tick is not None:
            tick()
    return times


def run(
    specs: Mapping[str, dict[str, Any]],
    rounds: int,
    settle_s: float = 0.0,
    tick: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]], dict[str, str]]:
    """Start one process per spec, then ``rounds`` rounds of one sample each.

    Returns ``(times, processes, skipped)``: seconds per sample by system; per system
    the process facts (:meth:`Worker.process`); and the systems that could not run,
    with the reason.
    """
    with started(specs) as (workers, skipped):
        times = alternate(workers, rounds, settle_s, tick)
        return times, {n: w.process() for n, w in workers.items()}, skipped
