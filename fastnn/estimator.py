"""fastnn.MLPClassifier: a drop-in replacement for scikit-learn's MLPClassifier.

The estimator reproduces scikit-learn's semantics (parameters, defaults, random draws,
update formulas, stopping rules, fitted attributes) and runs the forward pass, the loss
and the backward pass through a fastnn kernel backend (:mod:`fastnn.kernels`).
"""

from __future__ import annotations

import math
import warnings
from itertools import chain
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import (
    _safe_indexing,
    check_random_state,
    column_or_1d,
    gen_batches,
    shuffle,
)
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    type_of_target,
    unique_labels,
)
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from .kernels import BACKEND_NAMES, activation_code, get_backend
from .threads import num_threads

__all__ = ["MLPClassifier"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")


def _writable_param(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` itself if C-contiguous, writeable and of ``dtype``, else a copy."""
    if (
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.writeable
    ):
        return a
    return np.array(a, dtype=dtype, order="C")


# --------------------------------------------------------------------------- kernels
class _Kernels:
    """A backend's kernels as one fit calls them, validated once per call site.

    A site is an op at one layer and batch size. Its first call goes through the
    public, validating API; later calls there pass the same workspace buffers and
    parameters (or same-shaped, same-layout views of them) and go straight to the
    raw kernel: ~5-15 us less per call, about 10% of a 784-256-128-10 step at batch 200.
    """

    def __init__(self, backend, dtype):
        self.backend = backend
        self.raw = backend.raw
        self._empty = np.empty(0, dtype)  # an absent optional array, raw-kernel style
        self._checked = set()
        self._codes = {}  # activation name -> code

    def _code(self, act) -> int:
        code = self._codes.get(act)
        if code is None:
            code = self._codes[act] = activation_code(act)
        return code

    def _first(self, site) -> bool:
        if site in self._checked:
            return False
        self._checked.add(site)
        return True

    def linear_forward(self, site, x, w, b, act, out):
        if self._first(("forward", *site)):
            self.backend.linear_forward(x, w, b, act, out=out)
        else:
            self.raw.linear_forward(x, w, b, out, self._empty, self._code(act),
                                    0.01)  # fmt: skip

    def linear_backward(self, site, dy, x, w, y, act, dw_out, db_out, dx_out, wd):
        """dz into dy itself; dx when ``dx_out`` is not None (y stands for z: the
        derivatives of the estimator's activations read y, or z's sign as y's)."""
        if self._first(("backward", *site)):
            self.backend.linear_backward(
                dy, x, w, y, y, act, dz_out=dy, dw_out=dw_out, db_out=db_out,
                dx_out=dx_out, compute_dx=dx_out is not None, weight_decay=wd,
            )  # fmt: skip
        else:
            dx = self._empty if dx_out is None else dx_out
            self.raw.linear_backward(dy, x, w, y, y, dy, dw_out, db_out, dx,
                                     self._code(act), 0.01, wd)  # fmt: skip

    def softmax_cross_entropy(self, site, logits, labels, sample_weight, grad_out,
                              row_loss_out):  # fmt: skip
        if self._first(("loss", *site)):
            self.backend.softmax_cross_entropy(
                logits, labels, sample_weight=sample_weight, grad_out=grad_out,
                row_loss_out=row_loss_out,
            )  # fmt: skip
        else:
            w = self._empty if sample_weight is None else sample_weight
            self.raw.softmax_cross_entropy(logits, labels, w, grad_out, row_loss_out,
                                           0.0)  # fmt: skip

    def sgd_update(self, site, param, grad, velocity, lr, momentum, nesterov, wd, sq):
        """The step; returns sum(param**2) before it when ``sq``, else 0.0."""
        if self._first(("sgd", site)):
            out = np.zeros(1) if sq else None
            self.backend.sgd_update(param, grad, velocity, lr=lr, momentum=momentum,
                                    nesterov=nesterov, weight_decay=wd,
                                    sq_norm_out=out)  # fmt: skip
            return 0.0 if out is None else float(out[0])
        v = self._empty if velocity is None else velocity.reshape(-1)
        return self.raw.sgd_update(param.reshape(-1), grad.reshape(-1), v, lr, momentum,
                                   nesterov, wd, sq)  # fmt: skip

    def adam_update(self, site, param, grad, m, v, step, lr, beta1, beta2, eps, wd,
                    sq):  # fmt: skip
        """The step; returns sum(param**2) before it when ``sq``, else 0.0."""
        if self._first(("adam", site)):
            out = np.zeros(1) if sq else None
            self.backend.adam_update(param, grad, m, v, step=step, lr=lr, beta1=beta1,
                                     beta2=beta2, eps=eps, weight_decay=wd,
                                     sq_norm_out=out)  # fmt: skip
            return 0.0 if out is None else float(out[0])
        return self.raw.adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1),
                                    v.reshape(-1), lr, beta1, beta2, eps, step, wd,
                                    False, sq)  # fmt: skip


# ------------------------------------------------------------------------ optimizers
class _SGDOptimizer:
    """scikit-learn's SGD with momentum, run through the kernel's PyTorch-form update.

    scikit-learn keeps v <- mu v - lr g and adds v (Nesterov: mu v - lr g) to the
    parameter. The kernel keeps u = -v / lr: u <- mu u + g, p -= lr u (Nesterov:
    p -= lr (g + mu u)); the two agree exactly while lr is constant, and when the
    schedule changes lr, u is rescaled by lr_old / lr_new so v is carried over.
    """

    def __init__(self, params, learning_rate_init, lr_schedule, momentum, nesterov,
                 power_t):  # fmt: skip
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov) and self.momentum > 0
        self.power_t = power_t
        self.velocities = (
            [np.zeros_like(p) for p in params] if self.momentum > 0 else None
        )

    def update_params(self, kernels, params, grads, n_coefs, weight_decay):
        """One in-place step on every parameter array, ``weight_decay * param`` added
        to the gradient of the first ``n_coefs`` (the weight matrices). Returns their
        summed squares before the step (the loss's L2 term), read in the same pass."""
        sq = 0.0
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            sq += kernels.sgd_update(
                i,
                param,
                grad,
                None if self.velocities is None else self.velocities[i],
                self.learning_rate,
                self.momentum,
                self.nesterov,
                weight_decay if i < n_coefs else 0.0,
                i < n_coefs,
            )
        return sq

    def _set_learning_rate(self, lr):
        if self.velocities is not None and lr != self.learning_rate:
            scale = self.learning_rate / lr
            for velocity in self.velocities:
                velocity *= velocity.dtype.type(scale)
        self.learning_rate = lr

    def iteration_ends(self, time_step):
        """Update the learning rate at the end of an epoch ('invscaling')."""
        if self.lr_schedule == "invscaling":
            self._set_learning_rate(
                float(self.learning_rate_init) / (time_step + 1) ** self.power_t
            )

    def trigger_stopping(self, msg, verbose):
        """True to stop; 'adaptive' divides the learning rate by 5 instead."""
        if self.lr_schedule != "adaptive":
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


class _AdamOptimizer:
    """scikit-learn's Adam, run through the kernel's PyTorch-form update.

    scikit-learn: p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps). The kernel:
    p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps'), identical for
    eps' = eps / sqrt(1-b2^t).
    """

    def __init__(self, params, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.ms = [np.zeros_like(p) for p in params]
        self.vs = [np.zeros_like(p) for p in params]

    def update_params(self, kernels, params, grads, n_coefs, weight_decay):
        """As :meth:`_SGDOptimizer.update_params`."""
        self.t += 1
        bias2 = 1.0 - self.beta_2**self.t
        self.learning_rate = (
            self.learning_rate_init * math.sqrt(bias2) / (1.0 - self.beta_1**self.t)
        )
        eps = self.epsilon / math.sqrt(bias2)
        sq = 0.0
        for i, (param, grad, m, v) in enumerate(
            zip(params, grads, self.ms, self.vs, strict=True)
        ):
            sq += kernels.adam_update(
                i, param, grad, m, v, self.t, float(self.learning_rate_init),
                float(self.beta_1), float(self.beta_2), eps,
                weight_decay if i < n_coefs else 0.0, i < n_coefs,
            )  # fmt: skip
        return sq

    def iteration_ends(self, time_step):
        """Nothing to do at the end of an epoch."""

    def trigger_stopping(self, msg, verbose):
        """Always stop."""
        if verbose:
            print(msg + " Stopping.")
        return True


# ------------------------------------------------------------------------- workspace
class _Workspace:
    """Buffers for one batch size: outputs, gradients, dropout masks, row losses."""

    def __init__(self, layer_units, batch_size, dtype, dropout, n_features, sparse):
        n_layers = len(layer_units) - 1
        units = layer_units[1:]
        self.y = [np.empty((batch_size, u), dtype) for u in units]  # f(z) per layer
        self.d = [np.empty((batch_size, u), dtype) for u in units]  # dLoss/d output
        hidden = range(n_layers - 1) if dropout > 0 else ()
        self.mask = {i: np.empty((batch_size, units[i]), dtype) for i in hidden}
        self.a = {i: np.empty((batch_size, units[i]), dtype) for i in hidden}
        self.row_loss = np.empty(batch_size, dtype)
        self.coef_grads = [
            np.empty((fan_in, fan_out), dtype)
            for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:], strict=True)
        ]
        self.intercept_grads = [np.empty(u, dtype) for u in units]
        self.x = None if sparse else np.empty((batch_size, n_features), dtype)


# ------------------------------------------------------------------------- estimator
class MLPClassifier(ClassifierMixin, BaseEstimator):
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

    The forward pass, the softmax cross-entropy (one fused kernel in logit space) and
    the backward pass run on a fastnn backend (``backend=``, ``n_threads=``). fastnn
    adds ``class_weight`` and inverted ``dropout`` on the hidden layers; with their
    defaults the estimator behaves exactly like scikit-learn's.

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

    - The multiclass loss is computed in logit space by one fused kernel
      (``lse(z) - z_y``) instead of ``-log(softmax(z))``; each row's loss is then
      clipped to ``[-log(1 - eps), -log(eps)]``, which is exactly scikit-learn's
      clipping of the probabilities to ``[eps, 1 - eps]``. The gradient is the same
      ``softmax - onehot`` either way.
    - The SGD and Adam steps are the kernels' PyTorch-form updates with the
      hyper-parameters transformed so that the steps equal scikit-learn's.
    - Parameters keep the input's float dtype (float32 or float64). 'lbfgs' computes
      in float64 (as scikit-learn effectively does) and casts the result back.

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
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"auto", *BACKEND_NAMES})],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
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
        self.class_weight = class_weight
        self.dropout = dropout

    # ------------------------------------------------------------------ public API
    @_fit_context(prefer_skip_nested_validation=True)
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
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                f" optimizers. {self.solver} is not stochastic."
            )
        return True

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
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
        if _check_partial_fit_first_call(self, classes):
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
        check_is_fitted(self)
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
        check_is_fitted(self)
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

    def to_onnx(self, path=None):
        """Export the fitted estimator's inference graph to ONNX.

        Outputs ``label`` (as :meth:`predict`) and ``probabilities`` (as
        :meth:`predict_proba`), opset :data:`fastnn.onnx_export.OPSET`. Needs
        ``pip install "fastnn[onnx]"``.

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_label = True
        return tags

    # ------------------------------------------------------------------ prediction
    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _forward_pass_fast(self, X, check_input=True):
        """Output-layer probabilities of X (no state is stored)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        dtype = np.result_type(X.dtype, self.coefs_[0].dtype)
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float64)
        backend = get_backend(self.backend)
        last = self.n_layers_ - 2
        with num_threads(self.n_threads):
            a = X.astype(dtype) if sp.issparse(X) else np.ascontiguousarray(X, dtype)
            for i in range(last + 1):
                w = np.ascontiguousarray(self.coefs_[i], dtype)
                b = np.ascontiguousarray(self.intercepts_[i], dtype)
                if i < last:
                    act = self.activation
                else:
                    act = (
                        "sigmoid" if self.out_activation_ == "logistic" else "identity"
                    )
                if sp.issparse(a):
                    z = np.ascontiguousarray(a @ w)
                    z += b
                    a = backend.activation_forward(z, act, out=z)
                else:
                    a = backend.linear_forward(a, w, b, act)
            if self.out_activation_ == "softmax":
                backend.softmax(a, out=a)
        return a

    # --------------------------------------------------------------------- fitting
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

    def _class_sample_weight(self, y, sample_weight, incremental):
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
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        sample_weight = self._class_sample_weight(y, sample_weight, incremental)

        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        dtype = np.dtype(self.coefs_[0].dtype)
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float64)
        self.coefs_ = [_writable_param(c, dtype) for c in self.coefs_]
        self.intercepts_ = [_writable_param(b, dtype) for b in self.intercepts_]
        X = (
            X.astype(dtype).tocsr()
            if sp.issparse(X)
            else np.ascontiguousarray(X, dtype)
        )
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, dtype=dtype)

        with num_threads(self.n_threads):
            backend = get_backend(self.backend)
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(
                    backend, X, y, sample_weight, layer_units, incremental
                )
            else:
                self._fit_lbfgs(backend, X, y, sample_weight, layer_units)

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
        if self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self.coefs_ = []
        self.intercepts_ = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:], strict=True):
            coef, intercept = self._init_coef(fan_in, fan_out, dtype)
            self.coefs_.append(coef)
            self.intercepts_.append(intercept)
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

    def _init_coef(self, fan_in, fan_out, dtype):
        # Glorot et al. uniform initialisation, biases included (scikit-learn's draws)
        factor = 2.0 if self.activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef.astype(dtype, copy=False), intercept.astype(dtype, copy=False)

    # ---------------------------------------------------------- loss and gradient
    def _backprop(self, kernels, ws, X, y, labels, sample_weight, n, dropout_rng,
                  penalty=True):  # fmt: skip
        """Loss of rows ``[:n]`` and its gradients into ``ws.coef_grads`` etc.

        ``X`` holds exactly the batch rows; ``y`` is the float target matrix (logistic
        outputs) and ``labels`` the class indices (softmax output) of the batch.
        ``penalty=False`` leaves the L2 term out of both (the stochastic solvers add
        it in the optimizer's update, which reads the weights anyway).
        """
        last = self.n_layers_ - 2
        dropout = self.dropout if dropout_rng is not None else 0.0
        sw_sum = n if sample_weight is None else float(sample_weight.sum())
        sparse = sp.issparse(X)

        # forward
        a = X
        for i in range(last + 1):
            out = ws.y[i][:n]
            if i < last:
                act = self.activation
            else:
                act = "sigmoid" if self.out_activation_ == "logistic" else "identity"
            if i == 0 and sparse:
                np.copyto(out, a @ self.coefs_[i])
                out += self.intercepts_[i]
                kernels.backend.activation_forward(out, act, out=out)
            else:
                kernels.linear_forward(
                    (i, n), a, self.coefs_[i], self.intercepts_[i], act, out
                )
            a = out
            if i < last and dropout > 0:
                mask = ws.mask[i][:n]
                dropout_rng.random(out=mask)
                mask += mask.dtype.type(1.0 - dropout)
                np.floor(mask, out=mask)
                mask *= mask.dtype.type(1.0 / (1.0 - dropout))
                a = np.multiply(out, mask, out=ws.a[i][:n])

        # loss and its gradient w.r.t. the output layer's pre-activation
        delta = ws.d[last][:n]
        out = ws.y[last][:n]
        eps = np.finfo(out.dtype).eps
        if self.out_activation_ == "softmax":
            w = None if sample_weight is None else sample_weight * (n / sw_sum)
            row_loss = ws.row_loss[:n]
            kernels.softmax_cross_entropy((n,), out, labels, w, delta, row_loss)
            # -log(clip(p, eps, 1 - eps)) == clip(-log p, -log(1 - eps), -log eps);
            # two ufuncs: np.clip's Python dispatch costs more than the clipping
            np.maximum(row_loss, -np.log1p(-eps), out=row_loss)
            np.minimum(row_loss, -np.log(eps), out=row_loss)
        else:
            np.subtract(out, y, out=delta)
            p = np.clip(out, eps, 1 - eps)
            row_loss = -np.log(np.where(y, p, 1 - p)).sum(axis=1)
            if sample_weight is None:
                delta *= delta.dtype.type(1.0 / n)
            else:
                delta *= (sample_weight / sw_sum)[:, None]
        if sample_weight is None:
            loss = float(row_loss.sum()) / n
        else:
            loss = float(np.dot(sample_weight, row_loss)) / sw_sum
        weight_decay = 0.0
        if penalty:
            values = sum(float(np.dot(c.ravel(), c.ravel())) for c in self.coefs_)
            loss += (0.5 * self.alpha) * values / sw_sum
            weight_decay = self.alpha / sw_sum

        # backward
        for i in range(last, -1, -1):
            dy = ws.d[i][:n]
            act = "identity" if i == last else self.activation
            y_i = dy if i == last else ws.y[i][:n]  # sigmoid/tanh read y; relu: y ~ z
            if i < last and dropout > 0:
                dy *= ws.mask[i][:n]
            x = X if i == 0 else (ws.a[i - 1] if dropout > 0 else ws.y[i - 1])[:n]
            if i == 0 and sparse:
                kernels.backend.activation_backward(dy, y_i, y_i, act, out=dy)
                np.copyto(ws.coef_grads[i], x.T @ dy)
                if weight_decay:  # 0: the stochastic solvers' update adds it
                    ws.coef_grads[i] += (
                        ws.coef_grads[i].dtype.type(weight_decay) * (self.coefs_[i])
                    )
                np.sum(dy, axis=0, out=ws.intercept_grads[i])
                continue
            kernels.linear_backward(
                (i, n), dy, x, self.coefs_[i], y_i, act, ws.coef_grads[i],
                ws.intercept_grads[i], ws.d[i - 1][:n] if i > 0 else None,
                weight_decay,
            )  # fmt: skip
        return loss

    def _targets(self, y, dtype):
        """(float targets for logistic outputs, class indices for softmax)."""
        if self.out_activation_ == "softmax":
            return None, np.ascontiguousarray(y.argmax(axis=1), dtype=np.intp)
        return np.ascontiguousarray(y, dtype=dtype), None

    # ---------------------------------------------------------------- L-BFGS
    def _fit_lbfgs(self, backend, X, y, sample_weight, layer_units):
        dtype = self.coefs_[0].dtype
        work = np.dtype(np.float64)  # L-BFGS-B runs in float64; so do its gradients
        X = X.astype(work) if sp.issparse(X) else np.ascontiguousarray(X, work)
        if sample_weight is not None:
            sample_weight = sample_weight.astype(work)
        params = [p.astype(work) for p in self.coefs_ + self.intercepts_]
        n_coefs = len(self.coefs_)
        self.coefs_, self.intercepts_ = params[:n_coefs], params[n_coefs:]
        bounds = np.cumsum([0] + [p.size for p in params])
        n = X.shape[0]
        ws = _Workspace(layer_units, n, work, 0.0, X.shape[1], sp.issparse(X))
        y_float, labels = self._targets(y, work)
        grads = ws.coef_grads + ws.intercept_grads
        packed_grad = np.empty(bounds[-1], work)
        kernels = _Kernels(backend, work)

        def loss_grad(packed):
            for p, start, end in zip(params, bounds[:-1], bounds[1:], strict=True):
                p.reshape(-1)[:] = packed[start:end]
            loss = self._backprop(
                kernels, ws, X, y_float, labels, sample_weight, n, None
            )
            for g, start, end in zip(grads, bounds[:-1], bounds[1:], strict=True):
                packed_grad[start:end] = g.reshape(-1)
            return loss, packed_grad

        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        options = {
            "maxfun": self.max_fun,
            "maxiter": self.max_iter,
            "gtol": self.tol,
            **_get_additional_lbfgs_options_dict("iprint", iprint),
        }
        opt_res = scipy.optimize.minimize(
            loss_grad,
            np.concatenate([p.reshape(-1) for p in params]),
            method="L-BFGS-B",
            jac=True,
            options=options,
        )
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        final = [
            opt_res.x[start:end].reshape(p.shape).astype(dtype)
            for p, start, end in zip(params, bounds[:-1], bounds[1:], strict=True)
        ]
        self.coefs_, self.intercepts_ = final[:n_coefs], final[n_coefs:]

    # ---------------------------------------------------------------- SGD / Adam
    def _fit_stochastic(self, backend, X, y, sample_weight, layer_units, incremental):
        params = self.coefs_ + self.intercepts_
        n_coefs = len(self.coefs_)
        if not incremental or not hasattr(self, "_optimizer"):
            if self.solver == "sgd":
                self._optimizer = _SGDOptimizer(
                    params,
                    self.learning_rate_init,
                    self.learning_rate,
                    self.momentum,
                    self.nesterovs_momentum,
                    self.power_t,
                )
            else:
                self._optimizer = _AdamOptimizer(
                    params,
                    self.learning_rate_init,
                    self.beta_1,
                    self.beta_2,
                    self.epsilon,
                )

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # don't stratify in multilabel classification
            stratify = y if self.n_outputs_ == 1 else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X,
                    y,
                    random_state=self._random_state,
                    test_size=self.validation_fraction,
                    stratify=stratify,
                )
                sample_weight_train = sample_weight_val = None
            else:
                (
                    X_train,
                    X_val,
                    y_train,
                    y_val,
                    sample_weight_train,
                    sample_weight_val,
                ) = train_test_split(
                    X,
                    y,
                    sample_weight,
                    random_state=self._random_state,
                    test_size=self.validation_fraction,
                    stratify=stratify,
                )
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, y_train, sample_weight_train = X, y, sample_weight
            X_val = y_val = sample_weight_val = None

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
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

        dtype = self.coefs_[0].dtype
        sparse = sp.issparse(X_train)
        ws = _Workspace(
            layer_units, batch_size, dtype, self.dropout, X_train.shape[1], sparse
        )
        y_float, labels = self._targets(y_train, dtype)
        dropout_rng = None
        if self.dropout > 0:
            dropout_rng = np.random.default_rng(
                self._random_state.randint(np.iinfo(np.int32).max)
            )
        grads = ws.coef_grads + ws.intercept_grads
        kernels = _Kernels(backend, dtype)

        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = shuffle(sample_idx, random_state=self._random_state)
                accumulated_loss = 0.0
                for batch_slice in gen_batches(n_samples, batch_size):
                    n = batch_slice.stop - batch_slice.start
                    batch_idx = sample_idx[batch_slice] if self.shuffle else batch_slice
                    if sparse:
                        X_batch = _safe_indexing(X_train, batch_idx)
                    elif self.shuffle:
                        # mode="clip": "raise" (the default) buffers ``out``
                        X_batch = np.take(
                            X_train, batch_idx, axis=0, out=ws.x[:n], mode="clip"
                        )
                    else:
                        X_batch = X_train[batch_slice]
                    sw = (
                        None
                        if sample_weight_train is None
                        else sample_weight_train[batch_idx]
                    )
                    batch_loss = self._backprop(
                        kernels,
                        ws,
                        X_batch,
                        None if y_float is None else y_float[batch_idx],
                        None if labels is None else labels[batch_idx],
                        sw,
                        n,
                        dropout_rng,
                        penalty=False,
                    )
                    # the L2 term: its gradient and the squared weights in the update
                    sw_sum = n if sw is None else float(sw.sum())
                    values = self._optimizer.update_params(
                        kernels, params, grads, n_coefs, self.alpha / sw_sum
                    )
                    batch_loss += (0.5 * self.alpha) * values / sw_sum
                    accumulated_loss += batch_loss * n

                self.n_iter_ += 1
                self.loss_ = accumulated_loss / X_train.shape[0]
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")

                self._update_no_improvement_count(
                    early_stopping, X_val, y_val, sample_weight_val
                )
                self._optimizer.iteration_ends(self.t_)

                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = (
                            "Validation score did not improve more than "
                            f"tol={self.tol:f} for {self.n_iter_no_change:d} "
                            "consecutive epochs."
                        )
                    else:
                        msg = (
                            "Training loss did not improve more than "
                            f"tol={self.tol:f} for {self.n_iter_no_change:d} "
                            "consecutive epochs."
                        )
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0

                if incremental:
                    break

                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                        "reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)

        if early_stopping:
            # restore best weights
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight):
        if early_stopping:
            y_pred = self._predict(X, check_input=False)
            if (
                np.issubdtype(y_pred.dtype, np.floating)
                and not np.isfinite(y_pred).all()
            ):
                val_score = np.nan
            else:
                val_score = accuracy_score(y, y_pred, sample_weight=sample_weight)
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
