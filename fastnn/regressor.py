"""fastnn.MLPRegressor: a drop-in replacement for scikit-learn's MLPRegressor.

The regressor is :class:`fastnn.estimator._BaseMLP` (parameters, model, solvers,
stopping rules, shared with :class:`fastnn.MLPClassifier`) with an identity output
trained on the engine's squared-error loss code, float targets of shape (n,) or
(n, n_outputs), and R² as the early-stopping score.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import column_or_1d
from sklearn.utils.metaestimators import available_if

from ._sklearn_compat import NEW_TAGS, check_params, validate_data
from .estimator import _BaseMLP

__all__ = ["MLPRegressor"]


class _IdentityHead:
    """Identity output, half squared error: fused into the engine's step (its
    ``squared_error`` loss code); ``loss_delta`` serves dropout."""

    out_activation = "identity"
    loss = "squared_error"
    # scikit-learn's loss value is the mean over the outputs, the engine's the sum
    mean_over_outputs = True

    @staticmethod
    def targets(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=dtype)

    @staticmethod
    def loss_delta(kb, logits, targets, weights, delta) -> float:
        """The engine's mean loss (summed over the outputs); d loss / d outputs."""
        loss, _ = kb.squared_error(
            logits, targets, sample_weight=weights, grad_out=delta
        )
        return loss

    @staticmethod
    def output(kb, logits: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, logits)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn compatible, on fastnn kernels.

    A drop-in replacement for :class:`sklearn.neural_network.MLPRegressor`: the same
    parameters, defaults, methods, fitted attributes and training semantics (Glorot
    initialisation with the same random draws, identity output, half squared error
    averaged over the samples and the outputs, L2 penalty ``0.5 * alpha * ||W||^2``
    divided by the (weighted) batch size and not applied to biases, scikit-learn's
    SGD / Nesterov / Adam update formulas, L-BFGS through ``scipy.optimize.minimize``,
    early stopping on R², ``n_iter_no_change``, ``warm_start``, ``partial_fit`` and
    ``sample_weight``). With the same ``random_state`` and float64 input the fitted
    weights agree with scikit-learn's to rounding error.

    The network is a :class:`fastnn.Sequential` on a fastnn backend (``backend=``,
    ``n_threads=``); ``coefs_`` and ``intercepts_`` are views of its flat parameter
    buffer (writing to them changes the model). fastnn adds inverted ``dropout`` on
    the hidden layers; with its default the estimator behaves exactly like
    scikit-learn's.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function of the hidden layers.
    loss : {'squared_error'}, default='squared_error'
        The loss minimised: half the squared error. scikit-learn (1.7 and later)
        also offers 'poisson', which fastnn does not.
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
        Set aside a random ``validation_fraction`` of the training data and stop
        when the validation R² does not improve by ``tol`` for ``n_iter_no_change``
        epochs; the best weights are restored.
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
    dropout : float, default=0.0
        Probability of zeroing a hidden unit during training (inverted dropout: kept
        units are scaled by ``1 / (1 - dropout)``); no effect at prediction time.
        Only used by the stochastic solvers.

    Attributes
    ----------
    loss_ : float
        The current loss computed with the loss function.
    best_loss_ : float or None
        The minimum loss reached by the stochastic solvers; None with early stopping.
    loss_curve_ : list of shape (n_iter_,)
        Loss at the end of each epoch (stochastic solvers).
    validation_scores_ : list of shape (n_iter_,) or None
        Validation R² per epoch with early stopping, else None.
    best_validation_score_ : float or None
        Best validation R² with early stopping, else None.
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
        'identity'.

    Notes
    -----
    Differences from scikit-learn, all at rounding level unless said otherwise:

    - ``loss`` comes after ``activation`` and is keyword-only here: scikit-learn 1.7
      made it the first positional parameter, before which ``hidden_layer_sizes``
      was; positional ``hidden_layer_sizes`` and ``activation`` keep working.
    - The SGD and Adam steps are fastnn's optimizers (PyTorch's formulation) with
      the hyper-parameters transformed so that the steps equal scikit-learn's.
    - Parameters keep the input's float dtype (float32 or float64); predictions
      are computed in it. 'lbfgs' computes in float64 (as scikit-learn effectively
      does) and casts the result back.
    - Training with 'sgd' or 'adam' runs each step as the engine's one compiled
      call (numba and cython backends), its squared-error loss code; dropout takes
      the model's layer-by-layer path.
    - As in scikit-learn, the reported loss averages the squared error over the
      outputs while its gradient (and so the training) sums over them.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import scale
    >>> from fastnn import MLPRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> X, y = scale(X), y / y.std()
    >>> reg = MLPRegressor(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=1000,
    ...                    random_state=0)
    >>> reg.fit(X, y).score(X, y) > 0.5
    True
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [{"squared_error"}],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        loss="squared_error",
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
        self.loss = loss

    # ------------------------------------------------------------------ public API
    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The updated estimator.
        """
        check_params(self, self._parameter_constraints)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predict using the multi-layer perceptron model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values: one column per output, raveled for a single one.
        """
        self._check_is_fitted()
        return self._predict(X)

    if NEW_TAGS:

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.sparse = True
            return tags

    # ------------------------------------------------------------ subclass hooks
    def _make_head(self):
        return _IdentityHead

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _validation_score(self, X, y, sample_weight) -> float:
        y_pred = self._predict(X, check_input=False)
        if not np.isfinite(y_pred).all():
            return np.nan
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if not reset and n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} output(s), the fitted network "
                f"{self.n_outputs_}: warm_start and partial_fit need the same "
                "number of outputs"
            )
        return X, y
