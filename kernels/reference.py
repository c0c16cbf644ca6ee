"""The NumPy backend: the test oracle and the benchmark baseline.

Raw kernels of the contract (see ``contract.RAW_KERNELS``), written the way a good NumPy
user would: in-place ufuncs with ``out=``, multiply-by-mask instead of boolean indexing,
scalar constants of the array's dtype. Inputs are validated by ``contract.Backend``.
"""

from __future__ import annotations

import math

import numpy as np

from .contract import (
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
    TRAIN_OPTIMIZERS,
    WEIGHT_DECAY,
    WEIGHTS_END,
    forward_workspace_layout,
    train_workspace_layout,
)

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    """SciPy's erf, imported on GELU's first use: scipy.special loads SciPy's own
    OpenBLAS, with threads of its own, into the user's process."""
    from scipy.special import erf

    return erf(x)


def _op(a: np.ndarray, trans: bool) -> np.ndarray:
    return a.T if trans else a


def matmul(a, b, out, trans_a, trans_b, accumulate):
    """out = op(a) @ op(b) (+ out)."""
    if accumulate:
        out += _op(a, trans_a) @ _op(b, trans_b)
    else:
        np.matmul(_op(a, trans_a), _op(b, trans_b), out=out)


def activation_forward(z, out, act, alpha):
    """out = f(z), element-wise (flat arrays)."""
    one = z.dtype.type(1)
    if act == 0:  # identity
        if out is not z:
            np.copyto(out, z)
    elif act == 1:  # relu
        np.maximum(z, z.dtype.type(0), out=out)
    elif act == 2:  # leaky_relu
        if 0.0 <= alpha <= 1.0:
            slope = np.multiply(z, z.dtype.type(alpha))
            np.maximum(z, slope, out=out)
        else:
            np.copyto(out, np.where(z > 0, z, z * z.dtype.type(alpha)))
    elif act == 3:  # sigmoid: 1 / (1 + exp(-z)); exp overflow gives 1/inf = 0
        with np.errstate(over="ignore"):
            np.negative(z, out=out)
            np.exp(out, out=out)
        out += one
        np.reciprocal(out, out=out)
    elif act == 4:  # tanh
        np.tanh(z, out=out)
    elif act == 5:  # gelu (exact): 0.5 z (1 + erf(z / sqrt 2))
        cdf = _erf(z * z.dtype.type(_SQRT_HALF))
        cdf += one
        np.multiply(z, cdf, out=out)
        out *= z.dtype.type(0.5)
    else:
        raise ValueError(f"unknown activation code {act}")


def _activation_grad(z, y, act, alpha):
    """f'(z) as a new array (None for identity)."""
    dt = z.dtype.type
    if act == 0:
        return None
    if act == 1:
        return (z > 0).astype(z.dtype)
    if act == 2:
        return np.where(z > 0, dt(1), dt(alpha))
    if act == 3:
        return y * (dt(1) - y)
    if act == 4:
        g = y * y
        np.subtract(dt(1), g, out=g)
        return g
    if act == 5:  # Phi(z) + z phi(z)
        cdf = _erf(z * dt(_SQRT_HALF))
        cdf += dt(1)
        cdf *= dt(0.5)
        pdf = np.square(z)
        pdf *= dt(-0.5)
        np.exp(pdf, out=pdf)
        pdf *= z
        pdf *= dt(_INV_SQRT_2PI)
        cdf += pdf
        return cdf
    raise ValueError(f"unknown activation code {act}")


def activation_backward(dy, z, y, out, act, alpha):
    """out = dy * f'(z) (flat arrays)."""
    grad = _activation_grad(z, y, act, alpha)
    if grad is None:
        if out is not dy:
            np.copyto(out, dy)
    else:
        np.multiply(dy, grad, out=out)


def linear_forward(x, w, b, y_out, z_out, act, alpha):
    """z = x @ w + b; y_out = f(z); z_out = z when non-empty."""
    np.matmul(x, w, out=y_out)
    if b.size:
        y_out += b
    if z_out.size:
        np.copyto(z_out, y_out)
    activation_forward(y_out.reshape(-1), y_out.reshape(-1), act, alpha)


def linear_backward(dy, x, w, z, y, dz_out, dw_out, db_out, dx_out, act, alpha,
                    weight_decay):  # fmt: skip
    """dz = dy f'(z); dw = x^T dz + wd w; db = sum_rows dz; dx = dz w^T."""
    activation_backward(
        dy.reshape(-1), z.reshape(-1), y.reshape(-1), dz_out.reshape(-1), act, alpha
    )
    np.matmul(x.T, dz_out, out=dw_out)
    if weight_decay:
        dw_out += w * w.dtype.type(weight_decay)
    if db_out.size:
        np.sum(dz_out, axis=0, out=db_out)
    if dx_out.size:
        np.matmul(dz_out, w.T, out=dx_out)


def _shifted_exp(logits):
    """(z - max z, exp(z - max z), row sums); a NaN anywhere in a row spreads."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return shifted, e, e.sum(axis=1)


def softmax_cross_entropy(logits, labels, sample_weight, grad_out, row_loss_out,
                          label_smoothing):  # fmt: skip
    """Mean weighted loss; grad_out = w (softmax - target) / n when non-empty."""
    n, k = logits.shape
    if n == 0:
        return math.nan
    dt = logits.dtype.type
    with np.errstate(invalid="ignore"):
        shifted, e, s = _shifted_exp(logits)
        rows = np.arange(n)
        # l = lse - sum_k t_k z_k = log s - sum_k t_k shifted_k (targets sum to 1)
        loss = np.log(s)
        loss -= dt(1.0 - label_smoothing) * shifted[rows, labels]
        if label_smoothing:
            loss -= dt(label_smoothing / k) * shifted.sum(axis=1)
    if row_loss_out.size:
        np.copyto(row_loss_out, loss)
    if sample_weight.size:
        loss *= sample_weight
    if grad_out.size:
        np.divide(e, s[:, None], out=grad_out)
        if label_smoothing:
            grad_out -= dt(label_smoothing / k)
        grad_out[rows, labels] -= dt(1.0 - label_smoothing)
        scale = (
            np.full(n, dt(1.0 / n)) if not sample_weight.size else sample_weight / dt(n)
        )
        grad_out *= scale[:, None]
    return loss.sum() / n


def squared_error(pred, target, sample_weight, grad_out, row_loss_out):
    """loss = (1/n) sum_i w_i 0.5 ||pred_i - target_i||^2; grad = w_i (pred_i -
    target_i) / n."""
    n = pred.shape[0]
    if n == 0:
        return math.nan
    dt = pred.dtype.type
    d = pred - target
    rows = 0.5 * np.square(d.astype(np.float64)).sum(axis=1)
    if row_loss_out.size:
        row_loss_out[...] = rows
    if grad_out.size:
        scale = sample_weight / dt(n) if sample_weight.size else dt(1.0 / n)
        np.multiply(d, scale[:, None] if sample_weight.size else scale, out=grad_out)
    if sample_weight.size:
        rows = rows * sample_weight
    return float(rows.sum() / n)


def _sigmoid_cross_entropy(logits, targets, sample_weight, grad_out):
    """scikit-learn's binary log loss on independent logistic outputs (the loss
    train_step / loss_grad compute for TRAIN_LOSSES["sigmoid_cross_entropy"]).

    p = 1 / (1 + exp(-z)) in the logits' dtype (exp overflow gives p = 0), clipped to
    [eps, 1 - eps] (eps: the dtype's machine epsilon) for the loss only: row loss
    -sum_j [y log p' + (1 - y) log(1 - p')] in float64; mean (1/n) sum_i w_i l_i;
    grad_out = w_i (p - y) / n. A NaN logit gives a NaN loss and gradient entry.
    """
    n = logits.shape[0]
    dt = logits.dtype.type
    with np.errstate(over="ignore"):
        p = dt(1.0) / (dt(1.0) + np.exp(-logits))
    eps = np.finfo(logits.dtype).eps
    clipped = np.clip(p, eps, dt(1.0) - eps)  # NaN stays NaN
    y = targets.astype(np.float64)
    rows = -(
        y * np.log(clipped.astype(np.float64))
        + (1.0 - y) * np.log((dt(1.0) - clipped).astype(np.float64))
    ).sum(axis=1)
    scale = sample_weight / dt(n) if sample_weight.size else dt(1.0 / n)
    np.multiply(p - targets, scale[:, None] if sample_weight.size else scale,
                out=grad_out)  # fmt: skip
    if sample_weight.size:
        rows = rows * sample_weight
    return float(rows.sum() / n)


def softmax(logits, out):
    """out = exp(z - lse(z)) per row."""
    if logits.shape[0] == 0:
        return
    with np.errstate(invalid="ignore"):
        _, e, s = _shifted_exp(logits)
    np.divide(e, s[:, None], out=out)


def _sq_norm(param):
    """sum(param**2) in float64 (the compiled kernels sum fixed chunks in order: equal
    up to float64 rounding)."""
    p = param.astype(np.float64)
    return float(np.dot(p, p))


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay, sq_norm):
    """PyTorch SGD step, in place (flat arrays); sum(param**2) before it if sq_norm."""
    sq = _sq_norm(param) if sq_norm else 0.0
    dt = param.dtype.type
    g = grad + dt(weight_decay) * param if weight_decay else grad
    if momentum:
        velocity *= dt(momentum)
        velocity += g
        step = g + dt(momentum) * velocity if nesterov else velocity
    else:
        step = g
    param -= dt(lr) * step
    return sq


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay,
                decoupled, sq_norm):  # fmt: skip
    """PyTorch Adam / AdamW step, in place (flat arrays); sum(param**2) before it if
    sq_norm."""
    sq = _sq_norm(param) if sq_norm else 0.0
    dt = param.dtype.type
    g = grad
    if weight_decay:
        if decoupled:
            param *= dt(1.0 - lr * weight_decay)
        else:
            g = grad + dt(weight_decay) * param
    m *= dt(beta1)
    m += dt(1.0 - beta1) * g
    v *= dt(beta2)
    v += dt(1.0 - beta2) * (g * g)
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = np.sqrt(v)
    denom /= dt(bias2_sqrt)
    denom += dt(eps)
    update = m / denom
    update *= dt(lr / bias1)
    param -= update
    return sq


def _loss_grad(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
               config, hyper, input_grad, l2):  # fmt: skip
    """Forward, the loss (softmax cross-entropy on labels, squared error or sigmoid
    cross-entropy on targets, by config[LOSS]) and backward, l2 W added to each dW
    (the L2 term of the loss not added): ``(loss, n_correct)``. input_grad
    non-empty: d loss / d x written there."""
    n = x.shape[0]
    offsets, d_off, _ = train_workspace_layout(layout, n)
    empty = work[:0]
    rows = layout.tolist()
    ys, zs = [], []
    a = x
    for i, (w_off, b_off, k, m, act, keep) in enumerate(rows):
        w = params[w_off : w_off + k * m].reshape(k, m)
        b = params[b_off : b_off + m] if b_off >= 0 else empty
        y = work[offsets[i, 0] : offsets[i, 0] + n * m].reshape(n, m)
        z = work[offsets[i, 1] : offsets[i, 1] + n * m].reshape(n, m) if keep else None
        linear_forward(a, w, b, y, empty if z is None else z, act, alphas[i])
        ys.append(y)
        zs.append(y if z is None else z)
        a = y
    out = ys[-1]
    n_out = out.shape[1]
    dy = work[d_off : d_off + n * n_out].reshape(n, n_out)
    if config[LOSS] == TRAIN_LOSSES["squared_error"]:
        loss = squared_error(out, targets, sample_weight, dy, empty)
        correct = 0
    elif config[LOSS] == TRAIN_LOSSES["sigmoid_cross_entropy"]:
        loss = _sigmoid_cross_entropy(out, targets, sample_weight, dy)
        correct = 0
    else:
        loss = softmax_cross_entropy(out, labels, sample_weight, dy, empty,
                                     float(hyper[LABEL_SMOOTHING]))  # fmt: skip
        correct = int(np.count_nonzero(out.argmax(axis=1) == labels))
    for i in range(len(rows) - 1, -1, -1):
        w_off, b_off, k, m, act, keep = rows[i]
        if i:
            dx = work[offsets[i, 2] : offsets[i, 2] + n * k].reshape(n, k)
        else:
            dx = input_grad.reshape(n, k) if input_grad.size else empty
        linear_backward(
            dy, x if i == 0 else ys[i - 1], params[w_off : w_off + k * m].reshape(k, m),
            zs[i], ys[i], dy, grads[w_off : w_off + k * m].reshape(k, m),
            grads[b_off : b_off + m] if b_off >= 0 else empty, dx, act, alphas[i], l2,
        )  # fmt: skip
        dy = dx
    return float(loss), correct


def forward(x, params, layout, alphas, work, out):
    """Each layer's linear_forward in turn: the hidden outputs into work (the
    contract's forward_workspace_layout), the last layer's into out."""
    n = x.shape[0]
    offsets, _ = forward_workspace_layout(layout, n)
    rows = layout.tolist()
    a = x
    for i, (w_off, b_off, k, m, act, _) in enumerate(rows):
        w = params[w_off : w_off + k * m].reshape(k, m)
        b = params[b_off : b_off + m] if b_off >= 0 else work[:0]
        if i + 1 < len(rows):
            y = work[offsets[i] : offsets[i] + n * m].reshape(n, m)
        else:
            y = out
        linear_forward(a, w, b, y, work[:0], act, alphas[i])
        a = y


def loss_grad(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
              config, hyper, input_grad):  # fmt: skip
    """Loss (L2 term included) and gradients of a Linear stack, no update: the
    oracle of the compiled backends' loss_grad. Returns ``(loss, n_correct)``."""
    l2, weights_end = float(hyper[L2]), int(config[WEIGHTS_END])
    loss, correct = _loss_grad(x, labels, targets, sample_weight, params, grads,
                               layout, alphas, work, config, hyper, input_grad,
                               l2)  # fmt: skip
    if l2 and weights_end:
        loss += 0.5 * l2 * _sq_norm(params[:weights_end])
    return loss, correct


def _update_adds_l2(layout, weights_end):
    """Whether params[:weights_end] holds every layer's weight matrix and no bias
    (what lies between them is no parameter: a model's padding): only then may the
    update of that segment add the L2 term's gradient l2 W, which backward adds to
    every dW."""
    return all(
        w_off + k * m <= weights_end and (b_off < 0 or b_off >= weights_end)
        for w_off, b_off, k, m, _, _ in layout.tolist()
    )


def train_step(x, labels, targets, sample_weight, params, grads, layout, alphas, work,
               config, hyper, velocity, m, v):  # fmt: skip
    """One optimizer step of a Linear stack: loss_grad's calls, then the update.

    The oracle of the compiled backends' fused train_step (same calls, same order):
    when params[:weights_end] holds the weights and no bias, backward leaves the L2
    term's gradient l2 W to the update, so ``grads`` keeps the data term's gradient
    (otherwise backward adds it, as loss_grad). Returns ``(loss incl. the L2 term,
    n_correct)``.
    """
    l2, weights_end = float(hyper[L2]), int(config[WEIGHTS_END])
    l2_in_update = _update_adds_l2(layout, weights_end)
    loss, correct = _loss_grad(x, labels, targets, sample_weight, params, grads,
                               layout, alphas, work, config, hyper, work[:0],
                               0.0 if l2_in_update else l2)  # fmt: skip
    lr, momentum = float(hyper[LR]), float(hyper[MOMENTUM])
    beta1, beta2, eps = float(hyper[BETA1]), float(hyper[BETA2]), float(hyper[EPS])
    nesterov, decoupled = bool(config[NESTEROV]), bool(config[DECOUPLED])
    step = int(config[STEP])
    # the weights' update also returns their sum of squares before the step (L2 term)
    segments = [
        (slice(0, weights_end), float(hyper[WEIGHT_DECAY]), bool(l2)),
        (slice(weights_end, params.size), 0.0, False),
    ]
    for seg, wd, sq_norm in segments:
        if seg.stop <= seg.start:
            continue
        g = grads[seg]
        if sq_norm and l2_in_update:  # + l2 W, rounded as linear_backward adds it
            g = g + params.dtype.type(l2) * params[seg]
        if config[OPTIMIZER] == TRAIN_OPTIMIZERS["sgd"]:
            # an empty velocity (no momentum) slices to an empty array
            sq = sgd_update(params[seg], g, velocity[seg], lr, momentum, nesterov, wd,
                            sq_norm)  # fmt: skip
        else:
            sq = adam_update(params[seg], g, m[seg], v[seg], lr, beta1, beta2, eps,
                             step, wd, decoupled, sq_norm)  # fmt: skip
        if sq_norm:
            loss += 0.5 * l2 * sq
    return loss, correct


def train_steps(X, x_rows, rows, labels, targets, sample_weight, batch_x,
                batch_labels, batch_targets, batch_weight, params, grads, layout,
                alphas, work, config, hyper, velocity, m, v, step_eps, losses,
                correct):  # fmt: skip
    """train_step on each batch of ``rows`` in turn, gathered into the batch_*
    buffers (the oracle of the compiled backends' train_steps)."""
    bs = batch_x.shape[0]
    step_config, step_hyper = config.copy(), hyper.copy()
    for s in range(losses.shape[0]):
        idx = rows[s * bs : (s + 1) * bs]
        np.take(X, idx if x_rows.size == 0 else x_rows[idx], axis=0, out=batch_x)
        if labels.size:
            np.take(labels, idx, out=batch_labels)
        if targets.size:
            np.take(targets, idx, axis=0, out=batch_targets)
        if sample_weight.size:
            np.take(sample_weight, idx, out=batch_weight)
        step_config[STEP] = config[STEP] + s
        if step_eps.size:
            step_hyper[EPS] = step_eps[s]
        losses[s], correct[s] = train_step(
            batch_x, batch_labels, batch_targets, batch_weight, params, grads,
            layout, alphas, work, step_config, step_hyper, velocity, m, v,
        )  # fmt: skip
