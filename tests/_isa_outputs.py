"""Outputs of every compiled element-wise path of the Cython backend, for comparing
the instruction-set builds bit for bit (tests/test_isa.py runs this module in a
process per FASTNN_ISA value: the element-wise build is chosen at import).

``python tests/_isa_outputs.py OUT.npz`` writes them; ``outputs()`` returns them.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
from fastnn.kernels import cy, gemm

import fastnn

# odd sizes: not a multiple of any vector width, and past one parallel chunk
N_FLAT = 3 * 16384 + 13
N_ROWS, N_CLASSES = 67, 11
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu")


def _kernel_outputs(dtype: type, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    # wide range: the exp/tanh/erf approximations' clamps and switch points
    z = (rng.standard_normal(N_FLAT) * 6).astype(dtype)
    z[:4] = (np.nan, np.inf, -np.inf, 0.0)
    dy = rng.standard_normal(N_FLAT).astype(dtype)
    for code in range(6):
        y, dz = np.empty_like(z), np.empty_like(z)
        cy.activation_forward(z, y, code, 0.01)
        cy.activation_backward(dy, z, y, dz, code, 0.01)
        out[f"act{code}_forward"], out[f"act{code}_backward"] = y, dz
    logits = (rng.standard_normal((N_ROWS, N_CLASSES)) * 4).astype(dtype)
    labels = rng.integers(0, N_CLASSES, N_ROWS).astype(np.intp)
    weights = rng.random(N_ROWS).astype(dtype)
    grad, rows = np.empty_like(logits), np.empty(N_ROWS, dtype)
    loss = cy.softmax_cross_entropy(logits, labels, weights, grad, rows, 0.1)
    out["sce_loss"], out["sce_grad"], out["sce_rows"] = np.array(loss), grad, rows
    probs = np.empty_like(logits)
    cy.softmax(logits, probs)
    out["softmax"] = probs
    target = rng.standard_normal((N_ROWS, N_CLASSES)).astype(dtype)
    grad, rows = np.empty_like(logits), np.empty(N_ROWS, dtype)
    loss = cy.squared_error(logits, target, weights, grad, rows)
    out["se_loss"], out["se_grad"], out["se_rows"] = np.array(loss), grad, rows
    p, g = rng.standard_normal(N_FLAT).astype(dtype), dy
    vel = rng.standard_normal(N_FLAT).astype(dtype)
    sq = cy.sgd_update(p, g, vel, 0.1, 0.9, True, 1e-3, True)
    out["sgd_param"], out["sgd_velocity"], out["sgd_sq"] = p, vel, np.array(sq)
    p = rng.standard_normal(N_FLAT).astype(dtype)
    m, v = rng.standard_normal(N_FLAT).astype(dtype), rng.random(N_FLAT).astype(dtype)
    sq = cy.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 3, 1e-2, True, True)
    out["adam_param"], out["adam_m"], out["adam_v"] = p, m, v
    out["adam_sq"] = np.array(sq)
    return out


def _training_outputs(dtype: type, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The fused train_step (every activation, SGD and Adam, with an L2 term, which
    the update adds), the compiled forward pass, and the estimators' losses
    (squared error, sigmoid cross-entropy) through loss_grad/train_step."""
    out: dict[str, np.ndarray] = {}
    X = rng.standard_normal((96, 13)).astype(dtype)
    y = rng.integers(0, 5, 96)
    for act in ACTIVATIONS:
        for opt in (fastnn.SGD(lr=0.05, momentum=0.9, nesterov=True), fastnn.Adam()):
            model = fastnn.MLP(
                sizes=(13, 19, 7, 5), activation=act, optimizer=opt, dtype=dtype,
                backend="cython", loss=fastnn.SoftmaxCrossEntropy(l2=1e-3),
            )  # fmt: skip
            model.fit(X, y, epochs=2, batch_size=17, verbose=0, seed=1)
            for i, param in enumerate(model.parameters()):
                out[f"mlp_{act}_{type(opt).__name__}_{i}"] = param
        # the compiled forward pass (one row: the GEMM's row kernel)
        out[f"forward_{act}"] = model.predict_proba(X)
        out[f"forward_{act}_row"] = model.predict_proba(X[:1])
        loss, grads = model.loss_and_gradients(X, y)
        out[f"loss_grad_{act}"] = np.concatenate([np.ravel(g) for g in grads])
        out[f"loss_grad_{act}_loss"] = np.array(loss)
    for est, target in (
        (fastnn.MLPRegressor, X[:, :2].astype(np.float64)),  # squared error
        (fastnn.MLPClassifier, y % 2),  # binary: sigmoid cross-entropy
    ):
        model = est(
            hidden_layer_sizes=(9,), activation="tanh", max_iter=3, batch_size=16,
            random_state=0, backend="cython",
        )  # fmt: skip
        model.fit(X, target)
        for i, coef in enumerate(model.coefs_ + model.intercepts_):
            out[f"{est.__name__}_{i}"] = coef
    return out


@contextlib.contextmanager
def _products_by_openblas():
    """Every matrix product through OpenBLAS meanwhile: the GEMM's own ISA paths
    round differently (FMA in their micro-kernels); the element-wise ones must not."""
    plan = cy.GEMM_PLAN
    for module in cy._GEMM_MODULES:
        module._configure_own_gemm(gemm.MODE_BLAS, 0, 0, plan.sgemm, plan.dgemm, 0)
    try:
        yield
    finally:
        for module in cy._GEMM_MODULES:
            module._configure_own_gemm(
                gemm.MODE_PLAN,
                plan.max_k,
                plan.min_n,
                plan.sgemm,
                plan.dgemm,
                plan.lookup,
            )


def outputs() -> dict[str, np.ndarray]:
    """Every output, keyed ``<dtype>_<name>``, from fixed seeds."""
    result: dict[str, np.ndarray] = {}
    with _products_by_openblas():
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(7)
            parts = {**_kernel_outputs(dtype, rng), **_training_outputs(dtype, rng)}
            name = np.dtype(dtype).name
            result.update({f"{name}_{k}": np.asarray(v) for k, v in parts.items()})
    return result


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # ConvergenceWarning of the 3-iteration fits
    np.savez(sys.argv[1], **outputs())
