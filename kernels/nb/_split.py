"""The serial-or-parallel decision of every op, in one place.

Each function says whether an op of a given size runs its prange variant, from the
tuning table (``_options.TUNE``). The single-op raw kernels call the Python source
(``.py_func``: no dispatch cost, in plain Python), the fused loss_grad / train_step the
compiled function: one definition, so both paths always pick the same variant (and
the variants give the same bits anyway).
"""

from __future__ import annotations

from numba import njit

from ._options import JIT


@njit(**JIT)
def activation(size, act, tune):
    """An element-wise activation (forward or backward) over ``size`` elements."""
    return size * tune.act_cost[act] >= tune.min_work


@njit(**JIT)
def dz(n, m, act, with_db, tune):
    """linear_backward's dz (and db, by column blocks: parallel only when there are
    several blocks)."""
    if n * m * tune.act_cost[act] < tune.min_work:
        return False
    return m > tune.col_block or not with_db


@njit(**JIT)
def scale_add(size, tune):
    """linear_backward's dW += weight_decay * W over ``size`` elements."""
    return size >= tune.min_work


@njit(**JIT)
def sgd(size, tune):
    """An SGD update (or the L2 sum of squares) over ``size`` parameters."""
    return size * tune.sgd_cost >= tune.min_work


@njit(**JIT)
def adam(size, tune):
    """An Adam update over ``size`` parameters."""
    return size * tune.adam_cost >= tune.min_work


@njit(**JIT)
def softmax(n, k, tune):
    """softmax / softmax cross-entropy over n rows of k logits."""
    return n * k * tune.softmax_cost >= tune.min_work and n > 1


@njit(**JIT)
def squared_error(n, k, tune):
    """The squared error over n rows of k outputs."""
    return n * k * tune.squared_error_cost >= tune.min_work and n > 1


@njit(**JIT)
def rows_per_task(k, tune):
    """Rows of k values per row-wise loss task (whole rows, about loss_task values;
    k = 0: loss_task rows, as cy's _loss_rows)."""
    return max(1, tune.loss_task // k) if k > 0 else tune.loss_task
