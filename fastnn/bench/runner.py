"""Timing: warm-up, calibrated repeats, interleaved rounds, medians with spread.

Every figure of a report comes from :func:`interleave`: the systems being compared run
one sample each per round (round-robin, the starting system rotated every round so no
system always follows the same neighbour), after warm-up samples that are thrown away.
A sample is timed by the wall clock around the call, or (``self_timed``) reported by
the system itself (e.g. an epoch timer that excludes one-time input checks).
Ratios between two systems are taken round by round (``a[i] / b[i]``), then
summarised, so drift of the shared machine during a run hits both sides of each ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# the calibrated loop lives with the worker, which must run without importing fastnn
from ._worker import Sample, _run, calibrate

__all__ = ["calibrate", "interleave", "pair_ratios", "stat"]


def stat(values: Sequence[float], unit: str) -> dict[str, Any]:
    """Median, quartiles (IQR = q3 - q1), min, max and count of ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size == 0:
        nan = float("nan")
        return {
            "median": nan,
            "q1": nan,
            "q3": nan,
            "iqr": nan,
            "min": nan,
            "max": nan,
            "n": 0,
            "unit": unit,
        }
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
        "unit": unit,
    }


def scaled(s: dict[str, Any], factor: float, unit: str) -> dict[str, Any]:
    """A stat of ``factor / x`` (e.g. samples per second from seconds per epoch).

    Order statistics survive a monotone map, so this is exact for median, quartiles
    and extremes (q1 and q3, min and max swap places).
    """

    def inv(x: float) -> float:
        return factor / x if x else float("nan")

    out = {
        "median": inv(s["median"]),
        "q1": inv(s["q3"]),
        "q3": inv(s["q1"]),
        "min": inv(s["max"]),
        "max": inv(s["min"]),
        "n": s["n"],
        "unit": unit,
    }
    out["iqr"] = out["q3"] - out["q1"]
    return out


def interleave(
    systems: Mapping[str, Sample],
    rounds: int,
    warmup: int = 1,
    min_time: float = 0.0,
    tick: Callable[[], None] | None = None,
    self_timed: bool = False,
) -> dict[str, list[float]]:
    """Per-call seconds of every system, ``rounds`` samples each, interleaved.

    ``warmup`` untimed samples per system come first (also interleaved). With
    ``min_time > 0`` each sample repeats the call ``loops`` times (calibrated per
    system) and reports the mean per call. ``self_timed``: each call returns its own
    duration in seconds (used instead of the wall clock around it). ``tick`` is called
    after every round. (Systems in processes of their own: isolated.alternate.)
    """
    names = list(systems)
    for _ in range(warmup):
        for name in names:
            systems[name]()
    loops = {n: (calibrate(systems[n], min_time) if min_time > 0 else 1) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(_run(systems[name], loops[name], self_timed))
        if tick is not None:
            tick()
    return times


def pair_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """``num[i] / den[i]`` for every round (a speed-up when both are times and
    ``num`` is the baseline)."""
    return [a / b for a, b in zip(num, den, strict=True) if b > 0]
