"""JAX equivalent of :mod:`numpy_mlp` (used only when jax is importable).

Idiomatic JAX training: the whole step (batch gather from the device-resident data
set, forward, softmax cross-entropy + (l2/2)*||W||^2 through ``jax.value_and_grad``,
SGD with momentum as PyTorch computes it) is one ``jax.jit`` function with the
parameters and velocities donated; the epoch loop is Python, as a JAX user writes it.
The loss and correct count of every step are kept on the device and read once per
epoch (reading them every step would add a host round trip per step that JAX code
does not pay), and the epoch ends when the last step's results are ready.
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["JaxMLP", "available"]


def available() -> tuple[bool, str]:
    """(True, version) when jax imports, else (False, the reason)."""
    try:
        import jax
    except Exception as exc:  # ImportError, or a broken install
        return False, f"jax not importable ({type(exc).__name__}: {exc})"
    return True, jax.__version__


class JaxMLP:
    """Same constructor and ``fit_epoch`` as :class:`numpy_mlp.NumpyMLP`."""

    def __init__(self, sizes, lr=0.01, momentum=0.9, l2=1e-4, seed=0):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        rng = np.random.default_rng(seed)
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = math.sqrt(6.0 / fan_in)  # He-uniform, as the NumPy MLP
            W = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
            params.append((jnp.asarray(W), jnp.zeros(fan_out, jnp.float32)))
        self.params = params
        self.velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
        self._data = None  # (X, y) on the device, placed once per data set

        def loss_fn(params, xb, yb):
            h = xb
            for W, b in params[:-1]:
                h = jax.nn.relu(h @ W + b)
            W, b = params[-1]
            logits = h @ W + b
            logp = jax.nn.log_softmax(logits)
            nll = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
            decay = sum(jnp.sum(W * W) for W, _ in params)
            correct = jnp.sum(jnp.argmax(logits, axis=1) == yb)
            return nll + 0.5 * l2 * decay, correct

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(params, velocity, X, y, idx):
            xb, yb = X[idx], y[idx]
            (loss, correct), grads = grad_fn(params, xb, yb)
            velocity = jax.tree_util.tree_map(
                lambda v, g: momentum * v + g, velocity, grads
            )
            params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
            return params, velocity, loss, correct

        self._step = jax.jit(step, donate_argnums=(0, 1))

    def fit_epoch(
        self, X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> dict[str, float]:
        jnp = self.jnp
        if self._data is None or self._data[0] is not X:
            self._data = (X, jnp.asarray(X), jnp.asarray(np.asarray(y, np.int32)))
        _, Xd, yd = self._data
        t0 = time.perf_counter()
        n = X.shape[0]
        perm = rng.permutation(n).astype(np.int32)
        params, velocity = self.params, self.velocity
        losses, corrects = [], []
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            params, velocity, loss, correct = self._step(params, velocity, Xd, yd, idx)
            losses.append(loss * len(idx))
            corrects.append(correct)
        loss_sum = float(jnp.sum(jnp.stack(losses)))
        correct = int(jnp.sum(jnp.stack(corrects)))
        self.jax.block_until_ready(params)
        self.params, self.velocity = params, velocity
        return {
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "time": time.perf_counter() - t0,
        }
