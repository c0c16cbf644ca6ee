"""PyTorch eager equivalent of :mod:`numpy_mlp` (used only when torch is importable).

Idiomatic eager training: ``nn.Sequential`` of ``nn.Linear`` + ``nn.ReLU``,
``F.cross_entropy``, ``torch.optim.SGD(momentum, weight_decay=l2)`` (the gradient of
(l2/2)*||W||^2; PyTorch's ``weight_decay`` also decays the biases, a negligible cost
difference), float32, ``zero_grad(set_to_none=True)``; the loss and correct count are
read every step as fastnn's fit does. Weights are converted from the NumPy layout so
every system starts from the same init.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["TorchMLP", "available"]


def available() -> tuple[bool, str]:
    """(True, version) when torch imports, else (False, the reason)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return False, f"torch not importable ({type(exc).__name__}: {exc})"
    return True, torch.__version__


class TorchMLP:
    """Same constructor and ``fit_epoch`` as :class:`numpy_mlp.NumpyMLP`."""

    def __init__(
        self,
        sizes,
        lr=0.01,
        momentum=0.9,
        l2=1e-4,
        seed=0,
        dtype=np.float32,
        n_threads=None,
    ):
        import torch
        from torch import nn

        self.torch = torch
        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        torch.manual_seed(seed)
        tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b, dtype=tdtype))
            if k < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=momentum, weight_decay=l2
        )

    def fit_epoch(
        self, X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> dict[str, float]:
        torch = self.torch
        F = torch.nn.functional
        Xt, yt = torch.from_numpy(X), torch.from_numpy(np.asarray(y, np.int64))
        t0 = time.perf_counter()
        n = X.shape[0]
        perm = torch.from_numpy(rng.permutation(n))
        loss_sum, correct = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = Xt.index_select(0, idx), yt.index_select(0, idx)
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
        return {
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "time": time.perf_counter() - t0,
        }
