"""The pure-NumPy MLP baseline: what a careful NumPy user writes.

ReLU hidden layers, softmax cross-entropy with an L2 term (lambda/2)*||W||^2 over the
weight matrices (not biases), SGD with momentum; float32 throughout; weights stored
(in_features, out_features) so forward is ``x @ W + b`` as in fastnn.

The fast spellings: every product goes through ``np.matmul`` with ``out=``; ReLU is
``np.maximum(z, zeros, out=z)`` against a zeros array (faster than the scalar 0: see
docs/performance.md, "Kernel tuning"); the ReLU backward multiplies by a 0/1 mask
instead of boolean indexing; all parameters live in one flat buffer (weights first,
then biases) so weight decay, momentum and the update are five whole-buffer passes
whatever the depth; buffers of a batch size are allocated once. Per step it computes
the same things fastnn's ``fit`` does: the loss (with the L2 term) and the number of
correct rows.
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["NumpyMLP"]


class NumpyMLP:
    """An MLP trained with explicit backprop in NumPy.

    Parameters
    ----------
    sizes : sequence of int
        Input width, hidden widths, number of classes.
    lr, momentum, l2 : float
        SGD learning rate and momentum; L2 coefficient (gradient ``+ l2 * W``).
    seed : int
        He-uniform init of the weights (biases zero).
    dtype : float32 or float64
    """

    def __init__(self, sizes, lr=0.01, momentum=0.9, l2=1e-4, seed=0, dtype=np.float32):
        self.sizes = [int(s) for s in sizes]
        self.lr, self.momentum, self.l2 = float(lr), float(momentum), float(l2)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        shapes = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        n_w = sum(a * b for a, b in shapes)
        n_b = sum(b for _, b in shapes)
        self.n_weights = n_w
        self.params = np.zeros(n_w + n_b, self.dtype)
        self.grads = np.zeros_like(self.params)
        self.velocity = np.zeros_like(self.params)
        self._scratch = np.empty_like(self.params)
        self.W, self.b, self.dW, self.db = [], [], [], []
        wo, bo = 0, n_w
        for fan_in, fan_out in shapes:
            sl = slice(wo, wo + fan_in * fan_out)
            self.W.append(self.params[sl].reshape(fan_in, fan_out))
            self.dW.append(self.grads[sl].reshape(fan_in, fan_out))
            bound = math.sqrt(6.0 / fan_in)
            self.W[-1][...] = rng.uniform(-bound, bound, (fan_in, fan_out))
            self.b.append(self.params[bo : bo + fan_out])
            self.db.append(self.grads[bo : bo + fan_out])
            wo, bo = sl.stop, bo + fan_out
        self._ws: dict[int, dict] = {}

    def _workspace(self, n: int) -> dict:
        ws = self._ws.get(n)
        if ws is None:
            dt, widths = self.dtype, self.sizes[1:]
            ws = {
                "x": np.empty((n, self.sizes[0]), dt),
                "y": np.empty(n, np.intp),
                "a": [np.empty((n, w), dt) for w in widths],  # activations (in place)
                "da": [np.empty((n, w), dt) for w in widths],  # gradients w.r.t. a/z
                "mask": [np.empty((n, w), dt) for w in widths[:-1]],
                "zeros": [np.zeros((n, w), dt) for w in widths[:-1]],
                "rowmax": np.empty((n, 1), dt),
                "rowsum": np.empty((n, 1), dt),
                "rows": np.arange(n),
                "pred": np.empty(n, np.intp),
            }
            self._ws[n] = ws
        return ws

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on a batch; returns (loss before the step, correct rows)."""
        n = x.shape[0]
        ws = self._workspace(n)
        a, da, L = ws["a"], ws["da"], len(self.W)
        # ---- forward
        inp = x
        for i in range(L):
            np.matmul(inp, self.W[i], out=a[i])
            a[i] += self.b[i]
            if i < L - 1:
                np.maximum(a[i], ws["zeros"][i], out=a[i])
            inp = a[i]
        logits, p = a[-1], da[-1]
        # ---- softmax cross-entropy (max-shifted), gradient into da[-1]
        rows, rowmax, rowsum = ws["rows"], ws["rowmax"], ws["rowsum"]
        np.argmax(logits, axis=1, out=ws["pred"])
        correct = int(np.count_nonzero(ws["pred"] == y))
        np.max(logits, axis=1, keepdims=True, out=rowmax)
        np.subtract(logits, rowmax, out=p)
        picked = p[rows, y]  # shifted logit of the label, before exp
        np.exp(p, out=p)
        np.sum(p, axis=1, keepdims=True, out=rowsum)
        loss = float(np.mean(np.log(rowsum[:, 0]) - picked))
        wv = self.params[: self.n_weights]
        loss += 0.5 * self.l2 * float(np.dot(wv, wv))
        np.divide(p, rowsum, out=p)
        p[rows, y] -= 1.0
        p *= 1.0 / n
        # ---- backward
        for i in range(L - 1, -1, -1):
            prev = x if i == 0 else a[i - 1]
            np.matmul(prev.T, da[i], out=self.dW[i])
            np.sum(da[i], axis=0, out=self.db[i])
            if i > 0:
                np.matmul(da[i], self.W[i].T, out=da[i - 1])
                np.greater(a[i - 1], 0, out=ws["mask"][i - 1], casting="unsafe")
                np.multiply(da[i - 1], ws["mask"][i - 1], out=da[i - 1])
        # ---- SGD with momentum, L2 on the weights: five whole-buffer passes
        g, v, s, nw = self.grads, self.velocity, self._scratch, self.n_weights
        if self.l2:
            np.multiply(self.params[:nw], self.l2, out=s[:nw])
            np.add(g[:nw], s[:nw], out=g[:nw])
        np.multiply(v, self.momentum, out=v)
        np.add(v, g, out=v)
        np.multiply(v, self.lr, out=s)
        np.subtract(self.params, s, out=self.params)
        return loss, correct

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of the rows of ``x``: the forward pass (each product's
        output biased and ReLU'd in place) and a max-shifted softmax."""
        a = np.asarray(x, self.dtype)
        last = len(self.W) - 1
        for i, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            a = np.matmul(a, W)
            a += b
            if i < last:
                np.maximum(a, 0, out=a)
        a -= a.max(axis=1, keepdims=True)
        np.exp(a, out=a)
        a /= a.sum(axis=1, keepdims=True)
        return a

    def fit_epoch(
        self, X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> dict[str, float]:
        """One shuffled epoch over (X, y) (X float32 C-contiguous, y intp).

        Returns loss, accuracy and the epoch's seconds (shuffle, gather and steps).
        """
        t0 = time.perf_counter()
        n = X.shape[0]
        perm = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, batch_size):
            j = min(n, i + batch_size)
            ws = self._workspace(j - i)
            idx = perm[i:j]
            np.take(X, idx, axis=0, out=ws["x"])
            np.take(y, idx, out=ws["y"])
            loss, c = self.train_step(ws["x"], ws["y"])
            loss_sum += loss * (j - i)
            correct += c
        return {
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "time": time.perf_counter() - t0,
        }
