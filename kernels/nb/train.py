"""Loss and gradients, and the whole training step, of a Linear(+activation) stack as
one compiled call each.

``loss_grad`` runs forward, the fused loss (softmax cross-entropy on labels, squared
error or sigmoid cross-entropy on float targets) and backward (to every parameter and,
on request, to the input) in one @njit function (``_loss_grad``); ``train_step`` runs
the same and then the optimizer update (``_train_step``). They call the very cores the
separate raw kernels use (``gemm`` via ``_linear_forward`` / ``_linear_backward``, the
loss row loops, the SGD / Adam slices), with the same serial-or-parallel decisions, so
the weights come out bitwise equal to the layer-by-layer path and do not depend on the
thread count. One specialisation per dtype serves every depth: the network is described
by the int64 layout table and the flat buffers
(``fastnn.kernels.contract.train_workspace_layout`` says how ``work`` is carved).

The tuning table and the GEMM configuration are read from ``_options`` / ``matmul`` at
call time and passed in as arguments (no dynamic globals: ``cache=True`` keeps
working); the serial-or-parallel decisions are ``_split``'s, as in the single-op
kernels.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
from numba import njit

from ..contract import (
    BETA1,
    BETA2,
    DECOUPLED,
    EPS,
    L2,
    LABEL_SMOOTHING,
    LOSS,
    LR,
    MOMENTUM,
    NESTEROV,
    OPTIMIZER,
    STEP,
    TRAIN_LOSSES,
    TRAIN_WORK_ALIGN,
    WEIGHT_DECAY,
    WEIGHTS_END,
)
from . import _options as opt
from . import _split
from ._options import FALSE, JIT, TRUE, ZERO
from .linear import _linear_backward, _linear_forward
from .loss import _sce_parallel, _sce_serial, _se_parallel, _se_serial
from .matmul import blas_single_begin, blas_single_end
from .optim import (
    _adam_parallel,
    _adam_slice,
    _sgd_parallel,
    _sgd_slice,
    _sq_sum_chunks,
    _sq_sum_parallel,
)

_ALIGN = TRAIN_WORK_ALIGN
SQUARED_ERROR = TRAIN_LOSSES["squared_error"]
SIGMOID_CE = TRAIN_LOSSES["sigmoid_cross_entropy"]

# the module, read at call time (the package's "matmul" is the kernel of that name);
# GEMM_CONFIG changes in a forked child (see __init__._serial_only)
_matmul = importlib.import_module(".matmul", __package__)


@njit(**JIT)
def _round_up(size):
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


@njit(**JIT)
def _carve(layout, n):
    """(L, 3) offsets of y, z, dx per layer and the dlogits offset (contract rule)."""
    n_layers = layout.shape[0]
    offs = np.full((n_layers, 3), -1, np.int64)
    off = 0
    for i in range(n_layers):
        k = layout[i, 2]
        m = layout[i, 3]
        offs[i, 0] = off
        off += _round_up(n * m)
        if layout[i, 5]:
            offs[i, 1] = off
            off += _round_up(n * m)
        if i > 0:
            offs[i, 2] = off
            off += _round_up(n * k)
    return offs, off


@njit(**JIT)
def _forward_layer(a, params, work, layout, alphas, offs, i, n, cfg):
    """y_i = f(a @ W_i + b_i) (z_i kept when asked), as nb.linear.linear_forward."""
    w_off, b_off, k = layout[i, 0], layout[i, 1], layout[i, 2]
    m, act, keep = layout[i, 3], layout[i, 4], layout[i, 5]
    w = params[w_off : w_off + k * m].reshape((k, m))
    b = params[b_off : b_off + m] if b_off >= 0 else params[0:0]
    y = work[offs[i, 0] : offs[i, 0] + n * m].reshape((n, m))
    z = work[offs[i, 1] : offs[i, 1] + n * m] if keep else work[0:0]
    _linear_forward(a, w, b, y, z, act, params.dtype.type(alphas[i]), cfg)


@njit(**JIT)
def _forward_into(a, params, layout, alphas, i, y, empty, cfg):
    """y = f(a @ W_i + b_i) (no z kept), as nb.linear.linear_forward; empty: a
    zero-size array of the dtype (the z_out not requested)."""
    w_off, b_off, k = layout[i, 0], layout[i, 1], layout[i, 2]
    m, act = layout[i, 3], layout[i, 4]
    w = params[w_off : w_off + k * m].reshape((k, m))
    b = params[b_off : b_off + m] if b_off >= 0 else params[0:0]
    _linear_forward(a, w, b, y, empty, act, params.dtype.type(alphas[i]), cfg)


@njit(**JIT)
def _forward(x, params, layout, alphas, work, out, cfg):
    # IN  x (n, k0), params (flat), layout (L, 6), alphas (L,), cfg (GEMM_CONFIG)
    # OUT work: the hidden layers' outputs (contract.forward_workspace_layout),
    #     out (n, out_last)
    n = x.shape[0]
    n_layers = layout.shape[0]
    empty = work[0:0]
    pin = blas_single_begin(cfg)
    if n_layers == 1:
        _forward_into(x, params, layout, alphas, ZERO, out, empty, cfg)
    else:
        m = layout[0, 3]
        y = work[0 : n * m].reshape((n, m))
        _forward_into(x, params, layout, alphas, ZERO, y, empty, cfg)
        off = 0
        for i in range(1, n_layers):
            m_prev = layout[i - 1, 3]
            a = work[off : off + n * m_prev].reshape((n, m_prev))
            if i == n_layers - 1:
                _forward_into(a, params, layout, alphas, i, out, empty, cfg)
            else:
                off += _round_up(n * m_prev)
                m = layout[i, 3]
                y = work[off : off + n * m].reshape((n, m))
                _forward_into(a, params, layout, alphas, i, y, empty, cfg)
    blas_single_end(cfg, pin)


@njit(**JIT)
def _backward_layer(a, params, grads, work, layout, alphas, offs, i, n, dy, l2, dx0,
                    tune, cfg):  # fmt: skip
    """dz over dy; dW (+ l2 W), db, dx (layer 0: into dx0 unless empty), as
    linear_backward."""
    w_off, b_off, k = layout[i, 0], layout[i, 1], layout[i, 2]
    m, act, keep = layout[i, 3], layout[i, 4], layout[i, 5]
    w = params[w_off : w_off + k * m].reshape((k, m))
    dw = grads[w_off : w_off + k * m].reshape((k, m))
    db = grads[b_off : b_off + m] if b_off >= 0 else grads[0:0]
    y = work[offs[i, 0] : offs[i, 0] + n * m].reshape((n, m))
    z = work[offs[i, 1] : offs[i, 1] + n * m].reshape((n, m)) if keep else y
    dx = work[offs[i, 2] : offs[i, 2] + n * k] if i > 0 else dx0
    _linear_backward(dy, a, w, z, y, dy, dw, db, dx, act,
                     params.dtype.type(alphas[i]), l2,
                     _split.dz(n, m, act, db.size > 0, tune),
                     _split.scale_add(k * m, tune), tune.chunk, tune.col_block,
                     cfg)  # fmt: skip


@njit(**JIT)
def _argmax_hits(logits, labels):
    """Rows whose argmax (np.argmax: first maximum, a NaN wins) is the label."""
    hits = 0
    for i in range(logits.shape[0]):
        row = logits[i]
        best = 0
        bv = row[0]
        if bv == bv:
            for j in range(1, row.shape[0]):
                v = row[j]
                if v != v:
                    best = j
                    break
                if v > bv:
                    best = j
                    bv = v
        if best == labels[i]:
            hits += 1
    return hits


@njit(**JIT)
def _update(params, grads, velocity, m, v, lo, hi, wd, l2, hyper, config, bias2_sqrt,
            step_size, sq_norm, tune):  # fmt: skip
    """One segment [lo, hi) of the flat buffers, as nb.optim.sgd/adam_update on the
    gradient grads + l2 params (sum p^2 before the step returned when sq_norm, else
    0)."""
    if hi <= lo:
        return 0.0
    t = params.dtype.type
    chunk = tune.chunk
    lr, momentum = hyper[LR], hyper[MOMENTUM]
    beta1, beta2, eps = hyper[BETA1], hyper[BETA2], hyper[EPS]
    nesterov = config[NESTEROV] != 0
    decoupled = config[DECOUPLED] != 0
    p = params[lo:hi]
    g = grads[lo:hi]
    if config[OPTIMIZER] == 0:
        a = velocity[lo:hi]  # an empty buffer (no momentum) slices to empty
        if _split.sgd(p.size, tune):
            return _sgd_parallel(p, g, a, t(lr), t(momentum), nesterov, t(wd),
                                 wd != 0.0, t(l2), l2 != 0.0, momentum != 0.0,
                                 sq_norm, chunk)  # fmt: skip
        return _sgd_slice(p, g, a, t(lr), t(momentum), nesterov, t(wd), wd != 0.0,
                          t(l2), l2 != 0.0, momentum != 0.0, sq_norm,
                          chunk)  # fmt: skip
    a = m[lo:hi]
    b = v[lo:hi]
    if _split.adam(p.size, tune):
        return _adam_parallel(p, g, a, b, t(beta1), t(1.0 - beta1), t(beta2),
                              t(1.0 - beta2), t(wd), t(1.0 - lr * wd), t(bias2_sqrt),
                              t(eps), t(step_size), wd != 0.0, decoupled, t(l2),
                              l2 != 0.0, sq_norm, chunk)  # fmt: skip
    return _adam_slice(p, g, a, b, t(beta1), t(1.0 - beta1), t(beta2),
                       t(1.0 - beta2), t(wd), t(1.0 - lr * wd), t(bias2_sqrt), t(eps),
                       t(step_size), wd != 0.0, decoupled, t(l2), l2 != 0.0, sq_norm,
                       chunk)  # fmt: skip


@njit(**JIT)
def _loss_grad(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
               config, hyper, l2, input_grad, tune, cfg):  # fmt: skip
    # IN  x (n, k0), labels (n,) intp, targets (n, K) or empty, sample_weight (n,) or
    #     empty, params (flat), layout (L, 6), alphas (L,), config, hyper (contract
    #     slots), l2 (the L2 term's gradient l2 W added to dW: hyper's, or 0.0 when
    #     the update adds it), tune (_options.Tuning), cfg (matmul.GEMM_CONFIG)
    # OUT grads (flat), work (carved, see _carve), input_grad (n * k0,) or empty
    # Forward, the loss and backward; returns (loss without its L2 term, correct).
    n = x.shape[0]
    n_layers = layout.shape[0]
    offs, d_off = _carve(layout, n)
    # forward (layer 0 reads x; the others read the previous y in the workspace)
    _forward_layer(x, params, work, layout, alphas, offs, ZERO, n, cfg)
    for i in range(1, n_layers):
        m_prev = layout[i - 1, 3]
        a = work[offs[i - 1, 0] : offs[i - 1, 0] + n * m_prev].reshape((n, m_prev))
        _forward_layer(a, params, work, layout, alphas, offs, i, n, cfg)
    # loss and its gradient w.r.t. the last output
    n_out = layout[n_layers - 1, 3]
    last = offs[n_layers - 1, 0]
    out = work[last : last + n * n_out].reshape((n, n_out))
    dout_flat = work[d_off : d_off + n * n_out]  # the loss kernels take it flat
    dout = dout_flat.reshape((n, n_out))
    rows_per_task = _split.rows_per_task(n_out, tune)
    if config[LOSS] == SQUARED_ERROR:
        correct = 0
        if _split.squared_error(n, n_out, tune):
            loss = _se_parallel(out, targets, sample_weight, dout_flat, work[0:0],
                                rows_per_task, FALSE)  # fmt: skip
        else:
            loss = _se_serial(out, targets, sample_weight, dout_flat, work[0:0],
                              rows_per_task, FALSE)  # fmt: skip
    elif config[LOSS] == SIGMOID_CE:
        # an exp and two logs per logit: the softmax's cost decides the split
        correct = 0
        if _split.softmax(n, n_out, tune):
            loss = _se_parallel(out, targets, sample_weight, dout_flat, work[0:0],
                                rows_per_task, TRUE)  # fmt: skip
        else:
            loss = _se_serial(out, targets, sample_weight, dout_flat, work[0:0],
                              rows_per_task, TRUE)  # fmt: skip
    else:
        if _split.softmax(n, n_out, tune):
            loss = _sce_parallel(out, labels, sample_weight, dout_flat, work[0:0],
                                 hyper[LABEL_SMOOTHING], rows_per_task)  # fmt: skip
        else:
            loss = _sce_serial(out, labels, sample_weight, dout_flat, work[0:0],
                               hyper[LABEL_SMOOTHING], rows_per_task)  # fmt: skip
        correct = _argmax_hits(out, labels)
    # backward, last layer first; dz overwrites the incoming gradient in place
    dy = dout
    for i in range(n_layers - 1, 0, -1):
        m_prev = layout[i - 1, 3]
        a = work[offs[i - 1, 0] : offs[i - 1, 0] + n * m_prev].reshape((n, m_prev))
        _backward_layer(a, params, grads, work, layout, alphas, offs, i, n, dy, l2,
                        input_grad, tune, cfg)  # fmt: skip
        k = layout[i, 2]
        dy = work[offs[i, 2] : offs[i, 2] + n * k].reshape((n, k))
    _backward_layer(x, params, grads, work, layout, alphas, offs, ZERO, n, dy, l2,
                    input_grad, tune, cfg)  # fmt: skip
    return loss, correct


@njit(**JIT)
def _loss_grad_l2(x, labels, targets, sample_weight, params, grads, layout, alphas,
                  work, config, hyper, input_grad, tune, cfg):  # fmt: skip
    """_loss_grad plus the L2 term, summed in the chunks train_step's update uses."""
    pin = blas_single_begin(cfg)
    l2 = hyper[L2]
    loss, correct = _loss_grad(x, labels, targets, sample_weight, params, grads,
                               layout, alphas, work, config, hyper, l2, input_grad,
                               tune, cfg)  # fmt: skip
    blas_single_end(cfg, pin)
    weights_end = config[WEIGHTS_END]
    if l2 != 0.0 and weights_end > 0:
        w = params[:weights_end]
        if _split.sgd(weights_end, tune):
            loss += 0.5 * l2 * _sq_sum_parallel(w, tune.chunk)
        else:
            loss += 0.5 * l2 * _sq_sum_chunks(w, tune.chunk)
    return loss, correct


@njit(**JIT)
def _update_adds_l2(layout, weights_end):
    """Whether params[:weights_end] holds every layer's weight matrix and no bias
    (what lies between them is no parameter: a model's padding): only then may the
    update of that segment add the L2 term's gradient l2 W, which backward adds to
    every dW."""
    for i in range(layout.shape[0]):
        if layout[i, 0] + layout[i, 2] * layout[i, 3] > weights_end:
            return False
        if 0 <= layout[i, 1] < weights_end:
            return False
    return True


@njit(**JIT)
def _train_step(x, labels, targets, sample_weight, params, grads, layout, alphas,
                work, config, hyper, velocity, m, v, bias2_sqrt, step_size, tune,
                cfg):  # fmt: skip
    # IN  as _loss_grad; bias2_sqrt, step_size: Adam's bias corrections
    # IN/OUT params, grads, velocity / m, v (flat), work (carved, see _carve)
    # BLAS to one thread once for the whole step (each gemm would switch it back
    # and forth); the blocks are single-threaded calls either way
    pin = blas_single_begin(cfg)
    l2 = hyper[L2]
    weights_end = config[WEIGHTS_END]
    # backward leaves the L2 term's gradient l2 W to the update, which reads W anyway
    # (a pass over the weights less; the same sums: backward adds it after the
    # product too), when params[:weights_end] holds the weights and no bias; grads
    # then keeps the data term's gradient
    in_update = _update_adds_l2(layout, weights_end)
    loss, correct = _loss_grad(x, labels, targets, sample_weight, params, grads,
                               layout, alphas, work, config, hyper,
                               0.0 if in_update else l2, work[0:0], tune,
                               cfg)  # fmt: skip
    # the update: weights with weight decay, biases without; the L2 term's sum of
    # squares (float64, fixed chunks) is read by the weights' update, before it steps
    sq = _update(params, grads, velocity, m, v, ZERO, weights_end, hyper[WEIGHT_DECAY],
                 l2 if in_update else 0.0, hyper, config, bias2_sqrt, step_size,
                 l2 != 0.0, tune)  # fmt: skip
    loss += 0.5 * l2 * sq
    _update(params, grads, velocity, m, v, weights_end, params.size, 0.0, 0.0, hyper,
            config, bias2_sqrt, step_size, FALSE, tune)  # fmt: skip
    blas_single_end(cfg, pin)
    return loss, correct


def forward(x, params, layout, alphas, work, out):
    """The forward pass of the stack in one compiled call."""
    # IN  x (n, k0), params (flat), layout (L, 6) int64, alphas (L,) float64
    # OUT work (the hidden outputs), out (n, out_last)
    _forward(x, params, layout, alphas, work, out, _matmul.GEMM_CONFIG)


def loss_grad(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
              config, hyper, input_grad):  # fmt: skip
    """Forward, the loss (+ the L2 term) and backward in one compiled call."""
    # IN  x (n, k0), labels (n,) intp or empty, targets (n, K) or empty,
    #     sample_weight (n,) or empty, params (flat), layout (L, 6) int64,
    #     alphas (L,) float64, config int64 / hyper float64 (contract slots)
    # OUT grads, work, input_grad (n, k0) or empty; returns (loss, n_correct)
    return _loss_grad_l2(
        x, labels, targets, sample_weight, params, grads, layout, alphas, work,
        config, hyper, input_grad.reshape(-1), opt.TUNE, _matmul.GEMM_CONFIG,
    )  # fmt: skip


def train_step(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
               config, hyper, velocity, m, v):  # fmt: skip
    """Forward, the loss, backward and the optimizer update in one compiled call."""
    # IN  as loss_grad   IN/OUT params, grads, work, velocity (SGD, or empty), m, v
    # (Adam, or empty); returns (loss, n_correct)
    # Adam's bias corrections in Python float64, exactly as nb.optim.adam_update
    step = int(config[STEP])
    lr, beta1, beta2 = float(hyper[LR]), float(hyper[BETA1]), float(hyper[BETA2])
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    return _train_step(
        x, labels, targets, sample_weight, params, grads, layout, alphas, work,
        config, hyper, velocity, m, v, bias2_sqrt, lr / bias1, opt.TUNE,
        _matmul.GEMM_CONFIG,
    )  # fmt: skip


@njit(**JIT)
def _train_steps(X, x_rows, rows, labels, targets, sample_weight, batch_x,
                 batch_labels, batch_targets, batch_weight, params, grads, layout,
                 alphas, work, config, hyper, velocity, m, v, step_eps, bias2_sqrt,
                 step_size, losses, correct, tune, cfg):  # fmt: skip
    # step s: its rows gathered into the batch buffers, then _train_step (bias
    # corrections of step config[STEP] + s precomputed by the caller)
    bs = batch_x.shape[0]
    step_config, step_hyper = config.copy(), hyper.copy()
    for s in range(losses.shape[0]):
        idx = rows[s * bs : (s + 1) * bs]
        # element loops, not row assignments: those bring Numba's shape-mismatch
        # error formatting (seconds of compile) into the step
        for r in range(bs):
            i = idx[r]
            xi = x_rows[i] if x_rows.shape[0] else i
            for c in range(batch_x.shape[1]):
                batch_x[r, c] = X[xi, c]
            if labels.shape[0]:
                batch_labels[r] = labels[i]
            for c in range(batch_targets.shape[1] if targets.shape[0] else 0):
                batch_targets[r, c] = targets[i, c]
            if sample_weight.shape[0]:
                batch_weight[r] = sample_weight[i]
        step_config[STEP] = config[STEP] + s
        if step_eps.shape[0]:
            step_hyper[EPS] = step_eps[s]
        losses[s], correct[s] = _train_step(
            batch_x, batch_labels, batch_targets, batch_weight, params, grads, layout,
            alphas, work, step_config, step_hyper, velocity, m, v, bias2_sqrt[s],
            step_size[s], tune, cfg,
        )  # fmt: skip


def train_steps(X, x_rows, rows, labels, targets, sample_weight, batch_x,
                batch_labels, batch_targets, batch_weight, params, grads, layout,
                alphas, work, config, hyper, velocity, m, v, step_eps, losses,
                correct):  # fmt: skip
    """train_step on each batch of ``rows`` in turn, gathered in compiled code."""
    # IN  X (N_X, k0), x_rows (N,) or empty, rows (k * bs,), labels / targets /
    #     sample_weight of the N training rows (or empty), the rest as train_step
    #     step_eps (k,) float64 or empty
    # OUT batch_x (bs, k0), batch_labels / batch_targets / batch_weight (or empty),
    #     losses (k,) float64, correct (k,) int64; IN/OUT as train_step
    # Adam's bias corrections per step in Python float64, exactly as train_step
    first = int(config[STEP])
    lr, beta1, beta2 = float(hyper[LR]), float(hyper[BETA1]), float(hyper[BETA2])
    k = losses.shape[0]
    bias2_sqrt, step_size = np.empty(k), np.empty(k)
    for s in range(k):
        bias2_sqrt[s] = math.sqrt(1.0 - beta2 ** (first + s))
        step_size[s] = lr / (1.0 - beta1 ** (first + s))
    _train_steps(
        X, x_rows, rows, labels, targets, sample_weight, batch_x, batch_labels,
        batch_targets, batch_weight, params, grads, layout, alphas, work, config,
        hyper, velocity, m, v, step_eps, bias2_sqrt, step_size, losses, correct,
        opt.TUNE, _matmul.GEMM_CONFIG,
    )  # fmt: skip
