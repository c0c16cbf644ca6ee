"""A network's structure, flat parameters, workspaces and forward pass.

Memory layout (why it looks like this):

* Every parameter lives in one flat, 64-byte aligned buffer laid out as
  ``[weights of layer 0, 1, ... | biases of layer 0, 1, ...]`` (each segment padded
  to whole cache lines); :class:`~fastnn.layers.Linear` layers hold views into it.
  Gradients live in a twin buffer. An optimizer step is then two fused kernel calls
  (weights with decay, biases without) whatever the depth, and the compiled
  ``loss_grad`` / ``train_step`` kernels take the two flat buffers as they are.
* Activations, pre-activations and gradients of one batch live in a workspace
  allocated once per batch size (the last, partial batch gets its own). A training
  workspace of the standard Linear(+activation) stack is one flat buffer carved as
  the compiled kernels expect (``contract.train_workspace_layout``).
* The forward pass fuses each Linear with the activation that follows it into one
  ``linear_forward`` call; a prediction with the standard stack runs them all in one
  compiled ``forward`` call (a one-row predict is mostly per-call overhead).
"""

from __future__ import annotations

import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _gemm_wisdom, kernels
from ._buffers import aligned_copy, aligned_empty, aligned_zeros, padded_size
from ._validation import (
    check_n_features,
    check_sample_weight,
    check_targets,
    check_X,
    check_y,
    weights_in_dtype,
)
from .kernels.contract import forward_workspace_layout, train_workspace_layout
from .layers import Activation, Layer, Linear
from .losses import MeanSquaredError, SoftmaxCrossEntropy, loss_from_name
from .optim import Adam, Optimizer
from .threads import get_num_threads, num_threads

__all__ = ["Network", "NotFittedError"]

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
_INFERENCE_ROWS = 4096  # rows per forward chunk in predict / evaluate
_WORKSPACE_CACHE = 4  # training batch shapes kept (full, partial, a few more)
_INFERENCE_CACHE = 2  # inference shapes kept per thread: full chunk + the last


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
    # inference workspaces of the standard stack: the forward kernel's flat buffer
    # that the hidden outputs are views of (contract.forward_workspace_layout)
    hidden: np.ndarray | None = None
    # whether the backend's checked forward has accepted these buffers once
    forward_checked: bool = False


class Network:
    """Structure, flat parameters, workspaces and forward pass of a
    :class:`fastnn.Sequential` (its base class; see there for the parameters)."""

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        loss: SoftmaxCrossEntropy | MeanSquaredError | str | None = None,
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
        if isinstance(loss, str):
            loss = loss_from_name(loss)
        self.loss = loss if loss is not None else SoftmaxCrossEntropy()
        if not isinstance(self.loss, (SoftmaxCrossEntropy, MeanSquaredError)):
            raise TypeError(
                "loss must be a fastnn.SoftmaxCrossEntropy or fastnn.MeanSquaredError"
            )
        self.optimizer = optimizer if optimizer is not None else Adam()
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError("optimizer must be a fastnn optimizer (SGD, Adam, AdamW)")
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPES.values():
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
        self._step_checked: set[tuple] = set()  # batch shapes validated in this fit
        self._step_buffers: dict[tuple, np.ndarray] = {}  # batch targets, this fit
        self._in_fit = False
        self.stop_training = False
        self._stages = self._plan(self.layers)
        self._allocate_parameters()
        self._train_layout, self._train_alphas = self._compiled_layout()
        self._initialized = False
        self._workspaces: OrderedDict[tuple[int, bool], _Workspace] = OrderedDict()
        # inference buffers per thread: concurrent predict calls never share one
        self._inference = threading.local()

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
        """Output width (number of classes, or of regression targets)."""
        return self.linears[-1].out_features

    @property
    def is_regressor(self) -> bool:
        """Whether the loss regresses float targets (MeanSquaredError)."""
        return not self.loss.is_classifier

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
        self._set_grads(np.zeros(total, self.dtype))
        self._n_decay = n_decay
        self._param_specs = []
        for (name, _, _, shape), off in zip(specs, offsets, strict=True):
            self._param_specs.append((name, slice(off, off + math.prod(shape)), shape))
        self._bind_layer_views()
        for lin in self.linears:
            if not lin.use_bias:
                lin.bias = None

    def _set_grads(self, values: np.ndarray) -> None:
        """The flat gradient buffer ``_grads``, a 64-byte aligned copy of
        ``values``, and ``_grads_with_flag``: the same memory and one trailing
        element more, which data-parallel training reduces with the gradients in
        one Allreduce (a rank's failure flag: :mod:`fastnn.distributed`)."""
        flagged = aligned_zeros(values.shape[0] + 1, self.dtype)
        flagged[:-1] = values
        self._grads_with_flag = flagged
        self._grads = flagged[:-1]

    def _bind_layer_views(self) -> None:
        """Point every Linear's weight / bias (and their gradients) into the flat
        buffers; parameter names are "<layer index>.<attribute>"."""
        bound = []
        for name, sl, shape in self._param_specs:
            index, attr = name.split(".")
            lin = self.layers[int(index)]
            view = self._params[sl].reshape(shape)
            setattr(lin, attr, view)
            setattr(lin, "grad_" + attr, self._grads[sl].reshape(shape))
            bound.append((lin, attr, view))
        # a bias-less layer's bias stays None: the compiled forward adds none (a
        # user may assign one, which the layer-by-layer forward then adds)
        bound += [(lin, "bias", None) for lin in self.linears if not lin.use_bias]
        self._bound_views = tuple(bound)

    def _layers_read_params(self) -> bool:
        """Whether every Linear's weight and bias are still the views of the flat
        buffer that :meth:`_bind_layer_views` gave them, and a bias-less Linear's
        bias still None (a user may assign another array to ``layer.weight`` or
        ``layer.bias``: the layer-by-layer forward then reads that)."""
        return all(getattr(lin, attr) is view for lin, attr, view in self._bound_views)

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # Buffers are rebuilt on demand and the thread-local cache cannot be
        # pickled; the backend stays a name (self.backend), resolved on use.
        state = self.__dict__.copy()
        state["_workspaces"] = OrderedDict()
        state["_step_checked"] = set()
        state["_step_buffers"] = {}
        # the views are rebuilt from _params (pickled once, not once per view)
        del state["_inference"], state["_grads_with_flag"], state["_bound_views"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._inference = threading.local()
        # pickle copies each view on its own and drops the 64-byte alignment:
        # realign the flat buffers, then point the layers and optimizer at them
        self._params = aligned_copy(self._params, self.dtype)
        self._set_grads(self._grads)
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

    def initialize(self, seed: int | np.random.Generator | None = None) -> Network:
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

    def _threads(self, n: int | None = None):
        """The ``num_threads`` block a call of this model runs in (``n``: another
        count than the model's): BLAS's count too unless the backend's kernels pin
        BLAS themselves (Backend.pins_blas; see fastnn/threads.py)."""
        return num_threads(
            self.n_threads if n is None else n,
            blas=not self._kernels().pins_blas,
        )

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
        ws = cache[key] = self._new_workspace(n, train)
        while len(cache) > size:
            cache.popitem(last=False)
        return ws

    def _new_workspace(self, n: int, train: bool) -> _Workspace:
        """Buffers for a batch of ``n`` rows, of the caller's own (not cached); the
        products that run on ``n`` rows get their measured kernels first
        (fastnn/_gemm_wisdom.py)."""
        self._plan_gemm(n, train)
        if self._train_layout is not None:
            return self._train_workspace(n) if train else self._forward_workspace(n)
        dt = self.dtype
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
        return _Workspace(
            x=aligned_empty((n, self.n_features_in_), dt) if train else None,
            y=self._target_buffer(n) if train else None,
            sw=aligned_empty(n, dt) if train else None,
            out=outs,
            z=zs,
            dx=dxs,
            dlogits=aligned_empty((n, width), dt) if train else None,
        )

    def _plan_gemm(self, n: int, train: bool = True) -> None:
        """Give the products of a training step on ``n`` rows their measured kernels
        (fastnn/_gemm_wisdom.py) before the step first runs; for a prediction, those
        this machine's plan keeps for its forward products (nothing is measured)."""
        if self._kernels().name != "numpy":
            widths = [(lin.in_features, lin.out_features) for lin in self.linears]
            if train:
                _gemm_wisdom.plan_training(n, widths, self.dtype)
                self._plan_threads()
            else:
                _gemm_wisdom.enter_kept(n, widths, self.dtype)

    def _plan_threads(self) -> None:
        """The element-wise kernels' serial threshold for the thread count training
        runs on now (fastnn/_gemm_wisdom.py): with each new workspace and at the
        start of each fit, as a model's workspaces outlive a change of n_threads."""
        if self._kernels().name != "numpy":
            _gemm_wisdom.plan_parallel(get_num_threads())

    def _target_buffer(self, n: int) -> np.ndarray:
        """A batch's targets: class indices, or (n, n_outputs) float values."""
        if self.loss.is_classifier:
            return np.empty(n, dtype=np.intp)
        return aligned_empty((n, self.n_outputs_), self.dtype)

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
            y=self._target_buffer(n),
            sw=aligned_empty(n, dt),
            out=outs,
            z=zs,
            dx=dxs,
            dlogits=work[d_off : d_off + n * m].reshape(n, m),
            work=work,
        )

    def _forward_workspace(self, n: int) -> _Workspace:
        """An inference workspace of the standard stack: the hidden outputs carved
        from one flat buffer as the forward kernel expects, the logits apart."""
        dt = self.dtype
        offsets, total = forward_workspace_layout(self._train_layout, n)
        hidden = aligned_empty(total, dt)
        widths = self._train_layout[:, 3].tolist()
        outs = [
            hidden[off : off + n * m].reshape(n, m)
            for off, m in zip(offsets.tolist(), widths[:-1], strict=True)
        ]
        outs.append(aligned_empty((n, widths[-1]), dt))
        none = [None] * len(outs)
        return _Workspace(x=None, y=None, sw=None, out=outs, z=none, dx=list(none),
                          dlogits=None, hidden=hidden)  # fmt: skip

    # ------------------------------------------------------- forward/backward
    def _forward(
        self,
        kb: kernels.Backend,
        x: np.ndarray,
        ws: _Workspace,
        between: Any = None,
    ) -> np.ndarray:
        """Run the stages on ``x``; return the logits buffer.

        ``between`` (training only, e.g. dropout masks): ``between.forward(s, y)``
        returns what stage ``s + 1`` reads in place of stage ``s``'s output ``y``.

        With an inference workspace of the standard stack whose layers still read
        the flat parameters, one compiled ``forward`` call runs every stage (the
        same kernel cores in the same order: the same bits).
        """
        if ws.hidden is not None and between is None and self._layers_read_params():
            logits = ws.out[-1]
            if ws.forward_checked and self._is_own_input(x, logits.shape[0]):
                kb.raw.forward(x, self._params, self._train_layout,
                               self._train_alphas, ws.hidden, logits)  # fmt: skip
            else:
                kb.forward(x, self._params, self._train_layout, self._train_alphas,
                           ws.hidden, logits)  # fmt: skip
                ws.forward_checked = True
            return logits
        a = x
        last = len(self._stages) - 1
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
            if between is not None and s < last:
                a = between.forward(s, a)
        return a

    def _is_own_input(self, x: Any, n: int) -> bool:
        """Whether ``x`` is what the raw forward kernel takes on this model's
        buffers for ``n`` rows: a C-contiguous (n, n_features_in_) ndarray of the
        model's dtype (checked here, cheaply; everything else is the model's own,
        which the backend's checked call accepted once)."""
        return (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.ndim == 2
            and x.shape[0] == n
            and x.shape[1] == self._stages[0].linear.in_features
            and x.flags.c_contiguous
        )

    # --------------------------------------------------------------- labels
    def _check_y(self, y: Any, n_samples: int) -> np.ndarray:
        """Validated targets: class labels (1-D), or float values of shape (n,) or
        (n, n_outputs) for a regression loss."""
        if self.loss.is_classifier:
            return check_y(y, n_samples)
        return check_targets(y, n_samples, self.n_outputs_)

    def _training_targets(self, y: np.ndarray, classes: Any) -> np.ndarray:
        """What the kernels train on: class indices into ``classes``, or the
        float targets as a C-contiguous (n, n_outputs) array of the model dtype."""
        if self.loss.is_classifier:
            return self._encode(y, classes)
        return aligned_copy(y.reshape(y.shape[0], -1), self.dtype)

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
        if classes is None and self.loss.is_classifier:
            classes = self.classes_
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
        return weights_in_dtype(w, self.dtype)

    # ------------------------------------------------------------ inference
    def _is_fitted(self) -> bool:
        """Whether fit (or load) has set the classes or the target shape."""
        return hasattr(self, "classes_") or hasattr(self, "target_ndim_")

    def _mark_fitted(self, classes: np.ndarray | None, target_ndim: int) -> None:
        """Record what a fit learned about the targets: ``classes_`` of a
        classifier, ``target_ndim_`` (1: y of shape (n,); 2: (n, k)) of a
        regressor."""
        if self.loss.is_classifier:
            self.classes_ = classes
        else:
            self.target_ndim_ = int(target_ndim)

    def _require_fitted(self) -> None:
        if not self._is_fitted():
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

    def _evaluate_encoded(
        self, X, y_idx, sw, prefix: str, check: bool = True
    ) -> dict[str, float]:
        """The loss (L2 and label smoothing included) and accuracy of encoded
        labels, or the loss and MSE of regression targets (see
        :meth:`_metrics_from_sums`)."""
        loss_sum, correct = self._loss_sum(X, y_idx, sw, check)
        return self._metrics_from_sums(loss_sum, correct, X.shape[0], prefix)

    def _metrics_from_sums(
        self, loss_sum: float, correct: float, n: int, prefix: str
    ) -> dict[str, float]:
        """Metrics of ``n`` unweighted rows from :meth:`_loss_sum`'s two sums (which
        shards add up): loss and accuracy; for a regressor loss and MSE (the loss
        without L2 is half the summed squared error per row, so
        MSE = 2 loss_sum / (n k))."""
        loss = loss_sum / n + self.loss.penalty(self._params[: self._n_decay])
        if self.loss.is_classifier:
            return {prefix + "loss": loss, prefix + "accuracy": correct / n}
        return {
            prefix + "loss": loss,
            prefix + "mse": 2 * loss_sum / (n * self.n_outputs_),
        }

    def _loss_sum(self, X, y_idx, sw, check: bool = True) -> tuple[float, int]:
        """(sum over rows of the loss without the L2 term, rows classified right;
        0 for a regressor, whose ``y_idx`` are the (n, k) targets)."""
        kb = self._kernels()
        loss_sum, correct = 0.0, 0
        if not self.loss.is_classifier:
            for i, j, out in self._logits_chunks(X, check):
                loss, _ = kb.squared_error(
                    out,
                    y_idx[i:j],
                    sample_weight=None if sw is None else sw[i:j],
                    compute_grad=False,
                )
                loss_sum += loss * (j - i)
            return loss_sum, 0
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
        return loss_sum, correct


def _needs_z(activation: str, alpha: float) -> bool:
    return activation == "gelu" or (activation == "leaky_relu" and alpha < 0)
