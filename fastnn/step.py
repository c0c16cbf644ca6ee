"""One training step and the gradients of a batch: the engine's fused kernels.

For the standard stack (every stage a Linear with at most one activation after it)
a batch's loss and gradients are one ``loss_grad`` call and an optimizer step is one
``train_step`` call (``loss_grad`` followed by the fused update) on the numba or
cython backend; data-parallel training calls ``loss_grad``, sums the gradients over
the ranks and then the optimizer's fused ``update``. Stacks outside the standard
form (a lone activation layer, e.g. ``Linear, ReLU, Tanh``), ``compiled_step=False``
and targets other than the loss (explain's logit gradients) take the one
layer-by-layer backward pass, :meth:`Steps._backward`, which calls the same kernel
cores in the same order.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from . import kernels
from .kernels.contract import TRAIN_LOSSES, pack_config, pack_hyper
from .network import DTYPES
from .optim import SGD, Adam, AdamW

__all__ = ["Steps"]

_EMPTY = {dt: np.empty(0, dtype=dt) for dt in DTYPES.values()}
_EMPTY_TARGETS = {dt: np.empty((0, 0), dtype=dt) for dt in DTYPES.values()}
_EMPTY_LABELS = np.empty(0, dtype=np.intp)
_NO_STEP_EPS = np.empty(0, dtype=np.float64)


def _no_input_grad(x: np.ndarray) -> np.ndarray:
    """The raw loss_grad's "no input gradient" argument: a (0, k) array."""
    return np.empty((0, x.shape[1]), x.dtype)


class Steps:
    """The step methods of :class:`fastnn.Sequential` (a mixin over Network)."""

    def _raw_targets(self, yb: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw kernels' (labels, targets) pair for a batch's ``yb``: class
        indices for softmax cross-entropy, float targets for the other losses."""
        if loss == "softmax_cross_entropy":
            return yb, _EMPTY_TARGETS[self.dtype]
        return _EMPTY_LABELS, yb

    def _kernel_loss(self, loss: str | None) -> tuple[str, float]:
        """(the kernel loss name, its label smoothing): the model's loss unless a
        caller names another (MLPClassifier's sigmoid cross-entropy), unsmoothed."""
        if loss is None or loss == self.loss.kernel_loss:
            return self.loss.kernel_loss, self.loss.label_smoothing
        return loss, 0.0

    def _forward_backward(
        self, xb, yb, sample_weight, l2=None, loss=None
    ) -> tuple[float, int]:
        """Loss (with the L2 term) of one batch, gradients into the flat buffer.

        One ``loss_grad`` call for the standard stack (unless ``compiled_step`` is
        off), else the layer-by-layer pass. ``l2``: the batch's L2 coefficient
        (None: the loss's); ``loss``: a kernel loss name other than the model's
        (the fused path only). Returns ``(loss, number of rows whose argmax is the
        label)``.
        """
        l2 = self.loss.l2 if l2 is None else l2
        kb = self._kernels()
        ws = self._workspace(xb.shape[0], True)
        if self._uses_fused_kernels():
            return self._loss_grad(kb, xb, yb, sample_weight, l2, ws.work, loss=loss)
        if self._kernel_loss(loss)[0] != self.loss.kernel_loss:
            raise ValueError(f"the {loss} loss needs the fused kernels")
        logits = self._forward(kb, xb, ws)
        if self.loss.is_classifier:
            loss, _ = kb.softmax_cross_entropy(
                logits,
                yb,
                sample_weight=sample_weight,
                label_smoothing=self.loss.label_smoothing,
                grad_out=ws.dlogits,
            )
            correct = int(np.count_nonzero(logits.argmax(axis=1) == yb))
        else:
            loss, _ = kb.squared_error(
                logits, yb, sample_weight=sample_weight, grad_out=ws.dlogits
            )
            correct = 0
        self._backward(kb, xb, ws, self._stage_grads, l2)
        if l2:
            w = self._params[: self._n_decay]
            loss += 0.5 * l2 * float(np.dot(w, w))
        return loss, correct

    def _loss_grad(
        self,
        kb,
        xb,
        yb,
        sample_weight,
        l2,
        work,
        grads=None,
        input_grad=None,
        label_smoothing=None,
        loss=None,
    ) -> tuple[float, int]:
        """The backend's ``loss_grad`` on this model's parameters: gradients into
        ``grads`` (default: the model's flat gradient buffer) and, when given,
        d loss / d x into ``input_grad``. ``loss``: a kernel loss name (None: the
        model's).

        Inside a fit (whose inputs the model made), a batch shape validated once
        calls the raw kernel.
        """
        grads = self._grads if grads is None else grads
        loss, smoothing = self._kernel_loss(loss)
        if label_smoothing is None:
            label_smoothing = smoothing
        check_key = ("loss_grad", xb.shape[0], kb.name, loss)
        fast = (
            grads is self._grads
            and input_grad is None
            and check_key in self._step_checked
        )
        if fast:  # parameters in contract.RAW_KERNELS order
            empty = _EMPTY[self.dtype]
            config = pack_config(loss=TRAIN_LOSSES[loss], weights_end=self._n_decay)
            hyper = pack_hyper(label_smoothing=label_smoothing, l2=l2)
            value, correct = kb.raw.loss_grad(
                xb, *self._raw_targets(yb, loss),
                empty if sample_weight is None else sample_weight, self._params,
                grads, self._train_layout, self._train_alphas, work, config, hyper,
                _no_input_grad(xb),
            )  # fmt: skip
            return float(value), int(correct)
        value, correct = kb.loss_grad(
            xb, yb, self._params, grads, self._train_layout, self._train_alphas,
            work, loss=loss, sample_weight=sample_weight,
            label_smoothing=label_smoothing,
            l2=l2, weights_end=self._n_decay, input_grad=input_grad,
        )  # fmt: skip
        if self._in_fit and grads is self._grads:
            self._step_checked.add(check_key)
        return float(value), int(correct)

    def _backward(
        self, kb, x, ws, stage_grads, l2: float = 0.0, input_grad=None, between=None
    ):
        """The layer-by-layer backward pass from the logits' gradient in
        ``ws.dlogits`` (overwritten, as every dy: dz is written in place).

        ``stage_grads``: per stage, the (dW, db) arrays to write (None entries for
        lone activations; db None: not computed); ``input_grad``: receives
        d / d x when given. The forward pass of ``x`` must have filled ``ws``.
        ``between``: the forward's hook (see ``Network._forward``), every stage a
        Linear: ``between.input(s)`` is what stage ``s + 1`` read and
        ``between.backward(s, dy)`` turns the gradient w.r.t. it into the gradient
        w.r.t. stage ``s``'s output, in place.
        """
        dy = ws.dlogits
        for s in range(len(self._stages) - 1, -1, -1):
            st = self._stages[s]
            if s == 0:
                xin = x
            elif between is None:
                xin = ws.out[s - 1]
            else:
                xin = between.input(s - 1)
            y = ws.out[s]
            if st.linear is not None:
                dw, db = stage_grads[s]
                dx = ws.dx[s] if s > 0 else input_grad
                kb.linear_backward(
                    dy,
                    xin,
                    st.linear.weight,
                    ws.z[s] if st.keep_z else y,
                    y,
                    st.activation,
                    dw_out=dw,
                    db_out=db,
                    dx_out=dx,
                    dz_out=dy,
                    compute_db=db is not None,
                    compute_dx=dx is not None,
                    weight_decay=l2,
                    alpha=st.alpha,
                )
                dy = dx
                if between is not None and s > 0:
                    between.backward(s - 1, dy)
            elif s > 0 or input_grad is not None:
                # a lone activation: its input is the previous stage's output (or x)
                kb.activation_backward(dy, xin, y, st.activation, dy, alpha=st.alpha)
        if input_grad is not None and self._stages[0].linear is None:
            np.copyto(input_grad, dy)
        return input_grad

    def stage_grads(self, grads: np.ndarray) -> list[tuple[Any, Any]]:
        """(dW, db) views into a flat gradient buffer laid out as the parameters,
        per stage (None for a lone activation; db None without a bias)."""
        views = {}
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        for name, sl, shape in self._param_specs:
            views[name] = grads[sl].reshape(shape)
        out = []
        for st in self._stages:
            if st.linear is None:
                out.append(None)
                continue
            i = index[id(st.linear)]
            out.append((views[f"{i}.weight"], views.get(f"{i}.bias")))
        return out

    @property
    def _stage_grads(self) -> list[tuple[Any, Any]]:
        return [
            None
            if st.linear is None
            else (
                st.linear.grad_weight,
                st.linear.grad_bias if st.linear.use_bias else None,
            )
            for st in self._stages
        ]

    def _train_step(
        self, xb, yb, sample_weight, l2=None, eps=None, loss=None
    ) -> tuple[float, int]:
        """One optimizer step on a batch: forward, loss, backward, update.

        ``xb`` (n, n_features) in the model dtype, ``yb`` class indices (intp),
        ``sample_weight`` (n,) or None; all C-contiguous; ``l2`` the batch's L2
        coefficient (None: the loss's); ``eps`` Adam's epsilon for this step only
        (None: the optimizer's; scikit-learn folds its bias correction into it);
        ``loss`` a kernel loss name other than the model's (None: the model's;
        ``"sigmoid_cross_entropy"`` takes ``yb`` as (n, n_outputs) 0/1 targets in
        the model dtype: MLPClassifier's binary and multilabel heads). Returns the
        batch loss (before the update) and the count of correctly classified rows
        (0 but for softmax cross-entropy).

        One compiled ``train_step`` call when :meth:`_uses_compiled_step` (same
        weights as the layer-by-layer path); the optimizer's ``steps``,
        ``current_lr`` and state buffers stay the source of truth either way.
        """
        l2 = self.loss.l2 if l2 is None else l2
        kb = self._kernels()
        if not self._uses_compiled_step(kb):
            value, correct = self._forward_backward(xb, yb, sample_weight, l2, loss)
            self.optimizer.step(eps=eps)
            return value, correct
        loss, smoothing = self._kernel_loss(loss)
        n = xb.shape[0]
        ws = self._workspace(n, True)
        opt = self.optimizer
        u = self._update_settings(eps)
        step = opt.steps + 1
        check_key = (n, kb.name, loss)
        if check_key in self._step_checked:
            # validated before for this batch shape in this fit: call the raw kernel
            # (parameters in contract.RAW_KERNELS order): no per-call validation
            config, hyper = self._packed_settings(loss, smoothing, l2, u, step)
            value, correct = kb.raw.train_step(
                xb, *self._raw_targets(yb, loss),
                _EMPTY[self.dtype] if sample_weight is None else sample_weight,
                self._params, self._grads, self._train_layout, self._train_alphas,
                ws.work, config, hyper, u["velocity"], u["m"], u["v"],
            )  # fmt: skip
        else:
            value, correct = kb.train_step(
                xb, yb, self._params, self._grads, self._train_layout,
                self._train_alphas, ws.work, loss=loss,
                sample_weight=sample_weight, label_smoothing=smoothing, l2=l2,
                weights_end=self._n_decay, step=step, **self._keyword_settings(u),
            )  # fmt: skip
            self._step_checked.add(check_key)
        opt.steps = step
        return float(value), int(correct)

    def _train_steps(
        self, X, x_rows, rows, y, sample_weight, batch_size: int, l2=None,
        loss=None, step_eps=None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``len(rows) // batch_size`` optimizer steps in one compiled call, each on
        the training rows ``rows[s * batch_size:(s + 1) * batch_size]`` of ``y``
        and ``sample_weight`` (None: unweighted) and the matching rows of ``X``
        (through ``x_rows`` when not None), gathered by the kernel into the
        workspace; the weights come out bitwise as from :meth:`_train_step` on each
        batch. ``loss``: as :meth:`_train_step`; ``step_eps``: Adam's epsilon per
        step (float64, None: the optimizer's). Only when :meth:`_uses_compiled_step`.
        Returns each step's ``(losses, correct)``.
        """
        l2 = self.loss.l2 if l2 is None else l2
        kb = self._kernels()
        loss, smoothing = self._kernel_loss(loss)
        ws = self._workspace(batch_size, True)
        opt = self.optimizer
        u = self._update_settings(None)
        step = opt.steps + 1
        check_key = ("steps", batch_size, kb.name, loss)
        if check_key in self._step_checked:
            # the fit's arrays, validated by its first call: the raw kernel
            k = rows.shape[0] // batch_size
            losses, correct = np.empty(k), np.empty(k, np.int64)
            config, hyper = self._packed_settings(loss, smoothing, l2, u, step)
            labels, targets = self._raw_targets(y, loss)
            batch_labels, batch_targets = self._raw_targets(
                self._batch_targets(ws, y), loss
            )
            kb.raw.train_steps(
                X, _EMPTY_LABELS if x_rows is None else x_rows, rows, labels,
                targets, _EMPTY[self.dtype] if sample_weight is None else
                sample_weight, ws.x, batch_labels, batch_targets,
                _EMPTY[self.dtype] if sample_weight is None else ws.sw,
                self._params, self._grads, self._train_layout, self._train_alphas,
                ws.work, config, hyper, u["velocity"], u["m"], u["v"],
                _NO_STEP_EPS if step_eps is None else step_eps, losses, correct,
            )  # fmt: skip
        else:
            losses, correct = kb.train_steps(
                X, y, rows, batch_size, self._params, self._grads,
                self._train_layout, self._train_alphas, ws.work, x_rows=x_rows,
                loss=loss, sample_weight=sample_weight, label_smoothing=smoothing,
                l2=l2, weights_end=self._n_decay, step=step, step_eps=step_eps,
                **self._keyword_settings(u),
            )  # fmt: skip
            self._step_checked.add(check_key)
        opt.steps = step + losses.shape[0] - 1
        return losses, correct

    def _batch_targets(self, ws, y: np.ndarray) -> np.ndarray:
        """A buffer for one batch of ``y``'s rows: the workspace's own when it fits
        (the model's targets), else one kept for this fit (an estimator's head
        targets, while the loop's labels are row ids)."""
        n = ws.x.shape[0]
        if ws.y.dtype == y.dtype and ws.y.shape[1:] == y.shape[1:]:
            return ws.y
        key = (n, y.dtype.str, y.shape[1:])
        buf = self._step_buffers.get(key)
        if buf is None:
            buf = self._step_buffers[key] = np.empty((n, *y.shape[1:]), y.dtype)
        return buf

    def _update_settings(self, eps: float | None) -> dict[str, Any]:
        """The optimizer's settings as the compiled update takes them (``eps``:
        Adam's epsilon for this step, None: the optimizer's)."""
        opt = self.optimizer
        empty = _EMPTY[self.dtype]
        if type(opt) is SGD:
            return dict(
                code=0, momentum=opt.momentum, nesterov=opt.nesterov, beta1=0.9,
                beta2=0.999, eps=1e-8, decoupled=False,
                velocity=opt.state.get("velocity", empty), m=empty, v=empty,
            )  # fmt: skip
        return dict(
            code=1, momentum=0.0, nesterov=False, beta1=opt.beta1, beta2=opt.beta2,
            eps=opt.eps if eps is None else eps, decoupled=opt.decoupled,
            velocity=empty, m=opt.state["m"], v=opt.state["v"],
        )  # fmt: skip

    def _packed_settings(self, loss, smoothing, l2, u, step):
        """The raw kernels' (config, hyper) arrays of a step (contract slots)."""
        opt = self.optimizer
        config = pack_config(
            loss=TRAIN_LOSSES[loss], weights_end=self._n_decay, optimizer=u["code"],
            step=step, nesterov=u["nesterov"], decoupled=u["decoupled"],
        )  # fmt: skip
        hyper = pack_hyper(
            label_smoothing=smoothing, l2=l2, lr=opt.current_lr,
            momentum=u["momentum"], weight_decay=opt.weight_decay,
            beta1=u["beta1"], beta2=u["beta2"], eps=u["eps"],
        )  # fmt: skip
        return config, hyper

    def _keyword_settings(self, u: dict[str, Any]) -> dict[str, Any]:
        """The validating train_step / train_steps keywords of the update."""
        return dict(
            optimizer=("sgd", "adamw" if u["decoupled"] else "adam")[u["code"]],
            lr=self.optimizer.current_lr, momentum=u["momentum"],
            nesterov=u["nesterov"], weight_decay=self.optimizer.weight_decay,
            beta1=u["beta1"], beta2=u["beta2"], eps=u["eps"],
            velocity=u["velocity"] if u["velocity"].size else None,
            m=u["m"] if u["m"].size else None, v=u["v"] if u["v"].size else None,
        )  # fmt: skip

    def _uses_fused_kernels(self) -> bool:
        """Whether a batch's gradients come from one ``loss_grad`` call: the stack
        is standard and compiled steps are not switched off."""
        wanted = self._compiled_override
        if wanted is None:
            wanted = self.compiled_step
        return bool(wanted) and self._train_layout is not None

    def _uses_compiled_step(self, kb: kernels.Backend | None = None) -> bool:
        """Whether a training step is one compiled ``train_step`` call.

        True when compiled steps are on (``compiled_step``, or fit's override), the
        backend is numba or cython, every stage is a Linear (+ activation) and the
        optimizer is exactly SGD, Adam or AdamW, bound to this model's buffers.
        """
        if not self._uses_fused_kernels():
            return False
        kb = self._kernels() if kb is None else kb
        return (
            kb.name in ("numba", "cython")
            and type(self.optimizer) in (SGD, Adam, AdamW)
            and self.optimizer._params is self._params
        )

    def _fuses_steps(self) -> bool:
        """Whether fit may run several steps in one compiled ``train_steps`` call:
        the compiled path, with this class's own ``_train_step`` (a model whose
        ``_train_step`` is wrapped, to inject a failure or to profile each step,
        gets one call per step)."""
        return (
            self._uses_compiled_step()
            and "_train_step" not in vars(self)
            and type(self)._train_step is Steps._train_step
        )

    @contextlib.contextmanager
    def _fit_step_mode(self, compiled_step: bool | None):
        """fit(compiled_step=...) for one fit; shapes are validated afresh."""
        self._compiled_override = compiled_step
        self._step_checked = set()
        self._step_buffers = {}
        self._in_fit = True
        try:
            yield
        finally:
            self._compiled_override = None
            self._step_checked = set()
            self._step_buffers = {}
            self._in_fit = False

    def loss_and_gradients(
        self, X: Any, y: Any, sample_weight: Any = None
    ) -> tuple[float, list[np.ndarray]]:
        """Loss of the whole of (X, y) and its gradient for every parameter.

        Uses the model's loss (class weights, label smoothing, L2) without updating
        anything. Gradients come back as copies in :meth:`parameters` order.
        """
        self._require_fitted()
        Xc = self._check_predict_X(X)
        y_idx = self._training_targets(self._check_y(y, Xc.shape[0]), None)
        sw = self._combined_weights(y_idx, sample_weight, Xc.shape[0])
        with self._threads():
            loss, _ = self._forward_backward(Xc, np.ascontiguousarray(y_idx), sw)
        return loss, [
            self._grads[sl].reshape(s).copy() for _, sl, s in self._param_specs
        ]
