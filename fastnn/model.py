"""Sequential models: fit / predict / evaluate on top of the kernel contract.

Memory layout (why it looks like this):

* Every parameter lives in one flat, 64-byte aligned buffer laid out as
  ``[weights of layer 0, 1, ... | biases of layer 0, 1, ...]`` (each segment padded
  to whole cache lines); :class:`~fastnn.layers.Linear` layers hold views into it.
  Gradients live in a twin buffer. An optimizer step is then two fused kernel calls
  (weights with decay, biases without) whatever the depth, and a compiled
  whole-step path can take the two flat buffers as they are.
* Activations, pre-activations and gradients of one batch live in a workspace
  allocated once per batch size (the last, partial batch gets its own).
* The forward pass fuses each Linear with the activation that follows it into one
  ``linear_forward`` call; the backward pass writes ``dz`` over the incoming
  gradient in place.

The per-batch work is one method, :meth:`Sequential._train_step`. For a stack of
Linear(+activation) layers trained with SGD, Adam or AdamW on the numba or cython
backend it is one compiled call (the backend's ``train_step`` kernel: forward, loss,
backward and update with no Python between the ops); the training workspace is then
one flat buffer carved as that kernel expects, and the layer-by-layer path reads the
same buffers. ``compiled_step=False`` (model or fit) forces the layer-by-layer path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import operator
import signal
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import kernels
from ._buffers import aligned_copy, aligned_empty, aligned_zeros, padded_size
from ._validation import (
    check_int,
    check_n_features,
    check_sample_weight,
    check_X,
    check_y,
)
from .callbacks import Callback, History
from .kernels.contract import pack_config, pack_hyper, train_workspace_layout
from .layers import Activation, Layer, Linear, activation_layer, layer_from_config
from .losses import SoftmaxCrossEntropy
from .optim import SGD, Adam, AdamW, Optimizer, optimizer_from_config
from .progress import Progress
from .standard_callbacks import as_callback
from .threads import num_threads

__all__ = ["MLP", "NotFittedError", "Sequential"]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
_INFERENCE_ROWS = 4096  # rows per forward chunk in predict / evaluate
_WORKSPACE_CACHE = 4  # training batch shapes kept (full, partial, a few more)
_INFERENCE_CACHE = 2  # inference shapes kept per thread: full chunk + the last
_EMPTY = {dt: np.empty(0, dtype=dt) for dt in _DTYPES.values()}
_EMPTY_TARGETS = {dt: np.empty((0, 0), dtype=dt) for dt in _DTYPES.values()}


class NotFittedError(ValueError, AttributeError):
    """Raised when predicting with a model that has not been trained or loaded."""


@dataclass
class _Stage:
    """One fused kernel call of the forward pass: Linear (+ activation), or an
    activation on its own."""

    linear: Linear | None
    activation: str
    alpha: float
    # The backward of relu / leaky_relu (alpha >= 0), sigmoid, tanh and identity can
    # read the output y in place of z, so z is stored only where it is needed.
    keep_z: bool


@dataclass
class _Workspace:
    """Buffers of one batch size."""

    x: np.ndarray
    y: np.ndarray
    sw: np.ndarray
    out: list[np.ndarray]
    z: list[np.ndarray | None]
    dx: list[np.ndarray | None]
    dlogits: np.ndarray | None
    # training workspaces of a compiled-step model: the one flat buffer that out, z,
    # dx and dlogits are views of (contract.train_workspace_layout); None otherwise
    work: np.ndarray | None = None


@dataclass
class _TrainState:
    """Position of a fit in its epochs: what a checkpoint needs to resume exactly."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # batches completed in the whole fit
    loss_sum: float = 0.0  # sum of batch mean loss * batch size, this epoch
    correct: int = 0
    seen: int = 0
    elapsed: float = 0.0  # seconds spent in this epoch before a resume
    perm: np.ndarray | None = None
    stopped: bool = False
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def nothing_left(self, epochs: int) -> bool:
        """Whether a (resumed) fit of ``epochs`` epochs has no epoch left to run.

        A fit that finished its epochs is continued when asked for more (the
        checkpoint of its last epoch is the starting point); one stopped by a
        callback (early stopping) stays stopped.
        """
        if self.finished and self.epoch < epochs and not self.stopped:
            self.finished = False
        return self.finished


class Sequential:
    """A stack of layers trained with softmax cross-entropy.

    Parameters
    ----------
    layers : sequence of Layer
        ``Linear`` and activation layers. Each Linear followed by an activation runs
        as one fused kernel call. The last layer's output are the logits.
    loss : SoftmaxCrossEntropy, optional
        Default: plain softmax cross-entropy.
    optimizer : Optimizer, optional
        Default: ``Adam(lr=1e-3)``.
    dtype : {np.float32, np.float64}, default=np.float32
        Dtype of parameters and computation.
    backend : str, optional
        Kernel backend ("auto", "numpy", "numba", "cython"); None follows
        ``fastnn.set_backend``.
    n_threads : int, optional
        Threads for training and inference (None: leave the process setting).
    compiled_step : bool, default=True
        Run each training step as one compiled kernel call (``train_step``) when
        the backend is numba or cython, every layer is a Linear with at most one
        activation after it, and the optimizer is SGD, Adam or AdamW; other models
        (a lone activation layer, e.g. ``Linear, ReLU, Tanh``) always take the
        layer-by-layer path. Both give the same weights (the compiled step calls
        the same kernel cores in the same order); False forces the layer-by-layer
        path, e.g. to compare them. ``fit(compiled_step=...)`` overrides it for
        one fit.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (set by ``fit``); output ``k`` scores ``classes_[k]``.
    n_features_in_ : int
        Input width.
    stop_training : bool
        Set by a callback to stop ``fit`` after the current epoch.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        loss: SoftmaxCrossEntropy | None = None,
        optimizer: Optimizer | None = None,
        dtype: Any = np.float32,
        backend: str | None = None,
        n_threads: int | None = None,
        compiled_step: bool = True,
    ) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a Sequential model needs at least one layer")
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"{layer!r} is not a fastnn layer")
        self.loss = loss if loss is not None else SoftmaxCrossEntropy()
        if not isinstance(self.loss, SoftmaxCrossEntropy):
            raise TypeError("loss must be a fastnn.SoftmaxCrossEntropy")
        self.optimizer = optimizer if optimizer is not None else Adam()
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError("optimizer must be a fastnn optimizer (SGD, Adam, AdamW)")
        self.dtype = np.dtype(dtype)
        if self.dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if backend is not None:
            kernels.get_backend(backend)  # fail early on unknown names
        self.backend = backend
        if n_threads is not None and (operator.index(n_threads) < 1):
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.n_threads = n_threads
        if not isinstance(compiled_step, (bool, np.bool_)):
            raise ValueError(f"compiled_step must be a bool, got {compiled_step!r}")
        self.compiled_step = bool(compiled_step)
        self._compiled_override: bool | None = None  # fit(compiled_step=...)
        self._step_checked: set[tuple[int, str]] = set()  # validated batch shapes
        self.stop_training = False
        self._stages = self._plan(self.layers)
        self._allocate_parameters()
        self._train_layout, self._train_alphas = self._compiled_layout()
        self._initialized = False
        self._workspaces: OrderedDict[tuple[int, bool], _Workspace] = OrderedDict()
        # inference buffers per thread: concurrent predict calls never share one
        self._inference = threading.local()
        self._interrupted = False

    # ------------------------------------------------------------ structure
    @staticmethod
    def _plan(layers: list[Layer]) -> list[_Stage]:
        stages: list[_Stage] = []
        width = None
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, Linear):
                if width is not None and layer.in_features != width:
                    raise ValueError(
                        f"layer {i} ({layer!r}) expects {layer.in_features} inputs "
                        f"but the previous Linear produces {width}"
                    )
                width = layer.out_features
                act, alpha = "identity", 0.01
                if i + 1 < len(layers) and isinstance(layers[i + 1], Activation):
                    act, alpha = layers[i + 1].activation, layers[i + 1].alpha
                    i += 1
                stages.append(_Stage(layer, act, alpha, _needs_z(act, alpha)))
            elif isinstance(layer, Activation):
                # z of a lone activation is its input, already kept by the stage before
                stages.append(_Stage(None, layer.activation, layer.alpha, False))
            else:
                raise TypeError(f"unsupported layer {layer!r}")
            i += 1
        if width is None:
            raise ValueError("a Sequential model needs at least one Linear layer")
        return stages

    @property
    def linears(self) -> list[Linear]:
        """The Linear layers, in order."""
        return [s.linear for s in self._stages if s.linear is not None]

    @property
    def n_features_in_(self) -> int:
        """Input width (the first Linear's in_features)."""
        return self.linears[0].in_features

    @property
    def n_outputs_(self) -> int:
        """Output width (number of classes)."""
        return self.linears[-1].out_features

    def _allocate_parameters(self) -> None:
        """One flat buffer for all parameters: weights first, then biases."""
        specs = []  # (name, layer, attribute, shape)
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        for lin in self.linears:
            specs.append(
                (
                    f"{index[id(lin)]}.weight",
                    lin,
                    "weight",
                    (lin.in_features, lin.out_features),
                )
            )
        for lin in self.linears:
            if lin.use_bias:
                specs.append(
                    (f"{index[id(lin)]}.bias", lin, "bias", (lin.out_features,))
                )
        offsets, total, n_decay = [], 0, 0
        for _, _, attr, shape in specs:
            size = math.prod(shape)
            offsets.append(total)
            total += padded_size(size, self.dtype)
            if attr == "weight":
                n_decay = total
        self._params = aligned_zeros(total, self.dtype)
        self._grads = aligned_zeros(total, self.dtype)
        self._n_decay = n_decay
        self._param_specs = []
        for (name, _, _, shape), off in zip(specs, offsets, strict=True):
            self._param_specs.append((name, slice(off, off + math.prod(shape)), shape))
        self._bind_layer_views()
        for lin in self.linears:
            if not lin.use_bias:
                lin.bias = None

    def _bind_layer_views(self) -> None:
        """Point every Linear's weight / bias (and their gradients) into the flat
        buffers; parameter names are "<layer index>.<attribute>"."""
        for name, sl, shape in self._param_specs:
            index, attr = name.split(".")
            lin = self.layers[int(index)]
            setattr(lin, attr, self._params[sl].reshape(shape))
            setattr(lin, "grad_" + attr, self._grads[sl].reshape(shape))

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # Buffers are rebuilt on demand and the thread-local cache cannot be
        # pickled; the backend stays a name (self.backend), resolved on use.
        state = self.__dict__.copy()
        state["_workspaces"] = OrderedDict()
        state["_step_checked"] = set()
        del state["_inference"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._inference = threading.local()
        # pickle copies each view on its own and drops the 64-byte alignment:
        # realign the flat buffers, then point the layers and optimizer at them
        self._params = aligned_copy(self._params, self.dtype)
        self._grads = aligned_copy(self._grads, self.dtype)
        self._bind_layer_views()
        if self.optimizer._params is not None:
            self.optimizer._params = self._params
            self.optimizer._grads = self._grads

    def _compiled_layout(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """train_step's layout table and alphas, or (None, None) when a stage is a
        lone activation (such models keep the layer-by-layer path)."""
        if any(st.linear is None for st in self._stages):
            return None, None
        offsets = {}
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        for name, sl, _ in self._param_specs:
            offsets[name] = sl.start
        rows = []
        for st in self._stages:
            lin = st.linear
            i = index[id(lin)]
            rows.append(
                (
                    offsets[f"{i}.weight"],
                    offsets.get(f"{i}.bias", -1),
                    lin.in_features,
                    lin.out_features,
                    kernels.activation_code(st.activation),
                    int(st.keep_z),
                )
            )
        layout = np.array(rows, dtype=np.int64).reshape(len(rows), 6)
        alphas = np.array([st.alpha for st in self._stages], dtype=np.float64)
        return layout, alphas

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """(name, array) for every parameter; names as PyTorch's ("0.weight")."""
        return [(n, self._params[sl].reshape(s)) for n, sl, s in self._param_specs]

    def parameters(self) -> list[np.ndarray]:
        """Every parameter array (views: writing to them changes the model)."""
        return [p for _, p in self.named_parameters()]

    def get_flat_parameters(self) -> np.ndarray:
        """A copy of the flat parameter buffer (layout of this model only)."""
        return self._params.copy()

    def set_flat_parameters(self, flat: np.ndarray) -> None:
        """Overwrite every parameter from :meth:`get_flat_parameters` output."""
        flat = np.asarray(flat)
        if flat.shape != self._params.shape:
            raise ValueError(
                f"flat parameters have shape {flat.shape}, "
                f"expected {self._params.shape}"
            )
        np.copyto(self._params, flat)
        self._initialized = True

    def initialize(self, seed: int | np.random.Generator | None = None) -> Sequential:
        """(Re)draw every weight from its layer's init (biases zero); returns self.

        Also resets the optimizer's state.
        """
        rng = (
            seed
            if isinstance(seed, np.random.Generator)
            else np.random.default_rng(seed)
        )
        self._params.fill(0)
        for lin in self.linears:
            lin.weight[...] = lin.init_weight(rng)
        self.optimizer.reset()
        self._initialized = True
        return self

    def _kernels(self) -> kernels.Backend:
        return kernels.get_backend(self.backend)

    # ------------------------------------------------------------ workspaces
    def _workspace(self, n: int, train: bool) -> _Workspace:
        """Buffers for a batch of ``n`` rows: training ones shared by the model
        (one fit at a time), inference ones per thread."""
        key = (n, train)
        if train:
            cache, size = self._workspaces, _WORKSPACE_CACHE
        else:
            cache = getattr(self._inference, "cache", None)
            if cache is None:
                cache = self._inference.cache = OrderedDict()
            size = _INFERENCE_CACHE
        ws = cache.get(key)
        if ws is not None:
            cache.move_to_end(key)
            return ws
        dt = self.dtype
        if train and self._train_layout is not None:
            ws = self._train_workspace(n)
            cache[key] = ws
            while len(cache) > size:
                cache.popitem(last=False)
            return ws
        outs, zs, dxs = [], [], []
        width = self.n_features_in_
        for s, st in enumerate(self._stages):
            m = st.linear.out_features if st.linear is not None else width
            outs.append(aligned_empty((n, m), dt))
            zs.append(aligned_empty((n, m), dt) if train and st.keep_z else None)
            # dx of a Linear stage: gradient w.r.t. its input (skipped for stage 0)
            need_dx = train and st.linear is not None and s > 0
            dxs.append(aligned_empty((n, width), dt) if need_dx else None)
            width = m
        ws = _Workspace(
            x=aligned_empty((n, self.n_features_in_), dt) if train else None,
            y=np.empty(n, dtype=np.intp) if train else None,
            sw=aligned_empty(n, dt) if train else None,
            out=outs,
            z=zs,
            dx=dxs,
            dlogits=aligned_empty((n, width), dt) if train else None,
        )
        cache[key] = ws
        while len(cache) > size:
            cache.popitem(last=False)
        return ws

    def _train_workspace(self, n: int) -> _Workspace:
        """A training workspace carved from one flat buffer, as train_step expects."""
        dt = self.dtype
        offsets, d_off, total = train_workspace_layout(self._train_layout, n)
        work = aligned_empty(total, dt)
        outs, zs, dxs = [], [], []
        rows = zip(offsets.tolist(), self._train_layout, strict=True)
        for (y_off, z_off, dx_off), row in rows:
            k, m = int(row[2]), int(row[3])
            outs.append(work[y_off : y_off + n * m].reshape(n, m))
            zs.append(work[z_off : z_off + n * m].reshape(n, m) if z_off >= 0 else None)
            dxs.append(
                work[dx_off : dx_off + n * k].reshape(n, k) if dx_off >= 0 else None
            )
        m = self.n_outputs_
        return _Workspace(
            x=aligned_empty((n, self.n_features_in_), dt),
            y=np.empty(n, dtype=np.intp),
            sw=aligned_empty(n, dt),
            out=outs,
            z=zs,
            dx=dxs,
            dlogits=work[d_off : d_off + n * m].reshape(n, m),
            work=work,
        )

    # ------------------------------------------------------- forward/backward
    def _forward(
        self, kb: kernels.Backend, x: np.ndarray, ws: _Workspace
    ) -> np.ndarray:
        """Run the stages on ``x``; return the logits buffer."""
        a = x
        for s, st in enumerate(self._stages):
            if st.linear is not None:
                kb.linear_forward(
                    a,
                    st.linear.weight,
                    st.linear.bias,
                    st.activation,
                    ws.out[s],
                    z_out=ws.z[s],
                    alpha=st.alpha,
                )
            else:
                kb.activation_forward(a, st.activation, ws.out[s], alpha=st.alpha)
            a = ws.out[s]
        return a

    def _forward_backward(
        self, xb: np.ndarray, yb: np.ndarray, sample_weight: np.ndarray | None
    ) -> tuple[float, int]:
        """Loss (with the L2 term) of one batch, gradients into the flat buffer.

        Returns ``(loss, number of rows whose argmax is the label)``.
        """
        kb = self._kernels()
        n = xb.shape[0]
        ws = self._workspace(n, True)
        logits = self._forward(kb, xb, ws)
        loss, _ = kb.softmax_cross_entropy(
            logits,
            yb,
            sample_weight=sample_weight,
            label_smoothing=self.loss.label_smoothing,
            grad_out=ws.dlogits,
        )
        correct = int(np.count_nonzero(logits.argmax(axis=1) == yb))
        l2 = self.loss.l2
        dy = ws.dlogits
        for s in range(len(self._stages) - 1, -1, -1):
            st = self._stages[s]
            x = xb if s == 0 else ws.out[s - 1]
            y = ws.out[s]
            if st.linear is not None:
                lin = st.linear
                kb.linear_backward(
                    dy,
                    x,
                    lin.weight,
                    ws.z[s] if st.keep_z else y,
                    y,
                    st.activation,
                    dw_out=lin.grad_weight,
                    db_out=lin.grad_bias if lin.use_bias else None,
                    dx_out=ws.dx[s],
                    dz_out=dy,
                    compute_db=lin.use_bias,
                    compute_dx=s > 0,
                    weight_decay=l2,
                    alpha=st.alpha,
                )
                dy = ws.dx[s]
            elif s > 0:  # a lone activation: its input is the previous stage's output
                kb.activation_backward(dy, x, y, st.activation, dy, alpha=st.alpha)
        if l2:
            loss += self.loss.penalty(self._params[: self._n_decay])
        return loss, correct

    def _train_step(
        self, xb: np.ndarray, yb: np.ndarray, sample_weight: np.ndarray | None
    ) -> tuple[float, int]:
        """One optimizer step on a batch: forward, loss, backward, update.

        ``xb`` (n, n_features) in the model dtype, ``yb`` class indices (intp),
        ``sample_weight`` (n,) or None; all C-contiguous. Returns the batch loss
        (before the update) and the count of correctly classified rows.

        One compiled ``train_step`` call when :meth:`_uses_compiled_step` (same
        weights as the layer-by-layer path); the optimizer's ``steps``,
        ``current_lr`` and state buffers stay the source of truth either way.
        """
        kb = self._kernels()
        if not self._uses_compiled_step(kb):
            loss, correct = self._forward_backward(xb, yb, sample_weight)
            self.optimizer.step()
            return loss, correct
        n = xb.shape[0]
        ws = self._workspace(n, True)
        opt = self.optimizer
        empty = _EMPTY[self.dtype]
        if type(opt) is SGD:
            code, momentum, nesterov = 0, opt.momentum, opt.nesterov
            beta1, beta2, eps, decoupled = 0.9, 0.999, 1e-8, False
            velocity, m, v = opt.state.get("velocity", empty), empty, empty
        else:
            code, momentum, nesterov = 1, 0.0, False
            beta1, beta2, eps, decoupled = opt.beta1, opt.beta2, opt.eps, opt.decoupled
            velocity, m, v = empty, opt.state["m"], opt.state["v"]
        step = opt.steps + 1
        check_key = (n, kb.name)
        if check_key in self._step_checked:
            # validated before for this batch shape in this fit: call the raw kernel
            # (parameters in contract.RAW_KERNELS order), ~10 us less per step
            config = pack_config(
                weights_end=self._n_decay, optimizer=code, step=step,
                nesterov=nesterov, decoupled=decoupled,
            )  # fmt: skip
            hyper = pack_hyper(
                label_smoothing=self.loss.label_smoothing, l2=self.loss.l2,
                lr=opt.current_lr, momentum=momentum, weight_decay=opt.weight_decay,
                beta1=beta1, beta2=beta2, eps=eps,
            )  # fmt: skip
            loss, correct = kb.raw.train_step(
                xb, yb, _EMPTY_TARGETS[self.dtype],
                empty if sample_weight is None else sample_weight, self._params,
                self._grads, self._train_layout, self._train_alphas, ws.work, config,
                hyper, velocity, m, v,
            )  # fmt: skip
        else:
            loss, correct = kb.train_step(
                xb, yb, self._params, self._grads, self._train_layout,
                self._train_alphas, ws.work, sample_weight=sample_weight,
                label_smoothing=self.loss.label_smoothing, l2=self.loss.l2,
                weights_end=self._n_decay,
                optimizer=("sgd", "adamw" if decoupled else "adam")[code],
                lr=opt.current_lr, momentum=momentum, nesterov=nesterov,
                weight_decay=opt.weight_decay, beta1=beta1, beta2=beta2, eps=eps,
                step=step, velocity=velocity if velocity.size else None,
                m=m if m.size else None, v=v if v.size else None,
            )  # fmt: skip
            self._step_checked.add(check_key)
        opt.steps = step
        return float(loss), int(correct)

    def _uses_compiled_step(self, kb: kernels.Backend | None = None) -> bool:
        """Whether a training step is one compiled ``train_step`` call.

        True when compiled steps are on (``compiled_step``, or fit's override), the
        backend is numba or cython, every stage is a Linear (+ activation) and the
        optimizer is exactly SGD, Adam or AdamW, bound to this model's buffers.
        """
        wanted = self._compiled_override
        if wanted is None:
            wanted = self.compiled_step
        if not wanted or self._train_layout is None:
            return False
        kb = self._kernels() if kb is None else kb
        return (
            kb.name in ("numba", "cython")
            and type(self.optimizer) in (SGD, Adam, AdamW)
            and self.optimizer._params is self._params
        )

    @contextlib.contextmanager
    def _fit_step_mode(self, compiled_step: bool | None):
        """fit(compiled_step=...) for one fit; shapes are validated afresh."""
        previous = self._compiled_override
        self._compiled_override = compiled_step
        self._step_checked = set()
        try:
            yield
        finally:
            self._compiled_override = previous
            self._step_checked = set()

    def loss_and_gradients(
        self, X: Any, y: Any, sample_weight: Any = None
    ) -> tuple[float, list[np.ndarray]]:
        """Loss of the whole of (X, y) and its gradient for every parameter.

        Uses the model's loss (class weights, label smoothing, L2) without updating
        anything. Gradients come back as copies in :meth:`parameters` order.
        """
        self._require_fitted()
        Xc = self._check_predict_X(X)
        y_idx = self._encode(check_y(y, Xc.shape[0]))
        sw = self._combined_weights(y_idx, sample_weight, Xc.shape[0])
        with num_threads(self.n_threads):
            loss, _ = self._forward_backward(Xc, np.ascontiguousarray(y_idx), sw)
        return loss, [
            self._grads[sl].reshape(s).copy() for _, sl, s in self._param_specs
        ]

    # --------------------------------------------------------------- labels
    def _encode(self, y: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """Class indices of labels ``y`` (ValueError on labels never seen)."""
        classes = self.classes_ if classes is None else classes
        try:
            idx = np.searchsorted(classes, y)
        except TypeError as exc:
            raise ValueError(
                f"y has labels not comparable with classes_: {exc}"
            ) from None
        idx = np.clip(idx, 0, len(classes) - 1)
        unseen = classes[idx] != y
        if np.any(unseen):
            raise ValueError(
                f"y contains previously unseen labels: {np.unique(y[unseen]).tolist()}"
            )
        return idx.astype(np.intp)

    def _resolve_classes(self, y: np.ndarray, classes: Any) -> np.ndarray:
        """The sorted class labels of a first fit (from y, or given)."""
        if classes is not None:
            classes = np.asarray(classes)
            uniq = np.unique(classes)
            if uniq.shape[0] != classes.shape[0]:
                raise ValueError("classes must not contain duplicates")
            classes = uniq
        else:
            try:
                classes = np.unique(y)
            except TypeError as exc:
                raise ValueError(f"labels must be mutually comparable: {exc}") from None
        if classes.shape[0] != self.n_outputs_:
            raise ValueError(
                f"y has {classes.shape[0]} classes but the model has {self.n_outputs_} "
                "outputs; the last Linear's out_features must equal the number of "
                "classes (pass classes= if some are absent from y)"
            )
        return classes

    def _combined_weights(
        self, y_idx: np.ndarray, sample_weight: Any, n: int, classes=None
    ) -> np.ndarray | None:
        """class_weight[y] * sample_weight in the model dtype (None: unweighted)."""
        classes = self.classes_ if classes is None else classes
        cw = self.loss.class_weights(classes, y_idx)
        if sample_weight is None and cw is None:
            return None
        w = (
            np.ones(n)
            if sample_weight is None
            else check_sample_weight(sample_weight, n)
        )
        if cw is not None:
            w = w * cw[y_idx]
        return aligned_copy(w, self.dtype)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any,
        epochs: int = 10,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        callbacks: Iterable[Callback] = (),
        seed: int | None = None,
        verbose: int = 1,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | str = "epoch",
        resume: bool = False,
        *,
        sample_weight: Any = None,
        classes: Any = None,
        compiled_step: bool | None = None,
    ) -> History:
        """Train on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels of any hashable, mutually comparable type (mapped through
            ``classes_``).
        epochs : int, default=10
            Total epochs; a resumed fit continues up to this count, also when the
            checkpoint's fit had finished with fewer (unless a callback stopped it).
        batch_size : int, default=32
            Rows per step (clipped to n_samples); the last, smaller batch is used.
        shuffle : bool, default=True
            Draw a new row order every epoch.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch ("val_loss", "val_accuracy").
        validation_split : float in [0, 1), default=0.0
            Hold out this stratified fraction of (X, y) for validation (ignored when
            ``validation_data`` is given).
        callbacks : iterable of Callback or callable
            E.g. :class:`~fastnn.EarlyStopping`, :class:`~fastnn.TerminateOnNaN`;
            a plain callable ``f(epoch, logs)`` is called after every epoch (as a
            :class:`fastnn.LambdaCallback`). Without TerminateOnNaN a diverging fit
            (loss NaN or infinite, e.g. from too large a learning rate) runs all
            its epochs, as in Keras, and ``predict`` then raises; its checkpoint is
            never overwritten with non-finite weights.
        seed : int, optional
            Seeds the weight initialisation (first fit only), the validation split
            and the shuffling: same seed, backend, dtype and thread count give
            bitwise-identical weights.
        verbose : int, default=1
            As in Keras: 0 silent; 1 one progress bar over the run on a terminal,
            one line per epoch otherwise; 2 one line per epoch. Lines are INFO
            records of the ``fastnn.train`` logger (see :mod:`fastnn.progress`).
        checkpoint : path, optional
            Write a resumable checkpoint here (atomically) every
            ``checkpoint_every`` and at the end.
        checkpoint_every : int or "epoch", default="epoch"
            An int k: every k optimizer steps; "epoch": after every epoch.
        resume : bool, default=False
            Continue from ``checkpoint`` if it exists (it must come from the same
            model, data and settings); otherwise start afresh.
        sample_weight : array-like of shape (n_samples,), optional
        classes : array-like, optional
            All class labels, when y might lack some (first fit only).
        compiled_step : bool, optional
            Override the model's ``compiled_step`` for this fit (False: the
            layer-by-layer path; the weights are the same either way).

        Returns
        -------
        History
            The metrics of every epoch (including those before a resume).
        """
        epochs, batch_size, verbose, checkpoint_every, callbacks = check_fit_args(
            epochs, batch_size, verbose, validation_split, checkpoint_every,
            callbacks, resume, checkpoint,
        )  # fmt: skip
        if compiled_step is not None and not isinstance(
            compiled_step, (bool, np.bool_)
        ):
            raise ValueError(
                f"compiled_step must be a bool or None, got {compiled_step!r}"
            )
        from . import checkpoint as ckpt_io

        if checkpoint is not None:  # fail now, not after the epochs
            ckpt_io.check_output_path(checkpoint, "checkpoint")
        X_all = check_X(X, self.dtype, type(self).__name__)
        check_n_features(X_all, self.n_features_in_, type(self).__name__)
        y_raw = check_y(y, X_all.shape[0])

        saved = None
        if resume and Path(checkpoint).exists():
            saved = ckpt_io.read(checkpoint)
            self._check_state(*saved, require_train_state=True)
            classes_ = saved[1]["classes"]
        elif hasattr(self, "classes_"):
            classes_ = self.classes_
        else:
            classes_ = self._resolve_classes(y_raw, classes)
        y_all = self._encode(y_raw, classes_)
        sw_all = self._combined_weights(y_all, sample_weight, X_all.shape[0], classes_)

        seed_seq = np.random.SeedSequence(
            saved[0]["train_state"]["seed_entropy"] if saved else seed
        )
        init_ss, split_ss, shuffle_ss = seed_seq.spawn(3)
        if validation_data is not None:
            X_tr, y_tr, sw_tr, x_rows = X_all, y_all, sw_all, None
            if (
                not isinstance(validation_data, (tuple, list))
                or len(validation_data) != 2
            ):
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = self._check_predict_X(validation_data[0])
            y_val = self._encode(check_y(validation_data[1], X_val.shape[0]), classes_)
        elif validation_split > 0:
            tr, va = _stratified_split(
                y_all, validation_split, np.random.Generator(np.random.PCG64(split_ss))
            )
            # X stays uncopied: training batches gather their rows through x_rows
            X_tr, x_rows, y_tr = X_all, tr, y_all[tr]
            sw_tr = None if sw_all is None else sw_all[tr]
            X_val, y_val = X_all[va], y_all[va]
        else:
            X_tr, y_tr, sw_tr, X_val, y_val = X_all, y_all, sw_all, None, None
            x_rows = None
        n = y_tr.shape[0]
        batch_size = min(batch_size, n)
        fit_settings = {
            "batch_size": batch_size,
            "shuffle": bool(shuffle),
            "validation_split": float(validation_split),
            "n_samples": int(X_all.shape[0]),
            # a resume must see the same data; hashing costs a pass over X, so only
            # runs that checkpoint pay for it
            "data_sha256": _fingerprint(X_all, y_all, sw_all) if checkpoint else None,
        }
        rng = np.random.Generator(np.random.PCG64(shuffle_ss))
        history = History()
        state = _TrainState()
        if saved:
            self._check_resume(saved, fit_settings, callbacks, n)
        # ---- nothing above mutated the model
        kb = self._kernels()
        self.classes_ = classes_
        if saved:
            self._set_state(*saved)
            history, state = resume_training_state(saved, rng, callbacks)
        elif not self._initialized:
            self.initialize(np.random.Generator(np.random.PCG64(init_ss)))
        self.optimizer.bind(kb, self._params, self._grads, self._n_decay)
        self.stop_training = state.stopped
        if state.nothing_left(epochs):
            return history
        if not saved:
            for cb in callbacks:
                cb.on_train_begin(self)

        def save_checkpoint() -> bool:
            """Write the checkpoint; False when skipped (diverged)."""
            if not np.isfinite(self._params).all():
                # diverged: the checkpoint keeps the last finite state
                if not self.stop_training:
                    warnings.warn(
                        "training diverged (non-finite weights): the checkpoint is "
                        "no longer updated; pass callbacks=[fastnn.TerminateOnNaN()]"
                        " to stop at the first non-finite epoch loss",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                return False
            ts = {
                "seed_entropy": seed_seq.entropy,
                "rng": rng.bit_generator.state,
                "history": history.to_dict(),
                "epoch": state.epoch,
                "batch": state.batch,
                "step": state.step,
                "loss_sum": state.loss_sum,
                "correct": state.correct,
                "seen": state.seen,
                "elapsed": state.elapsed,
                "stopped": bool(self.stop_training),
                "finished": state.finished,
                "fit": fit_settings,
                "callbacks": [],
            }
            arrays = {}
            if state.batch > 0 and state.perm is not None:
                arrays["train.perm"] = state.perm
            for i, cb in enumerate(callbacks):
                meta_i, arrays_i = cb.get_state()
                ts["callbacks"].append({"type": type(cb).__name__, "state": meta_i})
                for k, v in arrays_i.items():
                    arrays[f"callback.{i}.{k}"] = v
            ckpt_io.save(self, checkpoint, train_state=ts, extra_arrays=arrays)
            return True

        n_batches = -(-n // batch_size)
        with (
            num_threads(self.n_threads),
            _SigintGuard(self) as guard,
            self._fit_step_mode(None if compiled_step is None else bool(compiled_step)),
            Progress(verbose, epochs, n, state.epoch, state.seen) as progress,
        ):
            t_first = None
            while state.epoch < epochs and not self.stop_training:
                t0 = time.perf_counter()
                if state.batch == 0:
                    state.perm = rng.permutation(n) if shuffle else None
                    state.loss_sum, state.correct, state.seen = 0.0, 0, 0
                    state.elapsed = 0.0
                for b in range(state.batch, n_batches):
                    i, j = b * batch_size, min(n, (b + 1) * batch_size)
                    ws = self._workspace(j - i, True)
                    gather_batch(ws, X_tr, x_rows, y_tr, sw_tr, state.perm, i, j)
                    if t_first is None:
                        t_first = time.perf_counter()
                    loss, correct = self._train_step(
                        ws.x, ws.y, None if sw_tr is None else ws.sw
                    )
                    if history.first_step_time is None:
                        history.first_step_time = time.perf_counter() - t_first
                    state.loss_sum += loss * (j - i)
                    state.correct += correct
                    state.seen += j - i
                    state.batch = b + 1
                    state.step += 1
                    progress.step(
                        j - i,
                        state.loss_sum / state.seen
                        if b % 16 == 0 or b == n_batches - 1
                        else None,
                    )
                    if guard.interrupted or (
                        checkpoint is not None
                        and checkpoint_every != "epoch"
                        and state.step % checkpoint_every == 0
                    ):
                        state.elapsed += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        saved = checkpoint is not None and save_checkpoint()
                        if guard.interrupted:
                            raise _interrupted(checkpoint if saved else None)
                # ---- end of epoch
                state.elapsed += time.perf_counter() - t0
                logs = {
                    "loss": state.loss_sum / state.seen,
                    "accuracy": state.correct / state.seen,
                }
                if X_val is not None:
                    logs.update(
                        self._evaluate_encoded(X_val, y_val, None, "val_", False)
                    )
                logs["lr"] = self.optimizer.current_lr
                logs["time"] = state.elapsed
                logs["samples_per_sec"] = state.seen / max(state.elapsed, 1e-12)
                history.append(state.epoch, logs)
                self.optimizer.end_epoch(state.epoch + 1, logs)
                for cb in callbacks:
                    cb.on_epoch_end(state.epoch, logs, self)
                state.epoch += 1
                state.batch = 0
                state.perm = None
                progress.epoch_end(state.epoch, logs)
                saved = (
                    checkpoint is not None
                    and (checkpoint_every == "epoch" or guard.interrupted)
                    and save_checkpoint()
                )
                if guard.interrupted:
                    raise _interrupted(checkpoint if saved else None)
            for cb in callbacks:
                cb.on_train_end(self)
            state.finished = True
            if checkpoint is not None:
                save_checkpoint()
        return history

    # ------------------------------------------------------------ inference
    def _require_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                "with appropriate arguments before using this model."
            )

    def _check_predict_X(self, X: Any) -> np.ndarray:
        Xc = check_X(X, self.dtype, type(self).__name__)
        check_n_features(Xc, self.n_features_in_, type(self).__name__)
        return Xc

    def _logits_chunks(self, X: np.ndarray, check: bool = True):
        """Yield (start, stop, logits buffer) over row chunks of validated X.

        ``check``: raise ValueError on a non-finite score (X is finite, so the
        weights are not, or the arithmetic overflowed) rather than answer with NaN.
        fit's validation passes False: a diverging fit runs on, as in Keras.
        """
        kb = self._kernels()
        n = X.shape[0]
        for i in range(0, n, _INFERENCE_ROWS):
            j = min(n, i + _INFERENCE_ROWS)
            ws = self._workspace(j - i, False)
            logits = self._forward(kb, X[i:j], ws)
            if check and not np.isfinite(logits).all():
                self._raise_non_finite(X[i:j], logits, i)
            yield i, j, logits

    def _raise_non_finite(self, X: np.ndarray, logits: np.ndarray, start: int):
        if not np.isfinite(self._params).all():
            raise ValueError(
                "the model's weights hold NaN or infinity (training diverged); "
                "retrain with a smaller learning rate (fastnn.TerminateOnNaN stops "
                "such a fit at once)"
            )
        row = int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0])
        big = float(np.abs(X[row]).max())
        raise ValueError(
            f"X row {start + row} gives non-finite scores: its values (up to "
            f"{big:.3g}) overflow {self.dtype.name} arithmetic in the network; "
            "scale the features (e.g. StandardScaler) or use dtype=float64"
        )

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (pre-softmax scores), shape (n_samples, n_classes)."""
        self._require_fitted()
        Xc = self._check_predict_X(X)
        out = np.empty((Xc.shape[0], self.n_outputs_), dtype=self.dtype)
        with num_threads(self.n_threads):
            for i, j, logits in self._logits_chunks(Xc):
                out[i:j] = logits
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns as classes_."""
        self._require_fitted()
        Xc = self._check_predict_X(X)
        kb = self._kernels()
        out = np.empty((Xc.shape[0], self.n_outputs_), dtype=self.dtype)
        with num_threads(self.n_threads):
            for i, j, logits in self._logits_chunks(Xc):
                kb.softmax(logits, out[i:j])
        return out

    def confidence(self, X: Any, temperature: float = 1.0) -> dict[str, np.ndarray]:
        """Per-row confidence scores, for abstaining or flagging unusual inputs.

        With ``p = softmax(logits / temperature)``: ``"max_softmax"`` (max_k p_k),
        ``"entropy"`` (-sum_k p_k log p_k), ``"energy"`` (-T logsumexp(logits / T);
        low on familiar inputs) and ``"margin"`` (largest minus second-largest
        probability). See :func:`fastnn.calibration.confidence`.

        Returns
        -------
        dict of str to ndarray of shape (n_samples,), float64
        """
        from .calibration import confidence

        return confidence(self, X, temperature=temperature)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class label of each row (values from classes_)."""
        self._require_fitted()
        Xc = self._check_predict_X(X)
        idx = np.empty(Xc.shape[0], dtype=np.intp)
        with num_threads(self.n_threads):
            for i, j, logits in self._logits_chunks(Xc):
                np.argmax(logits, axis=1, out=idx[i:j])
        return self.classes_[idx]

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
        """Loss (as in training, L2 and label smoothing included) and accuracy.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``.
        """
        self._require_fitted()
        Xc = self._check_predict_X(X)
        y_idx = self._encode(check_y(y, Xc.shape[0]))
        sw = None
        if sample_weight is not None:
            sw = aligned_copy(
                check_sample_weight(sample_weight, Xc.shape[0]), self.dtype
            )
        with num_threads(self.n_threads):
            return self._evaluate_encoded(Xc, y_idx, sw, "")

    def _evaluate_encoded(
        self, X, y_idx, sw, prefix: str, check: bool = True
    ) -> dict[str, float]:
        kb = self._kernels()
        loss_sum, correct = 0.0, 0
        for i, j, logits in self._logits_chunks(X, check):
            loss, _ = kb.softmax_cross_entropy(
                logits,
                y_idx[i:j],
                sample_weight=None if sw is None else sw[i:j],
                label_smoothing=self.loss.label_smoothing,
                compute_grad=False,
            )
            loss_sum += loss * (j - i)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == y_idx[i:j]))
        n = X.shape[0]
        loss = loss_sum / n + self.loss.penalty(self._params[: self._n_decay])
        return {prefix + "loss": loss, prefix + "accuracy": correct / n}

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return self.evaluate(X, y)["accuracy"]

    # ------------------------------------------------------- save / restore
    def save(self, path: str | Path) -> None:
        """Write weights, classes, optimizer state and architecture to ``path``.

        The file is a ``.npz`` without pickled objects, written atomically; read it
        back with :func:`fastnn.load`.
        """
        from . import checkpoint

        checkpoint.save(self, path)

    def summary(self, print_fn: Any = print) -> str:
        """Print (with ``print_fn``; None: do not print) and return a Keras-style
        table of the layers: names and types, output shapes, parameter counts,
        and the totals."""
        from .summary import model_summary

        text = model_summary(self)
        if print_fn is not None:
            print_fn(text)
        return text

    def to_onnx(self, path: str | Path | None = None) -> Any:
        """Export the fitted model's inference graph to ONNX (opset
        :data:`fastnn.onnx_export.OPSET`): input ``input``, outputs ``label`` and
        ``probabilities``. Needs ``pip install "fastnn[onnx]"``.

        Parameters
        ----------
        path : path-like, optional
            Also write the model to this file (atomically).

        Returns
        -------
        onnx.ModelProto
        """
        from .onnx_export import to_onnx

        return to_onnx(self, path)

    def get_config(self) -> dict[str, Any]:
        """Architecture, loss, optimizer and dtype as JSON-compatible values."""
        return {
            "layers": [
                {"type": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ],
            **self._common_config(),
        }

    def _common_config(self) -> dict[str, Any]:
        return {
            "loss": self.loss.get_config(),
            "optimizer": self.optimizer.get_config(),
            "dtype": self.dtype.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> Sequential:
        """Build an (unfitted) model from :meth:`get_config` output."""
        config = dict(config)
        layers = [layer_from_config(spec) for spec in config.pop("layers")]
        return cls(layers, **_common_kwargs(config), **kwargs)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(metadata, arrays) describing this model for a checkpoint."""
        meta = {
            "model": {"class": type(self).__name__, "config": self.get_config()},
            "dtype": self.dtype.name,
            "params": [name for name, _, _ in self._param_specs],
            "optimizer": {
                "state_names": list(self.optimizer.state_names),
                "state": self.optimizer.state_dict(),
            },
            "fitted": hasattr(self, "classes_"),
        }
        arrays = {f"param.{n}": p for n, p in self.named_parameters()}
        for sname, buf in self.optimizer.state.items():
            for name, sl, shape in self._param_specs:
                arrays[f"optim.{sname}.{name}"] = buf[sl].reshape(shape)
        if hasattr(self, "classes_"):
            arrays["classes"] = _portable_classes(self.classes_)
        return meta, arrays

    def _check_state(
        self,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        require_train_state: bool = False,
    ) -> None:
        """Raise ValueError unless (meta, arrays) fit this model exactly."""
        from .checkpoint import CheckpointError

        check_meta(meta, arrays)
        mine = self.get_config()
        theirs = meta["model"]["config"]
        if meta["model"]["class"] in ("Sequential", "MLP"):
            mine_layers = _layers_signature(self)
            try:
                their_model = _MODEL_CLASSES[meta["model"]["class"]].from_config(theirs)
            except (ValueError, TypeError) as exc:
                raise CheckpointError(
                    f"checkpoint architecture is invalid: {exc}"
                ) from None
            if _layers_signature(their_model) != mine_layers:
                raise CheckpointError(
                    "checkpoint architecture does not match this model: "
                    f"{_layers_signature(their_model)} vs {mine_layers}"
                )
        if meta["dtype"] != self.dtype.name:
            raise CheckpointError(
                f"checkpoint dtype is {meta['dtype']}, "
                f"this model uses {self.dtype.name}"
            )
        for name, _, shape in self._param_specs:
            key = f"param.{name}"
            _expect_array(arrays, key, shape, self.dtype)
        # Optimizer state is restored when it has this optimizer's layout; a plain
        # model file loaded into a model with another optimizer keeps that one fresh.
        opt_names = tuple(meta["optimizer"]["state_names"])
        if opt_names == tuple(self.optimizer.state_names):
            for sname in opt_names:
                for name, _, shape in self._param_specs:
                    _expect_array(arrays, f"optim.{sname}.{name}", shape, self.dtype)
        elif require_train_state:
            raise CheckpointError(
                f"checkpoint optimizer state {list(opt_names)} does not match this "
                f"model's optimizer {self.optimizer!r}"
            )
        if meta["fitted"]:
            classes = arrays.get("classes")
            if classes is None or classes.shape != (self.n_outputs_,):
                raise CheckpointError(
                    f"checkpoint classes have shape "
                    f"{None if classes is None else classes.shape}, expected "
                    f"({self.n_outputs_},)"
                )
        if require_train_state:
            if meta.get("train_state") is None:
                raise CheckpointError(
                    "file is a saved model, not a training checkpoint"
                )
            if not meta["fitted"]:
                raise CheckpointError("training checkpoint has no classes")
            if mine["optimizer"] != theirs.get("optimizer") or mine[
                "loss"
            ] != theirs.get("loss"):
                raise CheckpointError(
                    "checkpoint was written with a different optimizer or loss: "
                    f"{theirs.get('optimizer')}, {theirs.get('loss')}"
                )

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Apply a checked state (see :meth:`_check_state`)."""
        for name, sl, shape in self._param_specs:
            self._params[sl].reshape(shape)[...] = arrays[f"param.{name}"]
        self._initialized = True
        opt_names = tuple(meta["optimizer"]["state_names"])
        kb = self._kernels()
        self.optimizer.bind(kb, self._params, self._grads, self._n_decay)
        if opt_names == tuple(self.optimizer.state_names):
            for sname in opt_names:
                buf = self.optimizer.state[sname]
                for name, sl, shape in self._param_specs:
                    buf[sl].reshape(shape)[...] = arrays[f"optim.{sname}.{name}"]
            self.optimizer.load_state_dict(meta["optimizer"]["state"])
        if meta["fitted"]:
            self.classes_ = np.array(arrays["classes"])

    def _check_resume(self, saved, fit_settings, callbacks, n_train) -> None:
        from .checkpoint import CheckpointError

        meta, arrays = saved
        ts = meta["train_state"]
        if ts.get("fit") != fit_settings:
            theirs = {
                k: v for k, v in (ts.get("fit") or {}).items() if k != "data_sha256"
            }
            mine = {k: v for k, v in fit_settings.items() if k != "data_sha256"}
            what = "settings" if theirs != mine else "training data"
            raise CheckpointError(
                f"checkpoint was written by a fit with different {what} "
                f"({theirs} vs {mine}); pass resume=False to start afresh"
            )
        try:
            probe = np.random.Generator(np.random.PCG64())
            probe.bit_generator.state = ts["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint RNG state is invalid: {exc}") from None
        n_batches = -(-n_train // fit_settings["batch_size"])
        if not 0 <= ts["batch"] <= n_batches:
            raise CheckpointError(f"checkpoint batch position {ts['batch']} is invalid")
        perm = arrays.get("train.perm")
        if ts["batch"] > 0 and fit_settings["shuffle"]:
            if (
                perm is None
                or perm.shape != (n_train,)
                or perm.dtype.kind not in "iu"
                or (not np.array_equal(np.sort(perm), np.arange(n_train)))
            ):
                raise CheckpointError(
                    "checkpoint shuffle permutation is missing or invalid"
                )
        saved_cbs = ts.get("callbacks", [])
        if [c["type"] for c in saved_cbs] != [type(cb).__name__ for cb in callbacks]:
            raise CheckpointError(
                "checkpoint was written with callbacks "
                f"{[c['type'] for c in saved_cbs]}"
                f", this fit has {[type(cb).__name__ for cb in callbacks]}"
            )
        for i, cb in enumerate(callbacks):
            try:
                cb.check_state(*_callback_state(saved, i), self)
            except ValueError as exc:
                raise CheckpointError(str(exc)) from None

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n], dtype={self.dtype.name})"


class MLP(Sequential):
    """A multi-layer perceptron: Linear layers with one activation between them.

    ``MLP(sizes=(784, 256, 10), activation="relu")`` is
    ``Sequential([Linear(784, 256), ReLU(), Linear(256, 10)])``.

    Parameters
    ----------
    sizes : sequence of int
        Input width, hidden widths, number of classes (at least two entries).
    activation : str, default="relu"
        Hidden activation ("relu", "leaky_relu", "sigmoid"/"logistic", "tanh",
        "gelu", "identity").
    init : str, default="auto"
        Weight init; "auto" uses He-uniform for relu-like activations and
        Glorot-uniform otherwise.
    bias : bool, default=True
    **kwargs
        ``loss``, ``optimizer``, ``dtype``, ``backend``, ``n_threads`` as in
        :class:`Sequential`.
    """

    def __init__(
        self,
        sizes: Sequence[int] = (784, 256, 10),
        activation: str = "relu",
        *,
        init: str = "auto",
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        sizes = [int(operator.index(s)) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(
                f"sizes needs at least an input and an output, got {sizes}"
            )
        act = activation_layer(activation)
        if init == "auto":
            init = (
                "he_uniform"
                if act.activation in ("relu", "leaky_relu", "gelu")
                else ("glorot_uniform")
            )
        layers: list[Layer] = []
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = k == len(sizes) - 2
            layers.append(
                Linear(
                    fan_in, fan_out, bias=bias, init="glorot_uniform" if last else init
                )
            )
            if not last:
                layers.append(activation_layer(activation))
        self.sizes = tuple(sizes)
        self.activation = act.activation
        self.init = init
        self.bias = bool(bias)
        super().__init__(layers, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            "sizes": list(self.sizes),
            "activation": self.activation,
            "init": self.init,
            "bias": self.bias,
            **self._common_config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> MLP:
        config = dict(config)
        return cls(
            config.pop("sizes"),
            config.pop("activation"),
            init=config.pop("init"),
            bias=config.pop("bias"),
            **_common_kwargs(config),
            **kwargs,
        )


_MODEL_CLASSES: dict[str, type[Sequential]] = {"Sequential": Sequential, "MLP": MLP}


# ------------------------------------------------------------------ helpers
def resume_training_state(saved, rng, callbacks) -> tuple[History, _TrainState]:
    """From a read checkpoint ``(meta, arrays)``: the shuffle RNG's state (set on
    ``rng``), the history, the position in the epochs and the callbacks' state."""
    ts = saved[0]["train_state"]
    rng.bit_generator.state = ts["rng"]
    state = _TrainState(
        epoch=ts["epoch"],
        batch=ts["batch"],
        step=ts["step"],
        loss_sum=ts["loss_sum"],
        correct=ts["correct"],
        seen=ts["seen"],
        elapsed=ts["elapsed"],
        stopped=ts["stopped"],
        finished=ts["finished"],
        perm=saved[1].get("train.perm"),
    )
    for i, cb in enumerate(callbacks):
        cb.set_state(*_callback_state(saved, i))
    return History.from_dict(ts["history"]), state


def gather_batch(ws, X, x_rows, y, sw, perm, i, j) -> None:
    """Copy rows [i, j) of an epoch's order into the workspace's x, y (and sw).

    ``perm``: the epoch's shuffled order of the training rows, or None (data order).
    ``y`` and ``sw`` hold the training rows only; ``X`` may hold more rows, the
    training rows being ``x_rows`` (a validation split's indices, so X is never
    copied) or all of them (None).
    """
    if perm is not None:
        idx = perm[i:j]
        rows = idx if x_rows is None else x_rows[idx]
        np.take(X, rows, axis=0, out=ws.x, mode="clip")
        np.take(y, idx, out=ws.y, mode="clip")
        if sw is not None:
            np.take(sw, idx, out=ws.sw, mode="clip")
        return
    if x_rows is None:
        np.copyto(ws.x, X[i:j])
    else:
        np.take(X, x_rows[i:j], axis=0, out=ws.x, mode="clip")
    np.copyto(ws.y, y[i:j])
    if sw is not None:
        np.copyto(ws.sw, sw[i:j])


def check_fit_args(epochs, batch_size, verbose, validation_split, checkpoint_every,
                   callbacks, resume, checkpoint):  # fmt: skip
    """fit's plain arguments, checked (shared with fastnn.distributed.fit).

    Returns ``(epochs, batch_size, verbose, checkpoint_every, callbacks)``.
    """
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    verbose = check_int("verbose", verbose, 0)
    if not isinstance(validation_split, (int, float)) or not (
        0.0 <= validation_split < 1.0
    ):
        raise ValueError(
            f"validation_split must lie in [0, 1), got {validation_split!r}"
        )
    if checkpoint_every != "epoch":
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    callbacks = [as_callback(cb) for cb in callbacks]
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    return epochs, batch_size, verbose, checkpoint_every, callbacks


def check_meta(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise CheckpointError unless a read checkpoint's metadata makes sense, before
    anything is built from it: every weight and bias its architecture implies is an
    array stored in the file with that shape (a claimed 10^9-wide layer is refused,
    not allocated), classes are unique and sorted, and every counter is >= 0."""
    from .checkpoint import CheckpointError

    try:
        claimed = _claimed_shapes(meta["model"]["class"], meta["model"]["config"])
        dtype = _DTYPES[meta["dtype"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint architecture is invalid: {exc}") from None
    for name, shape in claimed:  # every claimed layer is an array actually stored
        _expect_array(arrays, f"param.{name}", shape, dtype)
    if not isinstance(meta["fitted"], bool):
        raise CheckpointError("checkpoint 'fitted' flag is not a boolean")
    classes = arrays.get("classes")
    if meta["fitted"] and classes is not None:
        try:
            ordered = classes.ndim == 1 and np.array_equal(np.unique(classes), classes)
        except TypeError:
            ordered = False
        if not ordered:
            raise CheckpointError("checkpoint classes are not unique and sorted")
    counters = {}
    opt_meta = meta["optimizer"]
    opt_state = opt_meta.get("state") if isinstance(opt_meta, dict) else None
    if isinstance(opt_state, dict):
        counters["optimizer steps"] = opt_state.get("steps", 0)
        counters["learning rate"] = opt_state.get("current_lr", 0.0)
    ts = meta.get("train_state")
    if isinstance(ts, dict):
        for key in ("epoch", "batch", "step", "correct", "seen"):
            counters[key] = ts.get(key, 0)
        for key in ("loss_sum", "elapsed"):
            counters[key] = ts.get(key, 0.0)
    for name, value in counters.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise CheckpointError(f"checkpoint {name} is invalid: {value!r}")
    if isinstance(ts, dict) and ts.get("correct", 0) > ts.get("seen", 0):
        raise CheckpointError("checkpoint counts more correct rows than rows seen")


def _claimed_shapes(
    class_name: str, config: dict[str, Any]
) -> list[tuple[str, tuple[int, ...]]]:
    """(parameter name, shape) of every weight and bias of the architecture in a
    config, without building it."""

    def width(v: Any) -> int:
        if isinstance(v, bool) or operator.index(v) < 1:
            raise ValueError(f"layer width {v!r} is not a positive int")
        return operator.index(v)

    if class_name == "MLP":
        sizes = [width(v) for v in config["sizes"]]
        # Linear, activation, Linear, ...: the Linears sit at even positions
        linears = [
            (2 * i, k, m, bool(config["bias"]))
            for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        ]
    elif class_name == "Sequential":
        linears = [
            (i, width(spec["config"]["in_features"]),
             width(spec["config"]["out_features"]),
             bool(spec["config"].get("bias", True)))
            for i, spec in enumerate(config["layers"])
            if spec["type"] == "Linear"
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown model class {class_name!r}")
    shapes = []
    for i, k, m, bias in linears:
        shapes.append((f"{i}.weight", (k, m)))
        if bias:
            shapes.append((f"{i}.bias", (m,)))
    return shapes


def model_from_config(class_name: str, config: dict[str, Any], **kwargs) -> Sequential:
    """Build an unfitted model of a registered class from its config."""
    try:
        cls = _MODEL_CLASSES[class_name]
    except KeyError:
        raise ValueError(f"unknown model class {class_name!r}") from None
    return cls.from_config(config, **kwargs)


def _common_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "loss": SoftmaxCrossEntropy.from_config(config["loss"]),
        "optimizer": optimizer_from_config(config["optimizer"]),
        "dtype": _DTYPES[config["dtype"]],
    }


def _layers_signature(model: Sequential) -> list[tuple]:
    return [
        (type(layer).__name__, sorted(layer.get_config().items()))
        for layer in model.layers
    ]


def _needs_z(activation: str, alpha: float) -> bool:
    return activation == "gelu" or (activation == "leaky_relu" and alpha < 0)


def _fingerprint(X: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in (X, y, sw):
        if a is not None:
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _holdout_counts(y: np.ndarray, fraction: float) -> tuple[np.ndarray, list[int]]:
    """(classes, validation rows of each) of a stratified ``fraction`` split."""
    classes, counts = np.unique(y, return_counts=True)
    return classes, [int(round(fraction * int(n))) for n in counts]


def validation_size(y: Any, fraction: float) -> int:
    """Rows that ``fit(validation_split=fraction)`` holds out of labels ``y``."""
    return sum(_holdout_counts(np.asarray(y), fraction)[1]) if fraction > 0 else 0


def _stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices holding out ``fraction`` of each class."""
    order = rng.permutation(y.shape[0])
    val = []
    for c, k in zip(*_holdout_counts(y, fraction), strict=True):
        val.append(order[y[order] == c][:k])
    val_idx = np.sort(np.concatenate(val))
    if val_idx.shape[0] == 0:
        raise ValueError(
            f"validation_split={fraction} leaves no validation samples; use a larger "
            "fraction or pass validation_data"
        )
    mask = np.ones(y.shape[0], dtype=bool)
    mask[val_idx] = False
    train_idx = np.flatnonzero(mask)
    if train_idx.shape[0] == 0:
        raise ValueError(f"validation_split={fraction} leaves no training samples")
    return train_idx, val_idx


def _portable_classes(classes: np.ndarray) -> np.ndarray:
    """classes_ as an array numpy can save without pickle (no object dtype)."""
    if classes.dtype != object:
        return classes
    values = classes.tolist()
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    if all(isinstance(v, (bool, int, float, np.generic)) for v in values):
        return np.array(values)
    raise ValueError(
        "classes_ holds Python objects that cannot be saved without pickle; use "
        "numbers or strings as labels"
    )


def _expect_array(arrays, key, shape, dtype) -> None:
    from .checkpoint import CheckpointError

    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"checkpoint lacks array {key!r}")
    if a.shape != tuple(shape):
        raise CheckpointError(
            f"checkpoint array {key!r} has shape {a.shape}, expected {tuple(shape)}"
        )
    if a.dtype != dtype:
        raise CheckpointError(
            f"checkpoint array {key!r} has dtype {a.dtype}, expected {dtype}"
        )


def _callback_state(saved, i: int) -> tuple[dict, dict]:
    meta, arrays = saved
    cb_meta = meta["train_state"]["callbacks"][i]["state"]
    prefix = f"callback.{i}."
    cb_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return cb_meta, cb_arrays


def _interrupted(saved_to: str | Path | None) -> KeyboardInterrupt:
    """The KeyboardInterrupt that ends an interrupted fit; its ``checkpoint`` is the
    path just written, or None when no checkpoint was saved."""
    exc = KeyboardInterrupt()
    exc.checkpoint = saved_to
    return exc


class _SigintGuard:
    """Defer Ctrl-C to the next step boundary so state stays consistent.

    The first Ctrl-C sets ``interrupted`` (fit then saves its checkpoint and raises
    KeyboardInterrupt); a second one interrupts at once. Only installed in the main
    thread, where Python delivers signals.
    """

    def __init__(self, model: Sequential) -> None:
        self.interrupted = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def __enter__(self) -> _SigintGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # embedded interpreters without signal support
                self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
