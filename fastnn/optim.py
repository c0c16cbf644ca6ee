"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules.

A model keeps every parameter in one flat buffer laid out as
``[all weight matrices | all biases]`` and every gradient in a twin buffer. An
optimizer binds to that pair, allocates its state (velocity, Adam moments) as flat
buffers of the same layout once, and updates everything with two fused kernel calls
per step: one over the weights (with weight decay) and one over the biases (never
decayed). Formulas are PyTorch's (see ``fastnn.kernels.contract``).

Schedules change the learning rate at the end of each epoch; they are separate small
classes passed to an optimizer as ``schedule=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import kernels
from ._buffers import aligned_copy, aligned_zeros
from ._validation import check_int

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineAnnealingLR",
    "LRSchedule",
    "Optimizer",
    "ReduceLROnPlateau",
    "StepLR",
    "optimizer_from_config",
]


# ------------------------------------------------------------------ validation
def _real(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check a hyper-parameter; ValueError (never TypeError) as PyTorch raises."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if v < low or (low_open and v == low) or v > high or (high_open and v == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {v}")
    return v


# -------------------------------------------------------------------- schedules
class LRSchedule:
    """Base class: maps the end of an epoch to the learning rate of the next one."""

    def next_lr(
        self, epochs_done: int, logs: Mapping[str, float], lr: float, base_lr: float
    ) -> float:
        """Learning rate for epoch ``epochs_done`` (0-based) after ``logs``."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-compatible)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Mutable state for checkpoints (JSON-compatible)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ConstantLR(LRSchedule):
    """Keep the learning rate fixed."""

    def next_lr(self, epochs_done, logs, lr, base_lr):
        return lr


class StepLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    step_size : int >= 1
    gamma : float in (0, 1], default=0.1
    """

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_int("step_size", step_size, 1)
        self.gamma = _real("gamma", gamma, 0.0, 1.0, low_open=True)

    def next_lr(self, epochs_done, logs, lr, base_lr):
        return base_lr * self.gamma ** (epochs_done // self.step_size)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(LRSchedule):
    """Cosine decay from the base rate to ``eta_min`` over ``t_max`` epochs.

    ``lr_e = eta_min + (base - eta_min) (1 + cos(pi min(e, t_max) / t_max)) / 2``.

    Parameters
    ----------
    t_max : int >= 1
        Epochs to reach ``eta_min`` (it stays there afterwards).
    eta_min : float >= 0, default=0.0
    """

    def __init__(self, t_max: int, eta_min: float = 0.0) -> None:
        self.t_max = check_int("t_max", t_max, 1)
        self.eta_min = _real("eta_min", eta_min, 0.0)

    def next_lr(self, epochs_done, logs, lr, base_lr):
        e = min(epochs_done, self.t_max)
        cos = (1.0 + math.cos(math.pi * e / self.t_max)) / 2.0
        return self.eta_min + (base_lr - self.eta_min) * cos

    def get_config(self):
        return {"t_max": self.t_max, "eta_min": self.eta_min}


class ReduceLROnPlateau(LRSchedule):
    """Multiply the rate by ``factor`` when ``monitor`` stops improving.

    Parameters
    ----------
    monitor : str, default="loss"
        A History key ("loss", "val_loss", "accuracy", "val_accuracy").
    factor : float in (0, 1), default=0.1
    patience : int >= 0, default=10
        Epochs without improvement before the rate drops.
    min_delta : float >= 0, default=1e-4
        Smallest change that counts as an improvement.
    min_lr : float >= 0, default=0.0
    mode : {"auto", "min", "max"}, default="auto"
        "auto" maximises names containing "accuracy" and minimises the others.
    """

    def __init__(
        self,
        monitor: str = "loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be a str, got {monitor!r}")
        self.monitor = monitor
        self.factor = _real("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int("patience", patience, 0)
        self.min_delta = _real("min_delta", min_delta, 0.0)
        self.min_lr = _real("min_lr", min_lr, 0.0)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.best: float | None = None
        self.wait = 0

    def _maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)

    def next_lr(self, epochs_done, logs, lr, base_lr):
        if self.monitor not in logs:
            raise ValueError(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which is not among "
                f"the epoch metrics {sorted(logs)}"
            )
        value = float(logs[self.monitor])
        sign = -1.0 if self._maximize() else 1.0
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.wait = value, 0
            return lr
        self.wait += 1
        if self.wait > self.patience:
            self.wait = 0
            return max(lr * self.factor, self.min_lr)
        return lr

    def get_config(self):
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "min_lr": self.min_lr,
            "mode": self.mode,
        }

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best = None if state.get("best") is None else float(state["best"])
        self.wait = int(state.get("wait", 0))


_SCHEDULES: dict[str, type[LRSchedule]] = {
    c.__name__: c for c in (ConstantLR, StepLR, CosineAnnealingLR, ReduceLROnPlateau)
}


# -------------------------------------------------------------------- optimizers
class Optimizer:
    """Base class: flat-buffer state, schedule hook, config and checkpoint state.

    Parameters
    ----------
    lr : float >= 0
        Base learning rate.
    weight_decay : float >= 0
        Applied to weight matrices only, never to biases.
    schedule : LRSchedule, optional
        Changes the rate at each epoch end (default: constant).
    """

    #: Names of the flat state buffers (e.g. "velocity"), set by subclasses.
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float, schedule: LRSchedule | None):
        self.lr = _real("lr", lr, 0.0)
        self.weight_decay = _real("weight_decay", weight_decay, 0.0)
        if schedule is not None and not isinstance(schedule, LRSchedule):
            raise ValueError(f"schedule must be an LRSchedule, got {schedule!r}")
        self.schedule = schedule if schedule is not None else ConstantLR()
        self.current_lr = self.lr
        self.steps = 0  # optimizer steps taken (Adam's bias-correction counter)
        self.state: dict[str, np.ndarray] = {}
        self._backend = None
        self._params: np.ndarray | None = None
        self._grads: np.ndarray | None = None
        self._n_decay = 0

    def __getstate__(self) -> dict[str, Any]:
        # the backend holds modules, which do not pickle: keep its name
        state = self.__dict__.copy()
        if self._backend is not None:
            state["_backend"] = self._backend.name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self._backend, str):
            self._backend = kernels.get_backend(self._backend)
        # pickle drops the 64-byte alignment of the state buffers
        self.state = {name: aligned_copy(buf) for name, buf in self.state.items()}

    def bind(
        self, backend, params: np.ndarray, grads: np.ndarray, n_decay: int
    ) -> None:
        """Attach to a model's flat buffers ``params`` / ``grads``.

        ``params[:n_decay]`` holds the weight matrices (decayed), the rest the biases.
        State buffers are allocated (zeroed) only when the layout changes, so
        re-binding after a backend switch keeps the optimizer's progress.
        """
        if (
            self._params is None
            or self._params.shape != params.shape
            or self._params.dtype != params.dtype
            or self._n_decay != n_decay
        ):
            self.state = {
                n: aligned_zeros(params.shape, params.dtype) for n in self.state_names
            }
            self.steps = 0
        self._backend, self._params, self._grads = backend, params, grads
        self._n_decay = n_decay

    def step(self, eps: float | None = None) -> None:
        """Apply one update to every bound parameter from the bound gradients.

        ``eps``: Adam's epsilon for this step only (ignored by SGD).
        """
        raise NotImplementedError

    def end_epoch(self, epochs_done: int, logs: Mapping[str, float]) -> float:
        """Let the schedule set the rate for the next epoch; return it."""
        self.current_lr = float(
            self.schedule.next_lr(epochs_done, logs, self.current_lr, self.lr)
        )
        return self.current_lr

    def reset(self) -> None:
        """Forget all progress: zero state, step counter and schedule."""
        for buf in self.state.values():
            buf.fill(0)
        self.steps = 0
        self.current_lr = self.lr
        self.schedule.load_state_dict({})

    def _segments(self):
        """(slice, weight_decay) for the weight and bias parts of the flat buffers."""
        n = self._n_decay
        total = self._params.shape[0]
        out = []
        if n:
            out.append((slice(0, n), self.weight_decay))
        if n < total:
            out.append((slice(n, total), 0.0))
        return out

    def _hyper(self) -> dict[str, Any]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def get_config(self) -> dict[str, Any]:
        """Type, hyper-parameters and schedule (JSON-compatible)."""
        return {
            "type": type(self).__name__,
            **self._hyper(),
            "schedule": {
                "type": type(self.schedule).__name__,
                **self.schedule.get_config(),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Scalar training state for checkpoints (the buffers are saved separately)."""
        return {
            "steps": self.steps,
            "current_lr": self.current_lr,
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.steps = int(state["steps"])
        self.current_lr = float(state["current_lr"])
        self.schedule.load_state_dict(state.get("schedule", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper().items())
        return f"{type(self).__name__}({args}, schedule={self.schedule!r})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's formulation).

    ``g = grad + weight_decay * p; v = momentum * v + g;
    p -= lr * (g + momentum * v if nesterov else v)``.

    Parameters
    ----------
    lr : float >= 0, default=0.01
    momentum : float >= 0, default=0.0
    nesterov : bool, default=False
        Needs ``momentum > 0``.
    weight_decay : float >= 0, default=0.0
        L2 on weight matrices only (biases are never decayed).
    schedule : LRSchedule, optional
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, schedule)
        self.momentum = _real("momentum", momentum, 0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be a bool, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov momentum requires momentum > 0")
        self.state_names = ("velocity",) if self.momentum > 0 else ()

    def step(self, eps: float | None = None) -> None:
        self.steps += 1
        velocity = self.state.get("velocity")
        for seg, wd in self._segments():
            self._backend.sgd_update(
                self._params[seg],
                self._grads[seg],
                None if velocity is None else velocity[seg],
                lr=self.current_lr,
                momentum=self.momentum,
                nesterov=self.nesterov,
                weight_decay=wd,
            )

    def _hyper(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (PyTorch's formulation; ``weight_decay`` adds ``wd * p`` to the gradient).

    Parameters
    ----------
    lr : float >= 0, default=1e-3
    beta1, beta2 : float in [0, 1), defaults 0.9 and 0.999
    eps : float >= 0, default=1e-8
    weight_decay : float >= 0, default=0.0
        Weight matrices only (biases are never decayed).
    schedule : LRSchedule, optional
    """

    decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, schedule)
        self.beta1 = _real("beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = _real("beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = _real("eps", eps, 0.0)
        self.state_names = ("m", "v")

    def step(self, eps: float | None = None) -> None:
        self.steps += 1
        m, v = self.state["m"], self.state["v"]
        for seg, wd in self._segments():
            self._backend.adam_update(
                self._params[seg],
                self._grads[seg],
                m[seg],
                v[seg],
                step=self.steps,
                lr=self.current_lr,
                beta1=self.beta1,
                beta2=self.beta2,
                eps=self.eps if eps is None else eps,
                weight_decay=wd,
                decoupled=self.decoupled,
            )

    def _hyper(self):
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` first.

    Same parameters as :class:`Adam`; ``weight_decay`` defaults to 0.01 (PyTorch).
    """

    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, schedule)


_OPTIMIZERS: dict[str, type[Optimizer]] = {c.__name__: c for c in (SGD, Adam, AdamW)}


def optimizer_from_config(config: Mapping[str, Any]) -> Optimizer:
    """Rebuild an optimizer (and its schedule) from :meth:`Optimizer.get_config`."""
    config = dict(config)
    try:
        cls = _OPTIMIZERS[config.pop("type")]
        sched = dict(config.pop("schedule", None) or {"type": "ConstantLR"})
        schedule = _SCHEDULES[sched.pop("type")](**sched)
        return cls(**config, schedule=schedule)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid optimizer description: {exc}") from None


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name ("sgd", "adam", "adamw"), for the command line."""
    table = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
    try:
        return table[name.lower()](**kwargs)
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; expected one of {sorted(table)}"
        ) from None
