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
    """Record each call of the backend's raw ``name`` kernel (``train_step`` or
    ``loss_grad``): returns ``(loss codes, target shapes)``, filled as it runs."""
    raw = fastnn.get_backend(backend).raw
    real = getattr(raw, name)
    codes, targets_shapes = [], []

    def spy(*args):  # RAW_KERNELS order: x, labels, targets, ..., config (10th)
        codes.append(int(args[9][contract.LOSS]))
        targets_shapes.append(args[2].shape)
        return real(*args)

    monkeypatch.setattr(raw, name, spy)
    return codes, targets_shapes
