"""The kernel contract: one public API over every backend.

Each backend (``reference`` = NumPy, ``nb`` = Numba, ``cy`` = Cython) provides the *raw*
kernels listed in :data:`RAW_KERNELS` with exactly the parameters given there. Raw
kernels trust their inputs: every array is C-contiguous, of one float dtype, correctly
shaped, outputs are allocated, optional arrays are passed as zero-size arrays and the
activation is an integer code. Element-wise kernels and optimizer updates take flat 1-D
views.

:class:`Backend` wraps a raw module with the public signatures (documented below),
validates every argument *before* any kernel touches memory, allocates missing outputs
and returns them. The validation lives here, once, so no backend repeats it.
"""

from __future__ import annotations

import inspect
import math
import operator
from types import ModuleType
from typing import Any

import numpy as np

from . import tuning

# Activation codes shared by every backend (the compiled kernels switch on the int).
ACTIVATIONS: dict[str, int] = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "sigmoid": 3,
    "tanh": 4,
    "gelu": 5,
}
ACTIVATION_ALIASES = {"logistic": "sigmoid", "linear": "identity", "none": "identity"}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Raw kernel name -> parameter names, in order. Every backend implements exactly these.
# "act" is an activation code, "alpha" the leaky_relu slope.
RAW_KERNELS: dict[str, tuple[str, ...]] = {
    # OUT = op(a) @ op(b) (+ OUT if accumulate)
    "matmul": ("a", "b", "out", "trans_a", "trans_b", "accumulate"),
    # out = f(z), flat
    "activation_forward": ("z", "out", "act", "alpha"),
    # out = dy * f'(z) (sigmoid/tanh read y, relu/leaky_relu/gelu read z), flat
    "activation_backward": ("dy", "z", "y", "out", "act", "alpha"),
    # z = x @ w + b; y = f(z); z_out written only when non-empty
    "linear_forward": ("x", "w", "b", "y_out", "z_out", "act", "alpha"),
    # dz = dy*f'(z); dw = x^T dz + weight_decay*w; db = sum_rows dz; dx = dz w^T
    # (db_out / dx_out skipped when empty; dz_out may be dy itself)
    "linear_backward": (
        "dy",
        "x",
        "w",
        "z",
        "y",
        "dz_out",
        "dw_out",
        "db_out",
        "dx_out",
        "act",
        "alpha",
        "weight_decay",
    ),  # fmt: skip
    # mean loss (1/n) sum_i w_i l_i; grad = w_i (softmax - target) / n (skipped when
    # grad_out is empty); row_loss_out[i] = l_i when non-empty. Returns the mean loss.
    "softmax_cross_entropy": (
        "logits",
        "labels",
        "sample_weight",
        "grad_out",
        "row_loss_out",
        "label_smoothing",
    ),  # fmt: skip
    # mean loss (1/n) sum_i w_i l_i with l_i = 0.5 ||pred_i - target_i||^2 (summed in
    # float64); grad = w_i (pred_i - target_i) / n (skipped when grad_out is empty);
    # row_loss_out[i] = l_i when non-empty. Returns the mean loss.
    "squared_error": (
        "pred",
        "target",
        "sample_weight",
        "grad_out",
        "row_loss_out",
    ),  # fmt: skip
    # out = softmax(logits), per row, max-shifted
    "softmax": ("logits", "out"),
    # PyTorch SGD: g = grad + wd*p; v = mu*v + g; p -= lr*(g + mu*v if nesterov else v).
    # Returns sum(p^2) before the step (float64, fixed chunks) when sq_norm, else 0.0.
    "sgd_update": (
        "param",
        "grad",
        "velocity",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "sq_norm",
    ),  # fmt: skip
    # PyTorch Adam (decoupled=False: g += wd*p) / AdamW (decoupled: p *= 1 - lr*wd);
    # m, v moments; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). sq_norm: as
    # sgd_update.
    "adam_update": (
        "param",
        "grad",
        "m",
        "v",
        "lr",
        "beta1",
        "beta2",
        "eps",
        "step",
        "weight_decay",
        "decoupled",
        "sq_norm",
    ),  # fmt: skip
    # The forward pass of a Linear(+activation) stack (inference): layer i < L - 1
    # writes f(z_i) into work as forward_workspace_layout carves it, the last layer
    # into out (n, out_last); keep_z is not read (no z is kept). See Backend.forward.
    "forward": ("x", "params", "layout", "alphas", "work", "out"),
    # Loss and gradients of a Linear(+activation) stack: forward, the loss named by
    # config[LOSS] (+ the L2 term), backward into grads and, when input_grad is
    # non-empty, d loss / d x. No update. See Backend.loss_grad. Returns
    # (loss, n_correct).
    "loss_grad": (
        "x",
        "labels",
        "targets",
        "sample_weight",
        "params",
        "grads",
        "layout",
        "alphas",
        "work",
        "config",
        "hyper",
        "input_grad",
    ),  # fmt: skip
    # One whole optimizer step of a Linear(+activation) stack: loss_grad, then the
    # update. See Backend.train_step, the CONFIG / HYPER slots and
    # train_workspace_layout below. Returns (loss, n_correct).
    "train_step": (
        "x",
        "labels",
        "targets",
        "sample_weight",
        "params",
        "grads",
        "layout",
        "alphas",
        "work",
        "config",
        "hyper",
        "velocity",
        "m",
        "v",
    ),  # fmt: skip
    # Several train_steps in one call, each on a batch the kernel gathers itself:
    # step s trains on rows[s*bs:(s+1)*bs] (bs = batch_x's rows) of labels / targets
    # / sample_weight and on those rows of X (through x_rows when non-empty: X's row
    # of training row r is x_rows[r]), gathered into the batch_* buffers. Step s is
    # optimizer step config[STEP] + s, with Adam's epsilon step_eps[s] when step_eps
    # is non-empty; everything else is as train_step. Writes each step's (loss,
    # n_correct) into losses / correct, whose length is the number of steps. See
    # Backend.train_steps.
    "train_steps": (
        "X",
        "x_rows",
        "rows",
        "labels",
        "targets",
        "sample_weight",
        "batch_x",
        "batch_labels",
        "batch_targets",
        "batch_weight",
        "params",
        "grads",
        "layout",
        "alphas",
        "work",
        "config",
        "hyper",
        "velocity",
        "m",
        "v",
        "step_eps",
        "losses",
        "correct",
    ),  # fmt: skip
}

# ------------------------------------------------------------ compiled train step
#: Columns of train_step's int64 ``layout`` table, one row per Linear layer (in order).
#: w_offset / b_offset: element offsets of the (in, out) weight and the (out,) bias in
#: the flat ``params`` (and ``grads``) buffer, b_offset = -1 for no bias; act: the
#: activation code fused after the layer; keep_z: 1 to store z = x @ W + b for the
#: backward (needed by gelu and leaky_relu with alpha < 0), 0 to let it read y = f(z).
TRAIN_LAYOUT_COLUMNS = ("w_offset", "b_offset", "in_features", "out_features", "act",
                        "keep_z")  # fmt: skip
#: The losses of loss_grad / train_step (``config[LOSS]``): softmax cross-entropy on
#: integer labels, squared error on float targets (the identity output), or sigmoid
#: (logistic) cross-entropy on float 0/1 targets, one independent logistic output per
#: column (scikit-learn's binary log loss: binary and multilabel classification).
TRAIN_LOSSES = {"softmax_cross_entropy": 0, "squared_error": 1,
                "sigmoid_cross_entropy": 2}  # fmt: skip
#: The losses whose target is a float array shaped like the last output.
FLOAT_TARGET_LOSSES = ("squared_error", "sigmoid_cross_entropy")
#: train_step's optimizer codes (``config[OPTIMIZER]``; AdamW = Adam with
#: ``config[DECOUPLED] = 1``).
TRAIN_OPTIMIZERS = {"sgd": 0, "adam": 1}
#: Slots of the int64 ``config`` array of loss_grad / train_step, in order:
#: loss: a TRAIN_LOSSES code; weights_end: params[:weights_end] holds the weights
#: (decayed, and summed in the L2 term), the rest the biases; optimizer: a
#: TRAIN_OPTIMIZERS code; step: the optimizer step, from 1; nesterov, decoupled: 0/1.
#: loss_grad reads the first two.
CONFIG_SLOTS = ("loss", "weights_end", "optimizer", "step", "nesterov", "decoupled")
#: Slots of the float64 ``hyper`` array, in order: label_smoothing (softmax
#: cross-entropy), l2 (the loss's (l2 / 2) ||W||^2 term, l2 W added to each dW that
#: loss_grad returns and that train_step's update steps with), then the
#: update's lr, momentum, weight_decay, beta1, beta2, eps. loss_grad reads the first
#: two.
HYPER_SLOTS = ("label_smoothing", "l2", "lr", "momentum", "weight_decay", "beta1",
               "beta2", "eps")  # fmt: skip
# slot indices, read by name in every backend
LOSS, WEIGHTS_END, OPTIMIZER, STEP, NESTEROV, DECOUPLED = range(len(CONFIG_SLOTS))
LABEL_SMOOTHING, L2, LR, MOMENTUM, WEIGHT_DECAY, BETA1, BETA2, EPS = range(
    len(HYPER_SLOTS)
)


def pack_config(
    *,
    loss: int = 0,
    weights_end: int,
    optimizer: int = 0,
    step: int = 1,
    nesterov: bool = False,
    decoupled: bool = False,
) -> np.ndarray:
    """The int64 ``config`` array of the raw loss_grad / train_step (CONFIG_SLOTS)."""
    return np.array(
        (loss, weights_end, optimizer, step, nesterov, decoupled), dtype=np.int64
    )


def pack_hyper(
    *,
    label_smoothing: float = 0.0,
    l2: float = 0.0,
    lr: float = 0.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> np.ndarray:
    """The float64 ``hyper`` array of the raw loss_grad / train_step (HYPER_SLOTS)."""
    return np.array(
        (label_smoothing, l2, lr, momentum, weight_decay, beta1, beta2, eps),
        dtype=np.float64,
    )


#: Every piece of the train_step workspace starts on a multiple of this many elements
#: (kernels/tuning.py).
TRAIN_WORK_ALIGN = tuning.WORK_ALIGN


def _round_up(size: int) -> int:
    return -(-size // TRAIN_WORK_ALIGN) * TRAIN_WORK_ALIGN


def train_workspace_layout(layout: np.ndarray, n: int) -> tuple[np.ndarray, int, int]:
    """How train_step carves its flat workspace for a batch of ``n`` rows.

    In order, for every layer l: y_l = f(z_l) (n x out_l), then z_l (n x out_l, only
    when keep_z), then dx_l, the gradient w.r.t. the layer's input (n x in_l, not for
    layer 0); last the gradient of the logits (n x out_last). Each piece is rounded up
    to a multiple of :data:`TRAIN_WORK_ALIGN` elements. Every backend uses this rule.

    Returns ``(offsets, dlogits_offset, total)``: offsets is an (L, 3) int64 array of
    the y, z and dx offsets (-1 where absent), total the workspace length.
    """
    layout = np.asarray(layout)
    n_layers = layout.shape[0]
    offsets = np.full((n_layers, 3), -1, dtype=np.int64)
    off = 0
    for i in range(n_layers):
        k, m, keep = int(layout[i, 2]), int(layout[i, 3]), int(layout[i, 5])
        offsets[i, 0] = off
        off += _round_up(n * m)
        if keep:
            offsets[i, 1] = off
            off += _round_up(n * m)
        if i > 0:
            offsets[i, 2] = off
            off += _round_up(n * k)
    dlogits = off
    off += _round_up(n * int(layout[-1, 3])) if n_layers else 0
    return offsets, dlogits, off


def forward_workspace_layout(layout: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """How the forward kernel carves its flat workspace for ``n`` rows: the output
    f(z_l) (n x out_l) of every layer but the last, in order, each rounded up to a
    multiple of :data:`TRAIN_WORK_ALIGN` elements. Every backend uses this rule.

    Returns ``(offsets, total)``: offsets is an (L - 1,) int64 array.
    """
    layout = np.asarray(layout)
    offsets = np.zeros(max(layout.shape[0] - 1, 0), dtype=np.int64)
    off = 0
    for i in range(offsets.shape[0]):
        offsets[i] = off
        off += _round_up(n * int(layout[i, 3]))
    return offsets, off


_EMPTY = {dt: np.empty(0, dtype=dt) for dt in FLOAT_DTYPES}
_EMPTY_LABELS = np.empty(0, dtype=np.intp)
_EMPTY_TARGETS = {dt: np.empty((0, 0), dtype=dt) for dt in FLOAT_DTYPES}


def activation_code(activation: str | int) -> int:
    """Return the integer code of an activation name (ValueError if unknown)."""
    if isinstance(activation, (int, np.integer)) and not isinstance(activation, bool):
        if int(activation) in ACTIVATIONS.values():
            return int(activation)
    elif isinstance(activation, str):
        name = ACTIVATION_ALIASES.get(activation.lower(), activation.lower())
        if name in ACTIVATIONS:
            return ACTIVATIONS[name]
    raise ValueError(
        f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
    )


# --------------------------------------------------------------------------- checks
_F32, _F64 = FLOAT_DTYPES


def _array(name: str, a: Any, ndim: int | None = None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    dt = a.dtype
    # identity first: the checks run on every call of every kernel
    if dt is not _F32 and dt is not _F64 and dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def _same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    first = None
    for a in arrays.values():
        if a is None:
            continue
        if first is None:
            first = a.dtype
        elif a.dtype != first:
            listing = ", ".join(
                f"{n}={a.dtype}" for n, a in arrays.items() if a is not None
            )
            raise TypeError(
                f"mixed dtypes ({listing}): all arrays must share one dtype"
            )
    return first


def _out(
    name: str, out: Any, shape: tuple[int, ...], dtype: np.dtype, *inputs: np.ndarray
) -> np.ndarray:
    """Return a validated output buffer, or a new one when ``out`` is None."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    flags = _array(name, out).flags
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype is not dtype and out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not flags.writeable:
        raise ValueError(f"{name} is read-only")
    if out.size:
        for a in inputs:
            if a is not None and a.size and _may_overlap(out, flags.owndata, a):
                raise ValueError(f"{name} must not overlap an input array")
    return out


def _may_overlap(out: np.ndarray, out_owns: bool, a: np.ndarray) -> bool:
    """np.may_share_memory, skipped for two distinct arrays that each own their
    memory (they cannot overlap; the check runs on every call of every kernel)."""
    if out_owns and a is not out and a.base is None and a.flags.owndata:
        return False
    return np.may_share_memory(out, a)


def _finite_float(name: str, value: Any, low: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def _labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels has shape {labels.shape}, expected ({n},)")
    if n:
        # one reduction: seen as unsigned, a negative label is huge too
        as_unsigned = labels
        if labels.dtype.kind == "i":
            as_unsigned = labels.astype(np.intp, copy=False).view(np.uintp)
        if as_unsigned.max() >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes}); got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
    return np.ascontiguousarray(labels, dtype=np.intp)


def _index_array(name: str, a: Any, bound: int | None = None) -> np.ndarray:
    """A 1-D C-contiguous intp array of row indices (in [0, bound) when given)."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.ndim != 1:
        raise TypeError(f"{name} must be a 1-D integer numpy.ndarray")
    if a.dtype != np.intp or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous of dtype intp (int64)")
    if bound is not None and a.size and (a.min() < 0 or a.max() >= bound):
        raise ValueError(f"{name} must lie in [0, {bound})")
    return a


def _loss_options(
    sample_weight: Any, label_smoothing: Any, n: int, **ref: np.ndarray
) -> float:
    """Check sample_weight ((n,), the dtype of the one ``ref`` array) and return
    label_smoothing in [0, 1]."""
    _sample_weight(sample_weight, n, **ref)
    eps = _finite_float("label_smoothing", label_smoothing, 0.0)
    if eps > 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {eps}")
    return eps


def _sample_weight(sample_weight: Any, n: int, **ref: np.ndarray) -> None:
    """Check sample_weight: None, or (n,) of the dtype of the one ``ref`` array."""
    if sample_weight is not None:
        _array("sample_weight", sample_weight, 1)
        _same_dtype(**ref, sample_weight=sample_weight)
        if sample_weight.shape != (n,):
            raise ValueError(
                f"sample_weight has shape {sample_weight.shape}, expected ({n},)"
            )


def _sq_norm_buffer(out: Any) -> None:
    """``sq_norm_out`` of the optimizer updates: None or a writeable float64 (1,)."""
    if out is None:
        return
    _array("sq_norm_out", out)
    if out.dtype != np.float64:
        raise TypeError(f"sq_norm_out must be float64, got dtype {out.dtype}")
    if out.shape != (1,) or not out.flags.writeable:
        raise ValueError(
            f"sq_norm_out must be writeable with shape (1,), got shape {out.shape}"
        )


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


# -------------------------------------------------------------------------- backend
class Backend:
    """The public kernel API of one backend, with validation and allocation.

    Parameters
    ----------
    name : str
        Registry name ("numpy", "numba", "cython").
    raw : module
        Module (or namespace) holding the raw kernels of :data:`RAW_KERNELS`.
    info : dict, optional
        Facts shown by ``fastnn.show_config()`` (threading layer, OpenMP, ...).
    """

    def __init__(self, name: str, raw: ModuleType, info: dict | None = None) -> None:
        missing = [k for k in RAW_KERNELS if not hasattr(raw, k)]
        if missing:
            raise ImportError(f"backend {name!r} lacks kernels {missing}")
        self.name = name
        self.raw = raw
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"<fastnn backend {self.name!r}>"

    @property
    def pins_blas(self) -> bool:
        """Whether the kernels pin BLAS to one thread around their GEMM blocks
        themselves (kernels/cy/_blas_pin.h): then a ``num_threads`` block leaves
        BLAS's count alone (``blas=False``). Otherwise (the NumPy backend, and the
        compiled ones without BLAS thread control, e.g. Numba without the Cython
        extension) the products run on BLAS's own threads, at the block's count."""
        return bool(getattr(self.raw, "BLAS_PINNED", False))

    # ---------------------------------------------------------------- matmul
    def matmul(
        self,
        a: np.ndarray,
        b: np.ndarray,
        out: np.ndarray | None = None,
        *,
        trans_a: bool = False,
        trans_b: bool = False,
        accumulate: bool = False,
    ) -> np.ndarray:
        """C = op(A) @ op(B) (+ C when ``accumulate``); op transposes when flagged."""
        _array("a", a, 2)
        _array("b", b, 2)
        dtype = _same_dtype(a=a, b=b, out=out)
        m, k = a.shape[::-1] if trans_a else a.shape
        k2, n = b.shape[::-1] if trans_b else b.shape
        if k != k2:
            raise ValueError(
                f"matmul shapes do not agree: op(a) is {(m, k)}, op(b) is {(k2, n)}"
            )
        if accumulate and out is None:
            raise ValueError("accumulate=True needs an out buffer")
        out = _out("out", out, (m, n), dtype, a, b)
        self.raw.matmul(a, b, out, bool(trans_a), bool(trans_b), bool(accumulate))
        return out

    # ----------------------------------------------------------- activations
    def activation_forward(
        self,
        z: np.ndarray,
        activation: str = "relu",
        out: np.ndarray | None = None,
        *,
        alpha: float = 0.01,
    ) -> np.ndarray:
        """y = f(z), element-wise. ``out`` may be ``z`` itself (in place)."""
        _array("z", z)
        act = activation_code(activation)
        alpha = _finite_float("alpha", alpha)
        if out is not z:
            out = _out("out", out, z.shape, z.dtype, z)
        self.raw.activation_forward(_flat(z), _flat(out), act, alpha)
        return out

    def activation_backward(
        self,
        dy: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        activation: str = "relu",
        out: np.ndarray | None = None,
        *,
        alpha: float = 0.01,
    ) -> np.ndarray:
        """dz = dy * f'(z). sigmoid/tanh read y = f(z); the others read z.

        For relu and leaky_relu (alpha >= 0) y may be passed as z. ``out`` may be
        ``dy`` (in place).
        """
        for name, arr in (("dy", dy), ("z", z), ("y", y)):
            _array(name, arr)
            if arr.shape != dy.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {dy.shape}")
        _same_dtype(dy=dy, z=z, y=y)
        act = activation_code(activation)
        alpha = _finite_float("alpha", alpha)
        if out is not dy:
            out = _out("out", out, dy.shape, dy.dtype, z, y)
        self.raw.activation_backward(
            _flat(dy), _flat(z), _flat(y), _flat(out), act, alpha
        )
        return out

    # ---------------------------------------------------------------- linear
    def _linear_shapes(
        self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
    ) -> tuple[int, int, int]:
        _array("x", x, 2)
        _array("w", w, 2)
        if b is not None:
            _array("b", b, 1)
        n, k = x.shape
        if w.shape[0] != k:
            raise ValueError(
                f"x has {k} features but w has shape {w.shape} (in_features, "
                "out_features)"
            )
        m = w.shape[1]
        if b is not None and b.shape != (m,):
            raise ValueError(f"b has shape {b.shape}, expected ({m},)")
        return n, k, m

    def linear_forward(
        self,
        x: np.ndarray,
        w: np.ndarray,
        b: np.ndarray | None = None,
        activation: str = "identity",
        out: np.ndarray | None = None,
        *,
        z_out: np.ndarray | None = None,
        alpha: float = 0.01,
    ) -> np.ndarray:
        """y = f(x @ w + b), bias and activation fused; z = x @ w + b to ``z_out``."""
        n, _, m = self._linear_shapes(x, w, b)
        dtype = _same_dtype(x=x, w=w, b=b)
        act = activation_code(activation)
        alpha = _finite_float("alpha", alpha)
        out = _out("out", out, (n, m), dtype, x, w, b)
        if z_out is not None:
            z_out = _out("z_out", z_out, (n, m), dtype, x, w, b, out)
        self.raw.linear_forward(
            x,
            w,
            _EMPTY[dtype] if b is None else b,
            out,
            _EMPTY[dtype] if z_out is None else z_out,
            act,
            alpha,
        )
        return out

    def linear_backward(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        w: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        activation: str = "identity",
        *,
        dw_out: np.ndarray | None = None,
        db_out: np.ndarray | None = None,
        dx_out: np.ndarray | None = None,
        dz_out: np.ndarray | None = None,
        compute_db: bool = True,
        compute_dx: bool = True,
        weight_decay: float = 0.0,
        alpha: float = 0.01,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Backward of y = f(x @ w + b).

        dz = dy * f'(z); dw = x^T dz + weight_decay * w; db = sum over rows of dz;
        dx = dz w^T. ``dz_out`` is a workspace and may be ``dy`` itself. Returns
        ``(dw, db, dx)``; db / dx are None when not computed.
        """
        n, k, m = self._linear_shapes(x, w, None)
        for name, arr in (("dy", dy), ("z", z), ("y", y)):
            _array(name, arr, 2)
            if arr.shape != (n, m):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, m)}")
        dtype = _same_dtype(dy=dy, x=x, w=w, z=z, y=y)
        act = activation_code(activation)
        alpha = _finite_float("alpha", alpha)
        weight_decay = _finite_float("weight_decay", weight_decay, 0.0)
        if dz_out is not dy:
            dz_out = _out("dz_out", dz_out, (n, m), dtype, x, w, z, y)
        dw_out = _out("dw_out", dw_out, (k, m), dtype, dy, x, w, z, y, dz_out)
        if compute_db:
            db_out = _out("db_out", db_out, (m,), dtype, dy, x, w, z, y, dz_out)
        if compute_dx:
            dx_out = _out("dx_out", dx_out, (n, k), dtype, dy, x, w, z, y, dz_out)
        empty = _EMPTY[dtype]
        self.raw.linear_backward(
            dy,
            x,
            w,
            z,
            y,
            dz_out,
            dw_out,
            db_out if compute_db else empty,
            dx_out if compute_dx else empty,
            act,
            alpha,
            weight_decay,
        )
        return dw_out, db_out if compute_db else None, dx_out if compute_dx else None

    # ------------------------------------------------------------------ loss
    def softmax_cross_entropy(
        self,
        logits: np.ndarray,
        labels: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        label_smoothing: float = 0.0,
        grad_out: np.ndarray | None = None,
        compute_grad: bool = True,
        row_loss_out: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray | None]:
        """Fused softmax cross-entropy: mean loss and its gradient w.r.t. the logits.

        Per row: lse = m + log sum exp(z - m), l_i = lse - sum_k t_k z_k with target
        t = (1 - eps) onehot(y) + eps / K. loss = (1/n) sum_i w_i l_i and
        grad_i = w_i (softmax(z_i) - t_i) / n. An empty batch gives a NaN loss.
        Returns ``(loss, grad)`` (grad None when not computed).
        """
        _array("logits", logits, 2)
        n, n_classes = logits.shape
        dtype = logits.dtype
        if n_classes == 0:
            raise ValueError("logits must have at least one class column")
        labels = _labels(labels, n, n_classes)
        eps = _loss_options(sample_weight, label_smoothing, n, logits=logits)
        empty = _EMPTY[dtype]
        if compute_grad:
            grad_out = _out("grad_out", grad_out, (n, n_classes), dtype, logits)
        if row_loss_out is not None:
            row_loss_out = _out("row_loss_out", row_loss_out, (n,), dtype, logits)
        loss = self.raw.softmax_cross_entropy(
            logits,
            labels,
            empty if sample_weight is None else sample_weight,
            grad_out if compute_grad else empty,
            empty if row_loss_out is None else row_loss_out,
            eps,
        )
        return float(loss), grad_out if compute_grad else None

    def squared_error(
        self,
        pred: np.ndarray,
        target: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        grad_out: np.ndarray | None = None,
        compute_grad: bool = True,
        row_loss_out: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray | None]:
        """Fused squared error: mean loss and its gradient w.r.t. the predictions.

        Per row l_i = 0.5 ||pred_i - target_i||^2 (summed over the outputs in
        float64); loss = (1/n) sum_i w_i l_i and grad_i = w_i (pred_i - target_i) / n.
        NaN or inf in a row gives that row's loss and gradient NaN/inf. An empty batch
        gives a NaN loss. Returns ``(loss, grad)`` (grad None when not computed).
        """
        _array("pred", pred, 2)
        _array("target", target, 2)
        dtype = pred.dtype
        if target.dtype is not dtype:  # the same dtype is nearly always one object
            _same_dtype(pred=pred, target=target)
        n, k = pred.shape
        if target.shape != pred.shape:
            raise ValueError(
                f"target has shape {target.shape}, expected {pred.shape} (as pred)"
            )
        if k == 0:
            raise ValueError("pred must have at least one output column")
        if sample_weight is not None:
            _sample_weight(sample_weight, n, pred=pred)
        empty = _EMPTY[dtype]
        if compute_grad:
            grad_out = _out("grad_out", grad_out, (n, k), dtype, pred, target)
        if row_loss_out is not None:
            row_loss_out = _out("row_loss_out", row_loss_out, (n,), dtype, pred, target)
        loss = self.raw.squared_error(
            pred,
            target,
            empty if sample_weight is None else sample_weight,
            grad_out if compute_grad else empty,
            empty if row_loss_out is None else row_loss_out,
        )
        return float(loss), grad_out if compute_grad else None

    def softmax(self, logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Row-wise softmax exp(z - lse(z)); ``out`` may be ``logits`` (in place)."""
        _array("logits", logits, 2)
        if out is not logits:
            out = _out("out", out, logits.shape, logits.dtype, logits)
        self.raw.softmax(logits, out)
        return out

    # ------------------------------------------------------------- optimizers
    def _param_group(self, **arrays: np.ndarray | None) -> None:
        shape = arrays["param"].shape
        for name, arr in arrays.items():
            if arr is None:
                continue
            _array(name, arr)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
        _same_dtype(**arrays)
        for name in ("param", "velocity", "m", "v"):
            arr = arrays.get(name)
            if arr is not None and not arr.flags.writeable:
                raise ValueError(f"{name} is updated in place and must be writeable")

    def sgd_update(
        self,
        param: np.ndarray,
        grad: np.ndarray,
        velocity: np.ndarray | None = None,
        *,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        sq_norm_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """In-place SGD step, PyTorch's formulation (dampening 0).

        g = grad + weight_decay * param; v = momentum * v + g;
        param -= lr * (g + momentum * v if nesterov else v). Returns ``param``.
        ``sq_norm_out`` (float64, shape (1,)) receives sum(param**2) *before* the step,
        read in the same pass (the L2 penalty of the loss this gradient belongs to).
        """
        self._param_group(param=param, grad=grad, velocity=velocity)
        _sq_norm_buffer(sq_norm_out)
        lr = _finite_float("lr", lr, 0.0)
        momentum = _finite_float("momentum", momentum, 0.0)
        weight_decay = _finite_float("weight_decay", weight_decay, 0.0)
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov momentum requires momentum > 0")
        if momentum > 0.0 and velocity is None:
            raise ValueError("momentum > 0 needs a velocity buffer")
        vel = _flat(velocity) if velocity is not None else _EMPTY[param.dtype]
        sq = self.raw.sgd_update(
            _flat(param), _flat(grad), vel, lr, momentum, bool(nesterov), weight_decay,
            sq_norm_out is not None,
        )  # fmt: skip
        if sq_norm_out is not None:
            sq_norm_out[0] = sq
        return param

    def adam_update(
        self,
        param: np.ndarray,
        grad: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        *,
        step: int,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        sq_norm_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """In-place Adam (``decoupled=False``) or AdamW step, PyTorch's formulation.

        ``step`` counts from 1. Adam adds weight_decay * param to the gradient; AdamW
        multiplies param by (1 - lr * weight_decay) first. m = b1 m + (1-b1) g;
        v = b2 v + (1-b2) g^2; param -= lr m_hat / (sqrt(v_hat) + eps).
        ``sq_norm_out``: as in :meth:`sgd_update`.
        """
        self._param_group(param=param, grad=grad, m=m, v=v)
        _sq_norm_buffer(sq_norm_out)
        step = operator.index(step)
        if step < 1:
            raise ValueError(f"step counts from 1, got {step}")
        lr = _finite_float("lr", lr, 0.0)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= _finite_float(name, beta) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {beta}")
        eps = _finite_float("eps", eps, 0.0)
        weight_decay = _finite_float("weight_decay", weight_decay, 0.0)
        sq = self.raw.adam_update(
            _flat(param),
            _flat(grad),
            _flat(m),
            _flat(v),
            lr,
            float(beta1),
            float(beta2),
            eps,
            step,
            weight_decay,
            bool(decoupled),
            sq_norm_out is not None,
        )
        if sq_norm_out is not None:
            sq_norm_out[0] = sq
        return param

    # ------------------------------------------------------- whole train step
    def train_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        params: np.ndarray,
        grads: np.ndarray,
        layout: np.ndarray,
        alphas: np.ndarray,
        work: np.ndarray | None = None,
        *,
        loss: str = "softmax_cross_entropy",
        sample_weight: np.ndarray | None = None,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        weights_end: int | None = None,
        optimizer: str = "sgd",
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        step: int = 1,
        velocity: np.ndarray | None = None,
        m: np.ndarray | None = None,
        v: np.ndarray | None = None,
    ) -> tuple[float, int]:
        """One optimizer step of a Linear(+activation) stack, as one compiled call.

        Forward (``y_l = f_l(y_{l-1} @ W_l + b_l)``, ``y_{-1} = x``), the fused loss
        on the last output, backward through every layer into ``grads``, then the
        optimizer update of ``params`` in place: ``params[:weights_end]`` (the
        weights) with ``weight_decay``, the rest (the biases) without. When
        ``params[:weights_end]`` holds every layer's weight matrix and no bias (a
        model's flat buffer), the L2 term's gradient ``l2 * W`` is added by the
        update, which reads W anyway, not by backward (a pass over the weights
        less): ``grads`` keeps the data term's gradient, and ``grads + l2 * W``,
        rounded as ``linear_backward`` adds it, is bitwise :meth:`loss_grad`'s; for
        any other ``weights_end`` backward adds it to every dW, as
        :meth:`loss_grad` does. Either way the update steps with
        :meth:`loss_grad`'s gradient. Otherwise exactly the kernel calls of
        the layer-by-layer path (``linear_forward``, ``softmax_cross_entropy`` or
        ``squared_error``, ``linear_backward``, ``sgd_update`` / ``adam_update``),
        in the same order, with no Python between them in the compiled backends:
        the updated parameters are bitwise that path's.

        Parameters
        ----------
        x : (n, in_0) array.
        y : the loss's target: (n,) integer labels in [0, out_last) for
            ``"softmax_cross_entropy"`` (the last output are the logits); an
            (n, out_last) array of x's dtype for ``"squared_error"`` (the last output
            are the predictions, the identity output for plain regression) and for
            ``"sigmoid_cross_entropy"`` (0/1 targets; the last output are the logits
            z, p = 1 / (1 + exp(-z)); row loss -sum_j [y log p' + (1 - y) log(1 -
            p')] with p' = p clipped to [eps, 1 - eps], eps the dtype's machine
            epsilon, as scikit-learn's binary log loss; gradient w (p - y) / n).
        params, grads : 1-D arrays holding every weight and bias (see ``layout``).
        layout : (L, 6) int64 array, one row per Linear, columns
            :data:`TRAIN_LAYOUT_COLUMNS`.
        alphas : (L,) float64, the leaky_relu slope of each layer.
        work : 1-D array of at least ``train_workspace_layout(layout, n)[2]`` elements
            (allocated when None); carved as documented there, so after the call
            it holds the activations, the last outputs and the last gradients.
        loss : a name of :data:`TRAIN_LOSSES`.
        sample_weight : (n,) array of x's dtype, as :meth:`softmax_cross_entropy` /
            :meth:`squared_error`.
        label_smoothing : as :meth:`softmax_cross_entropy` (0 for the other losses).
        l2 : the loss's (l2 / 2) ||W||^2 term: added to the returned loss (summed in
            float64 over ``params[:weights_end]`` before the update) and ``l2 * W``
            to every layer's dW that the update steps with (not to ``grads`` when
            ``params[:weights_end]`` holds the weights and no bias).
        weights_end : params[:weights_end] are the weights (all of params when None).
        optimizer : "sgd", "adam" or "adamw".
        lr, momentum, nesterov, weight_decay, beta1, beta2, eps, step : as
            :meth:`sgd_update` / :meth:`adam_update` (``step`` counts from 1).
        velocity : SGD's momentum buffer (required when momentum > 0); m, v : Adam's
            moments (required for Adam/AdamW). Shaped like ``params``, updated in
            place.

        Returns ``(loss, n_correct)``: the mean batch loss before the update (L2 term
        included) and, for softmax cross-entropy, the number of rows whose logits'
        argmax is the label (0 for the other losses).

        Everything is validated here, once per call. A caller that steps many times
        with the same buffers (``fastnn.Sequential.fit``) validates the first call of
        each batch shape through this method and then calls ``self.raw.train_step``
        directly (parameters in :data:`RAW_KERNELS` order, the scalars packed by
        :func:`pack_config` / :func:`pack_hyper`, absent arrays empty): later steps
        then skip these checks.
        """
        net = self._check_network(
            "train_step", x, y, params, grads, layout, alphas, work, loss,
            sample_weight, label_smoothing, l2, weights_end,
        )  # fmt: skip
        empty = _EMPTY[x.dtype]
        config, hyper, states = self._check_update(
            net, params, optimizer, lr, momentum, nesterov, weight_decay, beta1,
            beta2, eps, step, velocity, m, v,
        )  # fmt: skip
        outputs = {"params": params, "grads": grads, "work": net["work"], **states}
        _no_overlap(outputs, x=x, sample_weight=sample_weight, labels=net["labels"],
                    targets=net["targets"])  # fmt: skip
        loss_value, correct = self.raw.train_step(
            x,
            net["labels"],
            net["targets"],
            empty if sample_weight is None else sample_weight,
            params,
            grads,
            net["layout"],
            alphas,
            net["work"],
            config,
            hyper,
            states["velocity"],
            states["m"],
            states["v"],
        )
        return float(loss_value), int(correct)

    def train_steps(
        self,
        X: np.ndarray,
        y: np.ndarray,
        rows: np.ndarray,
        batch_size: int,
        params: np.ndarray,
        grads: np.ndarray,
        layout: np.ndarray,
        alphas: np.ndarray,
        work: np.ndarray | None = None,
        *,
        x_rows: np.ndarray | None = None,
        loss: str = "softmax_cross_entropy",
        sample_weight: np.ndarray | None = None,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        weights_end: int | None = None,
        optimizer: str = "sgd",
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        step: int = 1,
        velocity: np.ndarray | None = None,
        m: np.ndarray | None = None,
        v: np.ndarray | None = None,
        step_eps: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``len(rows) // batch_size`` optimizer steps in one compiled call, each on
        a batch the kernel gathers itself.

        Step ``s`` is :meth:`train_step` on the training rows
        ``idx = rows[s * batch_size:(s + 1) * batch_size]``: ``x = X[idx]`` (or
        ``X[x_rows[idx]]``), ``y[idx]``, ``sample_weight[idx]``, optimizer step
        ``step + s``; the weights come out bitwise as from those calls one by one.
        Small networks spend most of a step in the Python between two calls;
        here there is none.

        Parameters
        ----------
        X : (N_X, in_0) array; the training rows are all of it, or ``x_rows``.
        y : the targets of the N training rows, as :meth:`train_step`'s ``y``.
        rows : 1-D C-contiguous intp array, a multiple of ``batch_size`` long, of
            training row indices in [0, N).
        batch_size : rows per step (>= 1).
        x_rows : None (training row r is X's row r, N == N_X) or an (N,)
            C-contiguous intp array of X's row of each training row.
        sample_weight : (N,) array of X's dtype, or None.
        step_eps : None, or a C-contiguous float64 array of Adam's epsilon for each
            step (in place of ``eps``; scikit-learn folds its bias correction into
            epsilon; SGD ignores it).
        Everything else as :meth:`train_step` (``work`` sized for ``batch_size``
        rows).

        Returns ``(losses, correct)``: float64 and int64 arrays, one entry per step,
        as :meth:`train_step` returns them.
        """
        _array("X", X, 2)
        bs = operator.index(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        rows = _index_array("rows", rows)
        if rows.shape[0] == 0 or rows.shape[0] % bs:
            raise ValueError(
                f"rows has {rows.shape[0]} entries; expected a positive multiple "
                f"of batch_size={bs}"
            )
        if np.ndim(y) not in (1, 2):
            raise ValueError("y must hold one label or target row per training row")
        n = np.shape(y)[0]
        if x_rows is None:
            x_rows = _EMPTY_LABELS
            if n != X.shape[0]:
                raise ValueError(
                    f"y has {n} rows and X {X.shape[0]}: pass x_rows to train on "
                    "some of X's rows"
                )
        else:
            x_rows = _index_array("x_rows", x_rows, X.shape[0])
            if x_rows.shape[0] != n:
                raise ValueError(f"x_rows has {x_rows.shape[0]} entries, y {n}")
        net = self._check_network(
            "train_steps", X, y, params, grads, layout, alphas, work, loss,
            sample_weight, label_smoothing, l2, weights_end, n_rows=n, batch_rows=bs,
        )  # fmt: skip
        _index_array("rows", rows, n)
        config, hyper, states = self._check_update(
            net, params, optimizer, lr, momentum, nesterov, weight_decay, beta1,
            beta2, eps, step, velocity, m, v,
        )  # fmt: skip
        outputs = {"params": params, "grads": grads, "work": net["work"], **states}
        _no_overlap(outputs, X=X, sample_weight=sample_weight, labels=net["labels"],
                    targets=net["targets"], rows=rows, x_rows=x_rows)  # fmt: skip
        dtype, k = X.dtype, rows.shape[0] // bs
        if operator.index(step) > np.iinfo(np.int64).max - (k - 1):
            raise ValueError(
                f"step={step}: the last of the {k} steps is numbered past int64"
            )
        if step_eps is None:
            step_eps = _EMPTY[np.dtype(np.float64)]
        elif (
            not isinstance(step_eps, np.ndarray)
            or step_eps.dtype != np.float64
            or step_eps.shape != (k,)
            or not step_eps.flags.c_contiguous
        ):
            raise ValueError(f"step_eps must be a C-contiguous float64 array of {k}")
        elif not (np.isfinite(step_eps).all() and (step_eps >= 0).all()):
            raise ValueError("step_eps must be finite and >= 0")
        labels, targets = net["labels"], net["targets"]
        empty = _EMPTY[dtype]
        losses, correct = np.empty(k, np.float64), np.empty(k, np.int64)
        self.raw.train_steps(
            X,
            x_rows,
            rows,
            labels,
            targets,
            empty if sample_weight is None else sample_weight,
            np.empty((bs, X.shape[1]), dtype),
            np.empty(bs if labels.size else 0, np.intp),
            np.empty((bs, targets.shape[1]) if targets.size else (0, 0), dtype),
            empty if sample_weight is None else np.empty(bs, dtype),
            params,
            grads,
            net["layout"],
            alphas,
            net["work"],
            config,
            hyper,
            states["velocity"],
            states["m"],
            states["v"],
            step_eps,
            losses,
            correct,
        )
        return losses, correct

    @staticmethod
    def _check_update(
        net, params, optimizer, lr, momentum, nesterov, weight_decay, beta1, beta2,
        eps, step, velocity, m, v,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        """The update's checks train_step and train_steps share: the packed
        ``(config, hyper, states)`` (states: velocity, m, v, empty when unused)."""
        dtype = params.dtype
        if not isinstance(optimizer, str):
            raise TypeError(f"optimizer must be a name, got {optimizer!r}")
        name = optimizer.lower()
        if name not in ("sgd", "adam", "adamw"):
            raise ValueError(
                f"unknown optimizer {optimizer!r}; expected sgd, adam or adamw"
            )
        code = TRAIN_OPTIMIZERS["sgd" if name == "sgd" else "adam"]
        lr = _finite_float("lr", lr, 0.0)
        momentum = _finite_float("momentum", momentum, 0.0)
        weight_decay = _finite_float("weight_decay", weight_decay, 0.0)
        eps = _finite_float("eps", eps, 0.0)
        for bname, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= _finite_float(bname, beta) < 1.0:
                raise ValueError(f"{bname} must lie in [0, 1), got {beta}")
        step = operator.index(step)
        if step < 1:
            raise ValueError(f"step counts from 1, got {step}")
        empty = _EMPTY[dtype]
        if code == 0:
            if nesterov and momentum == 0.0:
                raise ValueError("nesterov momentum requires momentum > 0")
            needed = ("velocity",) if momentum > 0.0 else ()
        else:
            needed = ("m", "v")
        states = {"velocity": velocity, "m": m, "v": v}
        for sname, buf in states.items():
            if sname not in needed:
                states[sname] = empty
                continue
            if buf is None:
                raise ValueError(
                    f"{sname} is required ("
                    f"{'momentum' if code == 0 else 'moment'} buffer of the shape of "
                    "params)"
                )
            _array(sname, buf, 1)
            _same_dtype(params=params, **{sname: buf})
            if buf.shape != params.shape or not buf.flags.writeable:
                raise ValueError(
                    f"{sname} must be a writeable array shaped like params"
                )
        config = pack_config(
            loss=net["loss"], weights_end=net["weights_end"], optimizer=code,
            step=step, nesterov=bool(nesterov), decoupled=name == "adamw",
        )  # fmt: skip
        hyper = pack_hyper(
            label_smoothing=net["label_smoothing"], l2=net["l2"], lr=lr,
            momentum=momentum, weight_decay=weight_decay, beta1=float(beta1),
            beta2=float(beta2), eps=eps,
        )  # fmt: skip
        return config, hyper, states

    # --------------------------------------------------------- forward pass
    def forward(
        self,
        x: np.ndarray,
        params: np.ndarray,
        layout: np.ndarray,
        alphas: np.ndarray,
        work: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The outputs of a Linear(+activation) stack for the rows of ``x``, as one
        compiled call: each layer's :meth:`linear_forward` in turn, so the result
        is bitwise that of calling them one by one.

        ``params``, ``layout`` and ``alphas`` as :meth:`train_step` (``params`` is
        only read; the layout's keep_z column is ignored). ``work`` receives the
        hidden layers' outputs (:func:`forward_workspace_layout`; allocated when
        None), ``out`` the last layer's, shape (n, out_last). Returns ``out``.
        """
        _array("x", x, 2)
        _array("params", params, 1)
        dtype = _same_dtype(x=x, params=params)
        n, k0 = x.shape
        layout = self._train_layout(layout, params.shape[0], k0)
        self._alphas(alphas, layout.shape[0])
        _, total = forward_workspace_layout(layout, n)
        work = _work(work, total, x)
        out = _out("out", out, (n, int(layout[-1, 3])), dtype)
        _no_overlap({"work": work, "out": out}, x=x, params=params)
        if n:
            self.raw.forward(x, params, layout, alphas, work, out)
        return out

    # ---------------------------------------------------- loss and gradients
    def loss_grad(
        self,
        x: np.ndarray,
        y: np.ndarray,
        params: np.ndarray,
        grads: np.ndarray,
        layout: np.ndarray,
        alphas: np.ndarray,
        work: np.ndarray | None = None,
        *,
        loss: str = "softmax_cross_entropy",
        sample_weight: np.ndarray | None = None,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        weights_end: int | None = None,
        input_grad: np.ndarray | None = None,
    ) -> tuple[float, int]:
        """Loss and gradients of a Linear(+activation) stack, as one compiled call.

        The forward, fused loss and backward of :meth:`train_step`, with no update:
        ``grads`` receives d loss / d params (``dW`` includes ``l2 * W``) and, when
        ``input_grad`` (an array shaped like ``x``) is given, d loss / d x. The loss
        includes the (l2 / 2) ||W||^2 term over ``params[:weights_end]``, summed in
        float64 in the same fixed chunks as :meth:`train_step`, so both return the
        same loss. Parameters as :meth:`train_step`; ``params`` is only read.

        Returns ``(loss, n_correct)`` (n_correct 0 but for softmax cross-entropy).
        """
        net = self._check_network(
            "loss_grad", x, y, params, grads, layout, alphas, work, loss,
            sample_weight, label_smoothing, l2, weights_end, writes_params=False,
        )  # fmt: skip
        empty = _EMPTY[x.dtype]
        if input_grad is None:
            input_grad = np.empty((0, x.shape[1]), x.dtype)  # 2-D, as the kernels
        else:
            _array("input_grad", input_grad, 2)
            _same_dtype(x=x, input_grad=input_grad)
            if input_grad.shape != x.shape or not input_grad.flags.writeable:
                raise ValueError(
                    f"input_grad must be a writeable array of shape {x.shape}"
                )
        outputs = {"grads": grads, "work": net["work"], "input_grad": input_grad}
        _no_overlap(
            outputs, x=x, sample_weight=sample_weight, labels=net["labels"],
            targets=net["targets"], params=params,
        )  # fmt: skip
        config = pack_config(loss=net["loss"], weights_end=net["weights_end"])
        hyper = pack_hyper(label_smoothing=net["label_smoothing"], l2=net["l2"])
        loss_value, correct = self.raw.loss_grad(
            x,
            net["labels"],
            net["targets"],
            empty if sample_weight is None else sample_weight,
            params,
            grads,
            net["layout"],
            alphas,
            net["work"],
            config,
            hyper,
            input_grad,
        )
        return float(loss_value), int(correct)

    def _check_network(
        self, op, x, y, params, grads, layout, alphas, work, loss, sample_weight,
        label_smoothing, l2, weights_end, writes_params=True, n_rows=None,
        batch_rows=None,
    ) -> dict[str, Any]:  # fmt: skip
        """The checks train_step, train_steps and loss_grad share; the normalised
        arguments. ``n_rows``: the rows of y and sample_weight, ``batch_rows``: the
        rows of one step, which size the workspace (None: x's)."""
        _array("x", x, 2)
        dtype = x.dtype
        n, k0 = x.shape
        n = n if n_rows is None else n_rows
        if n == 0:
            raise ValueError(f"{op} needs a non-empty batch")
        for name, arr in (("params", params), ("grads", grads)):
            _array(name, arr, 1)
            if (name == "grads" or writes_params) and not arr.flags.writeable:
                raise ValueError(f"{name} is updated in place and must be writeable")
        _same_dtype(x=x, params=params, grads=grads)
        n_params = params.shape[0]
        if grads.shape != params.shape:
            raise ValueError(f"grads has shape {grads.shape}, expected {params.shape}")
        layout = self._train_layout(layout, n_params, k0)
        self._alphas(alphas, layout.shape[0])
        n_out = int(layout[-1, 3])
        if loss not in TRAIN_LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of "
                             f"{sorted(TRAIN_LOSSES)}")  # fmt: skip
        if loss in FLOAT_TARGET_LOSSES:
            _array("y", y, 2)
            _same_dtype(x=x, y=y)
            if y.shape != (n, n_out):
                raise ValueError(
                    f"y has shape {y.shape}, expected {(n, n_out)} ({loss} "
                    "targets: one row per sample, one column per output)"
                )
            labels, targets = _EMPTY_LABELS, y
        else:
            labels, targets = _labels(y, n, n_out), _EMPTY_TARGETS[dtype]
        ls = _loss_options(sample_weight, label_smoothing, n, x=x)
        if ls and loss != "softmax_cross_entropy":
            raise ValueError("label_smoothing applies to softmax cross-entropy only")
        l2 = _finite_float("l2", l2, 0.0)
        weights_end = n_params if weights_end is None else operator.index(weights_end)
        if not 0 <= weights_end <= n_params:
            raise ValueError(
                f"weights_end must lie in [0, {n_params}], got {weights_end}"
            )
        _, _, total = train_workspace_layout(
            layout, n if batch_rows is None else batch_rows
        )
        work = _work(work, total, x)
        return {"labels": labels, "targets": targets, "loss": TRAIN_LOSSES[loss],
                "layout": layout, "label_smoothing": ls, "l2": l2,
                "weights_end": weights_end, "work": work}  # fmt: skip

    @staticmethod
    def _alphas(alphas: Any, n_layers: int) -> None:
        """Check the (n_layers,) float64 leaky_relu slopes of a layout's layers."""
        if not isinstance(alphas, np.ndarray) or alphas.dtype != np.float64:
            raise TypeError("alphas must be a float64 numpy.ndarray")
        if alphas.shape != (n_layers,) or not alphas.flags.c_contiguous:
            raise ValueError(f"alphas must be C-contiguous of shape ({n_layers},)")
        if not np.all(np.isfinite(alphas)):
            raise ValueError("alphas must be finite")

    @staticmethod
    def _train_layout(layout: Any, n_params: int, n_features: int) -> np.ndarray:
        """Check train_step's layout table (see TRAIN_LAYOUT_COLUMNS)."""
        if not isinstance(layout, np.ndarray) or layout.dtype != np.int64:
            raise TypeError("layout must be an int64 numpy.ndarray")
        ncol = len(TRAIN_LAYOUT_COLUMNS)
        if layout.ndim != 2 or layout.shape[1] != ncol or layout.shape[0] < 1:
            raise ValueError(f"layout must have shape (n_layers >= 1, {ncol})")
        if not layout.flags.c_contiguous:
            raise ValueError("layout must be C-contiguous")
        spans = []
        width = n_features
        for i, (w_off, b_off, k, m, act, keep) in enumerate(layout.tolist()):
            if k != width or m < 1:
                raise ValueError(
                    f"layout row {i}: in_features {k} (expected {width}), "
                    f"out_features {m} (expected >= 1)"
                )
            if act not in ACTIVATIONS.values() or keep not in (0, 1):
                raise ValueError(f"layout row {i}: bad activation {act} or keep_z")
            spans.append((w_off, w_off + k * m))
            if b_off != -1:
                spans.append((b_off, b_off + m))
            width = m
        spans.sort()
        end = 0
        for lo, hi in spans:
            if lo < end or hi > n_params:
                raise ValueError(
                    "layout offsets must give disjoint weights and biases inside params"
                )
            end = hi
        return layout


def _work(work: Any, total: int, x: np.ndarray) -> np.ndarray:
    """A validated flat workspace of at least ``total`` elements of x's dtype, or a
    new one when ``work`` is None."""
    if work is None:
        return np.empty(total, dtype=x.dtype)
    _array("work", work, 1)
    _same_dtype(x=x, work=work)
    if work.shape[0] < total or not work.flags.writeable:
        raise ValueError(
            f"work must be writeable with at least {total} elements, got "
            f"{work.shape[0]}"
        )
    return work


def _no_overlap(outputs: dict[str, np.ndarray], **inputs: np.ndarray | None) -> None:
    """ValueError when an output buffer shares memory with any other argument."""
    everything = {**inputs, **outputs}
    for oname, out in outputs.items():
        for iname, arr in everything.items():
            if (
                iname != oname
                and arr is not None
                and arr.size
                and out.size
                and np.may_share_memory(out, arr)
            ):
                raise ValueError(f"{oname} must not overlap {iname}")


def raw_signature(func: Any) -> tuple[str, ...]:
    """Parameter names of a raw kernel (Numba dispatchers expose ``py_func``)."""
    func = getattr(func, "py_func", func)
    return tuple(inspect.signature(func).parameters)
