"""fastnn.MLPClassifier: a drop-in replacement for scikit-learn's MLPClassifier.

The estimator reproduces scikit-learn's semantics (parameters, defaults, random draws,
update formulas, stopping rules, fitted attributes) over a :class:`fastnn.Sequential`:
``coefs_`` and ``intercepts_`` are views of the model's flat parameter buffer, the
stochastic solvers step through the model's compiled step (scikit-learn's per-batch
L2 strength and Adam's bias-corrected epsilon passed per call), and L-BFGS drives the
engine's ``loss_grad`` through ``scipy.optimize``.

:class:`_BaseMLP` holds everything but the output layer's loss (a *head*) and the
target encoding, so a regressor is a small subclass with an identity head
(:class:`fastnn.MLPRegressor`, fastnn/regressor.py).
"""

from __future__ import annotations

import math
import warnings
from itertools import chain
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted

from . import kernels, training
from ._buffers import aligned_empty
from ._sklearn_compat import (
    NEW_TAGS,
    Interval,
    check_params,
    check_sample_weight,
    lbfgs_iterations,
    partial_fit_first_call,
    validate_data,
    validate_predict_X,
)
from ._validation import _check_finite
from .callbacks import Callback
from .kernels import BACKEND_NAMES
from .kernels.contract import train_workspace_layout
from .layers import Linear, activation_layer
from .model import Sequential
from .optim import SGD, Adam

__all__ = ["MLPClassifier"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")


# ------------------------------------------------------------------------- heads
class _SoftmaxHead:
    """Softmax output, log loss on class indices: fused into the engine's step."""

    out_activation = "softmax"
    loss = "softmax_cross_entropy"  # the engine's loss code (kernels.TRAIN_LOSSES)
    # scikit-learn's loss value averages over the outputs what the engine sums
    mean_over_outputs = False

    @staticmethod
    def targets(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Class indices of a one-hot target matrix."""
        return np.ascontiguousarray(y.argmax(axis=1), dtype=np.intp)

    @staticmethod
    def loss_delta(kb, logits, targets, weights, delta) -> float:
        """Mean loss (weights already scaled to mean 1); d loss / d logits."""
        loss, _ = kb.softmax_cross_entropy(
            logits, targets, sample_weight=weights, grad_out=delta
        )
        return loss

    @staticmethod
    def output(kb, logits: np.ndarray, out: np.ndarray) -> None:
        kb.softmax(logits, out=out)


class _LogisticHead:
    """Independent logistic outputs (binary: one unit; multilabel: one per label),
    binary log loss with scikit-learn's clipping of the probabilities: fused into
    the engine's step (its sigmoid cross-entropy); ``loss_delta`` serves dropout."""

    out_activation = "logistic"
    loss = "sigmoid_cross_entropy"
    mean_over_outputs = False

    @staticmethod
    def targets(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=dtype)

    @staticmethod
    def loss_delta(kb, logits, targets, weights, delta) -> float:
        n = logits.shape[0]
        p = kb.activation_forward(logits, "sigmoid", out=delta)
        eps = np.finfo(p.dtype).eps
        clipped = np.clip(p, eps, 1 - eps)
        row_loss = -np.log(np.where(targets, clipped, 1 - clipped)).sum(axis=1)
        delta -= targets
        if weights is None:
            delta *= delta.dtype.type(1.0 / n)
            return float(row_loss.sum()) / n
        delta *= (weights / n)[:, None]
        return float(np.dot(weights, row_loss)) / n

    @staticmethod
    def output(kb, logits: np.ndarray, out: np.ndarray) -> None:
        kb.activation_forward(logits, "sigmoid", out=out)


# ---------------------------------------------------------------------- dropout
class _Dropout:
    """Inverted dropout between the hidden layers, as the model's ``between`` hook.

    Stage ``s + 1`` reads ``y_s * mask_s`` (mask 0 or ``1 / (1 - rate)``), kept in a
    buffer of its own: the backward of stage ``s`` still reads ``y_s``.
    """

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        self.rate = rate
        self.rng = rng
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._current: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def forward(self, s: int, y: np.ndarray) -> np.ndarray:
        key = (s, y.shape[0])
        if key not in self._buffers:
            self._buffers[key] = (np.empty_like(y), np.empty_like(y))
        mask, masked = self._buffers[key]
        self.rng.random(out=mask, dtype=mask.dtype)  # float32 models: float32 masks
        mask += mask.dtype.type(1.0 - self.rate)
        np.floor(mask, out=mask)
        mask *= mask.dtype.type(1.0 / (1.0 - self.rate))
        self._current[s] = (mask, masked)
        return np.multiply(y, mask, out=masked)

    def input(self, s: int) -> np.ndarray:
        return self._current[s][1]

    def backward(self, s: int, dy: np.ndarray) -> None:
        dy *= self._current[s][0]


# ------------------------------------------------------------------- schedules
class _SolverSchedule:
    """scikit-learn's learning-rate schedule and stopping rule for 'sgd' / 'adam'.

    The update itself is the model's fastnn optimizer (PyTorch's formulation), which
    equals scikit-learn's step as follows. SGD: scikit-learn keeps v <- mu v - lr g
    and adds v (Nesterov: mu v - lr g); fastnn keeps u = -v / lr, so when the
    schedule changes lr, u is rescaled by lr_old / lr_new. Adam: scikit-learn steps
    lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps); fastnn's step is the same with
    eps' = eps / sqrt(1-b2^t), passed per step.
    """

    def __init__(self, est: _BaseMLP, model: Sequential) -> None:
        self.solver = est.solver
        self.lr_schedule = est.learning_rate
        self.learning_rate_init = float(est.learning_rate_init)
        self.power_t = float(est.power_t)
        self.epsilon = float(est.epsilon)
        self.beta_2 = float(est.beta_2)
        if est.solver == "sgd":
            momentum = float(est.momentum)
            self.optimizer = SGD(
                lr=self.learning_rate_init,
                momentum=momentum,
                nesterov=bool(est.nesterovs_momentum) and momentum > 0,
            )
        else:
            self.optimizer = Adam(
                lr=self.learning_rate_init,
                beta1=float(est.beta_1),
                beta2=self.beta_2,
                eps=self.epsilon,
            )
        model.optimizer = self.optimizer

    @property
    def learning_rate(self) -> float:
        return self.optimizer.current_lr

    def step_eps(self) -> float | None:
        """Adam's epsilon for the coming step (None for SGD)."""
        if self.solver == "sgd":
            return None
        t = self.optimizer.steps + 1
        return self.epsilon / math.sqrt(1.0 - self.beta_2**t)

    def steps_eps(self, k: int) -> np.ndarray | None:
        """Adam's epsilon for each of the coming ``k`` steps (None for SGD), as
        :meth:`step_eps` computes them."""
        if self.solver == "sgd":
            return None
        t = self.optimizer.steps + 1
        return np.array(
            [self.epsilon / math.sqrt(1.0 - self.beta_2 ** (t + s)) for s in range(k)]
        )

    def _set_learning_rate(self, lr: float) -> None:
        opt = self.optimizer
        velocity = opt.state.get("velocity")
        if velocity is not None and lr != opt.current_lr:
            velocity *= velocity.dtype.type(opt.current_lr / lr)
        opt.current_lr = lr

    def iteration_ends(self, time_step: int) -> None:
        """End of an epoch: 'invscaling' sets lr = lr0 / (t + 1) ** power_t."""
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self._set_learning_rate(
                self.learning_rate_init / (time_step + 1) ** self.power_t
            )

    def trigger_stopping(self, msg: str, verbose: Any) -> bool:
        """True to stop; 'adaptive' SGD divides the learning rate by 5 instead."""
        if self.solver != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self.learning_rate / 5.0)
        if verbose:
            print(f"{msg} Setting learning rate to {self.learning_rate:f}")
        return False


# ------------------------------------------------------------------ in the loop
class _ShuffledOrder:
    """scikit-learn's epoch order: the previous epoch's order shuffled by the
    estimator's RandomState (the loop's own generator is not used)."""

    def __init__(self, random_state: np.random.RandomState) -> None:
        self.random_state = random_state
        self.order: np.ndarray | None = None

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.order is None:
            self.order = np.arange(n)
        # sklearn.utils.shuffle(order, random_state=rs) is order[p] with p this
        # permutation (resample without replacement); called directly, it skips the
        # per-call parameter validation, 0.3-0.5 ms an epoch (a fifth of a digits
        # epoch at batch 200). The parity tests pin it to scikit-learn's.
        p = np.arange(n)
        self.random_state.shuffle(p)
        self.order = self.order[p]
        return self.order


class _EstimatorSteps(training.LocalStrategy):
    """scikit-learn's step inside the one training loop.

    The loop gathers each batch's rows of X, their row ids (passed as the labels)
    and their sample weights into the model's workspace; this maps the ids to the
    head's targets, scales the weights to mean 1 (scikit-learn averages over their
    sum) and steps with the batch's L2 strength ``alpha / sum`` and Adam's epsilon.
    """

    def __init__(self, est: _BaseMLP, kb, targets: np.ndarray, dropout) -> None:
        self.est = est
        self.kb = kb
        self.targets = targets
        self.dropout = dropout
        self._batch_targets: dict[int, np.ndarray] = {}  # a buffer per batch size

    def step(self, model, ws, weighted: bool, batch_rows: int, l2) -> tuple[float, int]:
        est = self.est
        n = ws.x.shape[0]
        out = self._batch_targets.get(n)
        if out is None:
            shape = (n,) + self.targets.shape[1:]
            out = self._batch_targets[n] = np.empty(shape, self.targets.dtype)
        targets = np.take(self.targets, ws.y, axis=0, out=out, mode="clip")
        weights, inv_sum = est._batch_weights(ws.sw if weighted else None, n, ws.sw)
        loss = est._step(self.kb, ws.x, targets, weights, est.alpha * inv_sum,
                         self.dropout)  # fmt: skip
        return loss, 0

    def fuses_steps(self, model, data) -> bool:
        """Several steps per compiled call where each is the plain fused step:
        no dropout, no sample weights (each batch's would be rescaled), the loss
        reported as the engine computes it, the loop's labels the row ids
        themselves (every row of X trains)."""
        return (
            self.dropout is None
            and data.sw_tr is None
            and data.x_rows is None
            and not self.est._averages_outputs()
            and model._fuses_steps()
        )

    def steps(self, model, data, rows, batch_size: int, l2):
        """:meth:`step` on each whole batch of ``rows`` in one compiled call: the
        head's targets of those rows, L2 ``alpha / batch_size`` (computed as
        :meth:`step` does, to the bit), Adam's epsilon of each step (scikit-learn's
        bias correction folded in)."""
        est = self.est
        _, inv_sum = est._batch_weights(None, batch_size, None)
        losses, _ = model._train_steps(
            data.X_tr, None, rows, self.targets, None, batch_size,
            est.alpha * inv_sum, loss=est._head.loss,
            step_eps=est._optimizer.steps_eps(len(rows) // batch_size),
        )  # fmt: skip
        return losses, np.zeros(losses.shape[0], np.int64)


class _EpochEnd(Callback):
    """scikit-learn's end of an epoch: n_iter_, t_, loss_curve_, the stopping rule
    (training loss or validation score), the learning-rate schedule, the
    convergence warning."""

    def __init__(self, est: _BaseMLP, n_samples: int, incremental: bool,
                 validation: tuple) -> None:  # fmt: skip
        self.est = est
        self.n_samples = n_samples
        self.incremental = incremental
        self.validation = validation

    def on_epoch_end(self, epoch: int, logs: dict, model: Sequential) -> None:
        est = self.est
        est.n_iter_ += 1
        est.loss_ = logs["loss"]
        est.t_ += self.n_samples
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        est._update_no_improvement_count(*self.validation)
        est._optimizer.iteration_ends(est.t_)
        if est._no_improvement_count > est.n_iter_no_change:
            watched = "Validation score" if est.early_stopping else "Training loss"
            msg = (
                f"{watched} did not improve more than tol={est.tol:f} for "
                f"{est.n_iter_no_change:d} consecutive epochs."
            )
            if est._optimizer.trigger_stopping(msg, est.verbose):
                model.stop_training = True
                return
            est._no_improvement_count = 0
        if not self.incremental and est.n_iter_ == est.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )


# ------------------------------------------------------------------------- base
class _BaseMLP(BaseEstimator):
    """Parameters, model, solvers and stopping rules shared by the MLP estimators.

    A subclass supplies the output head (:meth:`_make_head`), the target encoding
    (:meth:`_validate_input`), the early-stopping score (:meth:`_validation_score`)
    and its own ``__init__`` listing its parameters.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval("int", 1, None, "left")],
        "activation": [{"identity", "logistic", "tanh", "relu"}],
        "solver": [{"lbfgs", "sgd", "adam"}],
        "alpha": [Interval("real", 0, None, "left")],
        "batch_size": [{"auto"}, Interval("int", 1, None, "left")],
        "learning_rate": [{"constant", "invscaling", "adaptive"}],
        "learning_rate_init": [Interval("real", 0, None, "neither")],
        "power_t": [Interval("real", 0, None, "left")],
        "max_iter": [Interval("int", 1, None, "left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval("real", 0, None, "left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval("real", 0, 1, "both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval("real", 0, 1, "left")],
        "beta_1": [Interval("real", 0, 1, "left")],
        "beta_2": [Interval("real", 0, 1, "left")],
        "epsilon": [Interval("real", 0, None, "neither")],
        "n_iter_no_change": [Interval("int", 1, None, "left"), {np.inf}],
        "max_fun": [Interval("int", 1, None, "left")],
        "backend": [{"auto", *BACKEND_NAMES}],
        "n_threads": [Interval("int", 1, None, "left"), None],
        "dropout": [Interval("real", 0, 1, "left")],
    }

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        *,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        backend,
        n_threads,
        dropout,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.n_threads = n_threads
        self.dropout = dropout

    # --------------------------------------------------------- subclass hooks
    def _make_head(self):
        """The output head for the encoded targets (sets ``out_activation_``)."""
        raise NotImplementedError

    def _validate_input(self, X, y, incremental, reset):
        """(X, 2-D float or bool target matrix)."""
        raise NotImplementedError

    def _validation_score(self, X, y, sample_weight) -> float:
        """The early-stopping score of the current weights (higher is better)."""
        raise NotImplementedError

    def _fold_weights(self, y, sample_weight, incremental):
        """Sample weights for training (a subclass may fold in class weights)."""
        return sample_weight

    def _early_stopping_targets(self, y):
        """What :meth:`_validation_score` compares predictions with."""
        return y

    # ------------------------------------------------------------------- model
    def _build_model(self, layer_units: list[int], dtype: np.dtype) -> Sequential:
        layers = []
        for i, (fan_in, fan_out) in enumerate(
            zip(layer_units[:-1], layer_units[1:], strict=True)
        ):
            layers.append(Linear(fan_in, fan_out))
            if i < len(layer_units) - 2:
                layers.append(activation_layer(self.activation))
        return Sequential(
            layers, dtype=dtype, backend=self.backend, n_threads=self.n_threads
        )

    def _bind_views(self) -> None:
        """coefs_ / intercepts_: views of the model's flat parameter buffer."""
        self.coefs_ = [lin.weight for lin in self._model.linears]
        self.intercepts_ = [lin.bias for lin in self._model.linears]

    def _load_attributes_into_model(self) -> None:
        """Copy coefs_ / intercepts_ into the model when they are not its views
        (assigned by the user, or unpickled as copies), then bind the views."""
        for lin, coef, intercept in zip(
            self._model.linears, self.coefs_, self.intercepts_, strict=True
        ):
            for param, value in ((lin.weight, coef), (lin.bias, intercept)):
                if value is not param:
                    if np.shape(value) != param.shape:
                        raise ValueError(
                            f"a parameter has shape {np.shape(value)}, the network "
                            f"expects {param.shape}"
                        )
                    param[...] = value
        self._bind_views()

    def _set_model_classes(self) -> None:
        """The model's classes_: the estimator's where its logits are softmax
        logits (explain and calibration then take the model as it is), else none."""
        if self.out_activation_ == "softmax":
            self._model.classes_ = self.classes_
        elif hasattr(self._model, "classes_"):
            del self._model.classes_

    def _recast_model(self, dtype: np.dtype) -> None:
        """Rebuild the model in ``dtype`` with the same weights (L-BFGS works in
        float64)."""
        old = self._model
        if old.dtype == dtype:
            return
        units = [old.n_features_in_] + [lin.out_features for lin in old.linears]
        self._model = self._build_model(units, dtype)
        self._model._initialized = True
        if hasattr(old, "classes_"):
            self._model.classes_ = old.classes_
        self._load_attributes_into_model()  # coefs_ still views old's buffer

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_model" in self.__dict__:
            self._load_attributes_into_model()

    # ----------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels, or a label indicator matrix).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        check_params(self, self._parameter_constraints)
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        """True, or AttributeError (partial_fit is then missing) for 'lbfgs'."""
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                f" optimizers. {self.solver} is not stochastic."
            )
        return True

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError(
                f"hidden_layer_sizes must be > 0, got {hidden_layer_sizes}."
            )
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_features = X.shape[1]
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X, X.dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        sample_weight = self._fold_weights(y, sample_weight, incremental)

        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        else:
            self._load_attributes_into_model()
        model = self._model
        model.backend, model.n_threads = self.backend, self.n_threads
        dtype = model.dtype
        X = (
            X.astype(dtype).tocsr()
            if sp.issparse(X)
            else np.ascontiguousarray(X, dtype)
        )
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, dtype=dtype)

        with model._threads():
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(X, y, sample_weight, incremental)
            else:
                self._fit_lbfgs(X, y, sample_weight)

        weights = chain(self.coefs_, self.intercepts_)
        if not all(np.isfinite(w).all() for w in weights):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self._head = self._make_head()
        self.out_activation_ = self._head.out_activation
        dtype = np.dtype(dtype)
        self._model = self._build_model(layer_units, dtype)
        # Glorot et al. uniform initialisation, biases included (scikit-learn's draws)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for lin in self._model.linears:
            bound = np.sqrt(factor / (lin.in_features + lin.out_features))
            shape = (lin.in_features, lin.out_features)
            lin.weight[...] = self._random_state.uniform(-bound, bound, shape)
            lin.bias[...] = self._random_state.uniform(-bound, bound, lin.out_features)
        self._model._initialized = True
        self._set_model_classes()
        self._bind_views()
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # ---------------------------------------------------------- loss and step
    def _penalty(self, l2: float) -> float:
        """(l2 / 2) ||W||^2 over every weight matrix (not the biases)."""
        weights = self._model._params[: self._model._n_decay]
        return 0.5 * l2 * float(np.dot(weights, weights))

    def _dropout_loss_grad(self, kb, x, targets, weights, l2, dropout) -> float:
        """Loss of a batch under dropout (L2 term included), its gradient into the
        model's flat gradient buffer, through the model's forward and backward
        passes (the fused kernels have no dropout)."""
        model = self._model
        ws = model._workspace(x.shape[0], True)
        logits = model._forward(kb, x, ws, dropout)
        loss = self._head.loss_delta(kb, logits, targets, weights, ws.dlogits)
        model._backward(kb, x, ws, model._stage_grads, l2, None, dropout)
        return loss + self._penalty(l2) if l2 else loss

    def _averages_outputs(self) -> bool:
        """Whether scikit-learn's loss value averages over the outputs the data term
        that the engine's sums (the squared error with several outputs; its
        gradient is the engine's either way)."""
        return self._head.mean_over_outputs and self.n_outputs_ > 1

    def _reported_penalty(self, l2: float) -> float:
        """The L2 term of the current weights where :meth:`_reported_loss` needs
        it (read before the step changes the weights), else 0."""
        return self._penalty(l2) if l2 and self._averages_outputs() else 0.0

    def _reported_loss(self, loss: float, penalty: float) -> float:
        """scikit-learn's loss value from the engine's (``penalty`` its L2 term)."""
        if not self._averages_outputs():
            return loss
        return (loss - penalty) / self.n_outputs_ + penalty

    def _step(self, kb, x, targets, weights, l2, dropout) -> float:
        """One optimizer step on a batch; the batch loss before it."""
        eps = self._optimizer.step_eps()
        penalty = self._reported_penalty(l2)
        if dropout is None:
            loss, _ = self._model._train_step(
                x, targets, weights, l2=l2, eps=eps, loss=self._head.loss
            )
        else:
            loss = self._dropout_loss_grad(kb, x, targets, weights, l2, dropout)
            self._model.optimizer.step(eps=eps)
        return self._reported_loss(loss, penalty)

    # ---------------------------------------------------------------- L-BFGS
    def _fit_lbfgs(self, X, y, sample_weight):
        dtype = self._model.dtype
        work_dtype = np.dtype(np.float64)  # L-BFGS-B runs in float64; so do its grads
        self._recast_model(work_dtype)
        model = self._model
        kb = kernels.get_backend(self.backend)
        X = X.toarray() if sp.issparse(X) else X
        X = np.ascontiguousarray(X, work_dtype)
        targets = self._head.targets(y, work_dtype)
        n = X.shape[0]
        weights, inv_sum = self._batch_weights(sample_weight, n, None)
        l2 = self.alpha * inv_sum
        if weights is not None:
            weights = np.ascontiguousarray(weights, work_dtype)
        params, grads = model._params, model._grads
        layout, alphas = model._train_layout, model._train_alphas
        work = aligned_empty(train_workspace_layout(layout, n)[2], work_dtype)
        model._plan_gemm(n)  # its own workspace: each loss_grad is a step on n rows

        def loss_grad(packed):
            params[:] = packed
            loss, _ = kb.loss_grad(
                X, targets, params, grads, layout, alphas, work,
                loss=self._head.loss, sample_weight=weights, l2=l2,
                weights_end=model._n_decay,
            )  # fmt: skip
            penalty = self._reported_penalty(l2)
            return self._reported_loss(loss, penalty), grads.copy()

        opt_res = scipy.optimize.minimize(
            loss_grad,
            params.copy(),
            method="L-BFGS-B",
            jac=True,
            options={
                "maxfun": self.max_fun,
                "maxiter": self.max_iter,
                "gtol": self.tol,
            },
        )
        self.n_iter_ = lbfgs_iterations(opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        params[:] = opt_res.x
        model._workspaces.clear()  # buffers of all n rows: not kept past the fit
        self._recast_model(dtype)

    @staticmethod
    def _batch_weights(sample_weight, n, out):
        """(weights scaled to mean 1 or None, scikit-learn's L2 divisor 1 / sum)."""
        if sample_weight is None:
            return None, 1.0 / n
        total = float(sample_weight.sum())
        if out is None:
            return sample_weight * (n / total), 1.0 / total
        return np.multiply(sample_weight, n / total, out=out), 1.0 / total

    # ---------------------------------------------------------- SGD / Adam
    def _fit_stochastic(self, X, y, sample_weight, incremental):
        model = self._model
        model._plan_threads()  # its workspaces may be a fit on other threads old
        kb = kernels.get_backend(self.backend)
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = _SolverSchedule(self, model)
        model.optimizer.bind(kb, model._params, model._grads, model._n_decay)

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # stratify single-output classification only (as scikit-learn)
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
            parts = train_test_split(
                *arrays,
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            X_train, X_val, y_train, y_val = parts[:4]
            sw_train, sw_val = parts[4:] if sample_weight is not None else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            y_val = self._early_stopping_targets(y_val)
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            X_val = y_val = sw_val = None
        validation = (X_val, y_val, sw_val)

        n_samples = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped",
                    stacklevel=3,
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        dropout = None
        if self.dropout > 0:
            seed = self._random_state.randint(np.iinfo(np.int32).max)
            dropout = _Dropout(float(self.dropout), np.random.default_rng(seed))
        targets = self._head.targets(y_train, model.dtype)
        if sp.issparse(X_train):  # the loop gathers each batch's rows of a dense X
            X_train = X_train.toarray()
        rows = np.arange(n_samples)
        model.classes_ = rows  # the loop hands the strategy each batch's row ids
        self.n_iter_ = 0
        try:
            training.fit(
                model,
                X_train,
                rows,
                epochs=1 if incremental else self.max_iter,
                batch_size=batch_size,
                shuffle=self.shuffle,
                callbacks=[_EpochEnd(self, n_samples, incremental, validation)],
                verbose=0,
                sample_weight=sw_train,
                strategy=_EstimatorSteps(self, kb, targets, dropout),
                batch_order=_ShuffledOrder(self._random_state)
                if self.shuffle
                else None,
            )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        finally:
            self._set_model_classes()
        if early_stopping:  # restore the best weights (into the model's buffer)
            for param, best in zip(
                self.coefs_ + self.intercepts_,
                self._best_coefs + self._best_intercepts,
                strict=True,
            ):
                param[...] = best

    def _update_no_improvement_count(self, X_val, y_val, sw_val):
        if self.early_stopping:
            val_score = self._validation_score(X_val, y_val, sw_val)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # -------------------------------------------------------------- inference
    def __sklearn_is_fitted__(self):
        """Whether a fit (or warm start, partial_fit, unpickling) has built the
        network: what predict needs. scikit-learn's ``check_is_fitted`` asks this
        in place of scanning every attribute's name."""
        return "_model" in self.__dict__ and "coefs_" in self.__dict__

    def _check_is_fitted(self):
        """scikit-learn's ``check_is_fitted``, asked only when the network is not
        built (it raises NotFittedError then): its tag lookup and checks cost
        ~9 us a call, a tenth of a one-row predict."""
        if not self.__sklearn_is_fitted__():
            check_is_fitted(self)

    def _forward_pass_fast(self, X, check_input=True):
        """Output-layer activations of X through the model (no state is stored)."""
        if check_input:
            X = validate_predict_X(self, X)
        model = self._model
        X = X.toarray() if sp.issparse(X) else X
        narrowed = X.dtype.kind == "f" and model.dtype.itemsize < X.dtype.itemsize
        X = np.ascontiguousarray(X, model.dtype)
        kb = kernels.get_backend(self.backend)
        out = np.empty((X.shape[0], self.n_outputs_), dtype=model.dtype)
        with model._threads(self.n_threads):
            for i, j, logits in model._logits_chunks(X, check=False):
                self._head.output(kb, logits, out[i:j])
        if (
            check_input
            and narrowed
            and not np.isfinite(out).all()
            and not get_config()["assume_finite"]
        ):  # a value finite in X's dtype but past the model's is inf after the cast
            _check_finite(X, X.dtype)
        return out

    def to_onnx(self, path=None):
        """Export the fitted estimator's inference graph to ONNX.

        A classifier's graph outputs ``label`` (as :meth:`predict`) and
        ``probabilities`` (as :meth:`predict_proba`); a regressor's outputs
        ``predictions`` (as :meth:`predict`). Opset
        :data:`fastnn.onnx_export.OPSET`. Needs ``pip install "fastnn[onnx]"``.

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


def _decode_labels(binarizer, y_pred):
    """``binarizer.inverse_transform(y_pred)``: what it computes for a dense
    single-label target written out (its array-API dispatch and checks cost ~100 us
    a call under scikit-learn 1.9, more than a small batch's forward pass)."""
    if not binarizer.sparse_input_:
        classes = binarizer.classes_
        if binarizer.y_type_ == "multiclass":
            return classes[np.argmax(y_pred, axis=1)]
        if binarizer.y_type_ == "binary" and y_pred.ndim == 1 and len(classes) == 2:
            threshold = (binarizer.pos_label + binarizer.neg_label) / 2.0
            return classes[(y_pred > threshold).astype(np.intp)]
    return binarizer.inverse_transform(y_pred)


# -------------------------------------------------------------------- classifier
class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, scikit-learn compatible, on fastnn kernels.

    A drop-in replacement for :class:`sklearn.neural_network.MLPClassifier`: the same
    parameters, defaults, methods, fitted attributes and training semantics (Glorot
    initialisation with the same random draws, L2 penalty ``0.5 * alpha * ||W||^2``
    divided by the (weighted) batch size and not applied to biases, one logistic
    output unit for binary problems, logistic outputs for multilabel targets, softmax
    otherwise, scikit-learn's SGD / Nesterov / Adam update formulas, L-BFGS through
    ``scipy.optimize.minimize``, early stopping, ``n_iter_no_change``, ``warm_start``,
    ``partial_fit`` and ``sample_weight``). With the same ``random_state`` and float64
    input the fitted weights agree with scikit-learn's to rounding error.

    The network is a :class:`fastnn.Sequential` on a fastnn backend (``backend=``,
    ``n_threads=``); ``coefs_`` and ``intercepts_`` are views of its flat parameter
    buffer (writing to them changes the model). fastnn adds ``class_weight`` and
    inverted ``dropout`` on the hidden layers; with their defaults the estimator
    behaves exactly like scikit-learn's.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function of the hidden layers.
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        The solver for weight optimization.
    alpha : float, default=0.0001
        Strength of the L2 regularization term, divided by the sample size (the sum
        of the sample weights of the batch) when added to the loss.
    batch_size : int or 'auto', default='auto'
        Size of minibatches for the stochastic solvers; 'auto' is
        ``min(200, n_samples)``. Not used by 'lbfgs'.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning rate schedule for ``solver='sgd'``: constant; ``learning_rate_init /
        (t + 1) ** power_t`` with ``t`` the samples seen; or divided by 5 each time
        ``n_iter_no_change`` epochs fail to improve by ``tol`` (stops below 1e-6).
    learning_rate_init : float, default=0.001
        The initial learning rate ('sgd' and 'adam').
    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule.
    max_iter : int, default=200
        Maximum number of epochs (stochastic solvers) or iterations ('lbfgs').
    shuffle : bool, default=True
        Whether to shuffle the samples in each epoch (stochastic solvers).
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the early-stopping split, the shuffling and
        the dropout masks.
    tol : float, default=1e-4
        Tolerance for the optimization (see ``n_iter_no_change``); ``gtol`` of L-BFGS.
    verbose : bool, default=False
        Whether to print progress messages to stdout.
    warm_start : bool, default=False
        Reuse the solution of the previous call to fit as initialization.
    momentum : float, default=0.9
        Momentum of the 'sgd' solver, in [0, 1].
    nesterovs_momentum : bool, default=True
        Whether to use Nesterov's momentum ('sgd' with ``momentum > 0``).
    early_stopping : bool, default=False
        Set aside a stratified ``validation_fraction`` of the training data and stop
        when the validation accuracy does not improve by ``tol`` for
        ``n_iter_no_change`` epochs; the best weights are restored.
    validation_fraction : float, default=0.1
        Proportion of the training data set aside for early stopping.
    beta_1 : float, default=0.9
        Decay rate of Adam's first-moment estimates, in [0, 1).
    beta_2 : float, default=0.999
        Decay rate of Adam's second-moment estimates, in [0, 1).
    epsilon : float, default=1e-8
        Adam's numerical-stability constant.
    n_iter_no_change : int, default=10
        Maximum number of epochs without ``tol`` improvement (stochastic solvers).
    max_fun : int, default=15000
        Maximum number of loss function calls ('lbfgs').
    backend : {'auto', 'numpy', 'numba', 'cython'}, default='auto'
        fastnn kernel backend; 'auto' takes the fastest available one.
    n_threads : int or None, default=None
        Threads for the kernels and BLAS during fit and predict (restored
        afterwards); None leaves fastnn's current setting.
    class_weight : dict, 'balanced' or None, default=None
        Weights associated with classes, ``{class_label: weight}``; 'balanced' uses
        ``n_samples / (n_classes * np.bincount(y))``. Multiplied into
        ``sample_weight``. Not supported for multilabel targets; 'balanced' is not
        supported by ``partial_fit``.
    dropout : float, default=0.0
        Probability of zeroing a hidden unit during training (inverted dropout: kept
        units are scaled by ``1 / (1 - dropout)``); no effect at prediction time.
        Only used by the stochastic solvers.

    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.
    loss_ : float
        The current loss computed with the loss function.
    best_loss_ : float or None
        The minimum loss reached by the stochastic solvers; None with early stopping.
    loss_curve_ : list of shape (n_iter_,)
        Loss at the end of each epoch (stochastic solvers).
    validation_scores_ : list of shape (n_iter_,) or None
        Validation accuracy per epoch with early stopping, else None.
    best_validation_score_ : float or None
        Best validation accuracy with early stopping, else None.
    t_ : int
        Number of training samples seen by the solver.
    coefs_ : list of shape (n_layers - 1,)
        Weight matrices, ``coefs_[i]`` of shape (fan_in, fan_out).
    intercepts_ : list of shape (n_layers - 1,)
        Bias vectors.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit (string column names only).
    n_iter_ : int
        Number of iterations the solver ran.
    n_layers_ : int
        Number of layers.
    n_outputs_ : int
        Number of outputs.
    out_activation_ : str
        'softmax' (multiclass) or 'logistic' (binary, multilabel).

    Notes
    -----
    Differences from scikit-learn, all at rounding level:

    - The multiclass loss is computed in logit space by the engine's fused kernel
      (``lse(z) - z_y``) instead of ``-log(clip(softmax(z)))``; the two differ only
      for rows whose probability of the true class is below the dtype's eps, where
      scikit-learn clips the loss. The gradient is ``softmax - onehot`` either way.
    - The SGD and Adam steps are fastnn's optimizers (PyTorch's formulation) with
      the hyper-parameters transformed so that the steps equal scikit-learn's.
    - Parameters keep the input's float dtype (float32 or float64); predictions
      are computed in it. 'lbfgs' computes in float64 (as scikit-learn effectively
      does) and casts the result back.
    - Training with 'sgd' or 'adam' runs each step as the engine's one compiled
      call (numba and cython backends): softmax cross-entropy for multiclass
      targets, sigmoid cross-entropy (scikit-learn's clipped binary log loss) for
      binary and multilabel ones; dropout takes the model's layer-by-layer path.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastnn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(solver="lbfgs", random_state=0, max_iter=500).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, {"balanced"}, None],
    }

    # scikit-learn's MLPClassifier sets this attribute (not a constructor parameter).
    loss = "log_loss"

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        n_threads=None,
        class_weight=None,
        dropout=0.0,
    ):
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            n_threads=n_threads,
            dropout=dropout,
        )
        self.class_weight = class_weight

    # ------------------------------------------------------------------ public API
    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit; required on the first call.

        Returns
        -------
        self : object
            The updated estimator.
        """
        check_params(self, self._parameter_constraints)
        if partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        self._check_is_fitted()
        return self._predict(X)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            Probability of each class, in the order of ``classes_``.
        """
        self._check_is_fitted()
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """Log of the probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    if NEW_TAGS:

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.sparse = True
            tags.classifier_tags.multi_label = True
            return tags

    else:  # scikit-learn < 1.6

        def _more_tags(self):
            return {"multilabel": True}

    # ------------------------------------------------------------ subclass hooks
    def _make_head(self):
        if self._label_binarizer.y_type_ == "multiclass":
            return _SoftmaxHead
        return _LogisticHead

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return _decode_labels(self._label_binarizer, y_pred)

    def _validation_score(self, X, y, sample_weight) -> float:
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _early_stopping_targets(self, y):
        return self._label_binarizer.inverse_transform(y)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _fold_weights(self, y, sample_weight, incremental):
        """Fold ``class_weight`` into ``sample_weight`` (None when both are None)."""
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel targets.")
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: the class "
                "frequencies of all the data are unknown. Compute the weights with "
                "sklearn.utils.class_weight.compute_class_weight and pass them as a "
                "dict."
            )
        index = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(np.intp)
        weights = compute_class_weight(
            self.class_weight, classes=self.classes_, y=self.classes_[index]
        )
        weights = weights[index]
        if sample_weight is not None:
            weights = weights * sample_weight
        return weights
