"""Shared by the MLPClassifier and MLPRegressor tests: the solver settings of the
scikit-learn parity tests, and a spy on the engine's raw kernels."""

from __future__ import annotations

from fastnn.kernels import contract

import fastnn

# the solver settings every parity test runs (float64, 1e-10)
SOLVERS = {
    "sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
    "sgd-momentum": dict(
        solver="sgd", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.05
    ),
    "sgd-nesterov": dict(solver="sgd", momentum=0.9, learning_rate_init=0.05),
    "adam": dict(solver="adam", learning_rate_init=0.01),
}


def spy_raw_kernel(monkeypatch, backend: str, name: str):
    """Record each step of the backend's raw ``name`` kernel (``train_step``, whose
    steps may also run several per ``train_steps`` call, or ``loss_grad``): returns
    ``(loss codes, target shapes)`` per step, filled as it runs."""
    raw = fastnn.get_backend(backend).raw
    codes, targets_shapes = [], []

    def spy_on(kernel, config_at, targets_at, steps):
        real = getattr(raw, kernel)
        order = contract.RAW_KERNELS[kernel]

        def spy(*args):
            k = steps(args)
            codes.extend([int(args[order.index(config_at)][contract.LOSS])] * k)
            targets_shapes.extend([args[order.index(targets_at)].shape] * k)
            return real(*args)

        monkeypatch.setattr(raw, kernel, spy)

    spy_on(name, "config", "targets", lambda args: 1)
    if name == "train_step":
        spy_on("train_steps", "config", "batch_targets", lambda args: len(args[-2]))
    return codes, targets_shapes
