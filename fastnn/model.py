"""Sequential models: the user-facing model API (fit, predict, evaluate, save).

A :class:`Sequential` is a :class:`~fastnn.network.Network` (structure, flat
parameters, workspaces, forward pass) with the engine's steps
(:class:`~fastnn.step.Steps`); ``fit`` runs the one training loop
(:func:`fastnn.training.fit`) and ``save`` writes through :mod:`fastnn.serialize`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import serialize, training
from ._scores import confidence_from_logits
from ._validation import check_sample_weight, weights_in_dtype
from .callbacks import Callback, History
from .layers import Layer, Linear, activation_layer, layer_from_config
from .losses import loss_from_config
from .network import DTYPES, Network, NotFittedError
from .onnx_export import to_onnx
from .optim import optimizer_from_config
from .step import Steps
from .summary import model_summary
from .training import validation_size

__all__ = ["MLP", "NotFittedError", "Sequential", "validation_size"]


@serialize.register
class Sequential(Network, Steps):
    """A stack of layers trained with softmax cross-entropy (classification) or mean
    squared error (regression).

    Regression: ``Sequential([...], loss=fastnn.MeanSquaredError())`` (or
    ``loss="mse"``, as in Keras), the last Linear having one output per target and
    no activation after it; ``fit(X, y)`` takes float y of shape (n,) or (n, k),
    ``predict`` returns values of y's shape, ``evaluate`` the loss, MSE, MAE and R²
    and ``score`` R².

    Parameters
    ----------
    layers : sequence of Layer
        ``Linear`` and activation layers. Each Linear followed by an activation runs
        as one fused kernel call. The last layer's output are the logits (the
        predicted values of a regressor).
    loss : SoftmaxCrossEntropy, MeanSquaredError or str, optional
        Default: plain softmax cross-entropy. Names: "cross_entropy", "mse".
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
        Class labels (set by ``fit``); output ``k`` scores ``classes_[k]``. A
        regressor has none.
    target_ndim_ : int
        A fitted regressor's: 1 when fitted on y of shape (n,), 2 for (n, k).
    n_features_in_ : int
        Input width.
    stop_training : bool
        Set by a callback to stop ``fit`` after the current epoch.
    """

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
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Labels of any hashable, mutually comparable type (mapped through
            ``classes_``); for a regressor finite float targets, (n_samples,) with
            one output.
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
            Hold out this stratified fraction of (X, y) for validation (a random
            one for a regressor; ignored when ``validation_data`` is given).
        callbacks : iterable of Callback or callable, or None
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
        return training.fit(
            self, X, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
            validation_data=validation_data, validation_split=validation_split,
            callbacks=callbacks, seed=seed, verbose=verbose, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, resume=resume,
            sample_weight=sample_weight, classes=classes,
            compiled_step=compiled_step,
        )  # fmt: skip

    # ------------------------------------------------------------ inference
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (pre-softmax scores), shape (n_samples, n_classes)."""
        self._require_fitted()
        Xc = self._check_predict_X(X)
        out = np.empty((Xc.shape[0], self.n_outputs_), dtype=self.dtype)
        with self._threads():
            for i, j, logits in self._logits_chunks(Xc):
                out[i:j] = logits
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns as classes_."""
        self._require_classifier("predict_proba")
        self._require_fitted()
        Xc = self._check_predict_X(X)
        kb = self._kernels()
        out = np.empty((Xc.shape[0], self.n_outputs_), dtype=self.dtype)
        with self._threads():
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
        self._require_classifier("confidence")
        return confidence_from_logits(self.decision_function(X), temperature)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class label of each row (values from classes_); for a
        regressor the predicted values, shaped as the y it was fitted on ((n,) or
        (n, n_outputs)), in the model dtype."""
        self._require_fitted()
        Xc = self._check_predict_X(X)
        if self.is_regressor:
            return self._predict_values(Xc)
        idx = np.empty(Xc.shape[0], dtype=np.intp)
        with self._threads():
            for i, j, logits in self._logits_chunks(Xc):
                np.argmax(logits, axis=1, out=idx[i:j])
        return self.classes_[idx]

    def _predict_values(self, Xc: np.ndarray) -> np.ndarray:
        """A regressor's outputs for validated X, shaped as its targets."""
        out = np.empty((Xc.shape[0], self.n_outputs_), dtype=self.dtype)
        with self._threads():
            for i, j, values in self._logits_chunks(Xc):
                out[i:j] = values
        return out.ravel() if self.target_ndim_ == 1 else out

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
        """Loss (as in training, L2 and label smoothing included) and accuracy; for
        a regressor the loss, MSE, MAE and R².

        The regression metrics are scikit-learn's (``mean_squared_error``,
        ``mean_absolute_error``, ``r2_score``, outputs averaged uniformly), weighted
        by ``sample_weight``.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``; for a regressor
            ``{"loss", "mse", "mae", "r2"}``.
        """
        self._require_fitted()
        Xc = self._check_predict_X(X)
        y_checked = self._check_y(y, Xc.shape[0])
        y_idx = self._training_targets(y_checked, None)
        sw = None
        if sample_weight is not None:
            sw = weights_in_dtype(
                check_sample_weight(sample_weight, Xc.shape[0]), self.dtype
            )
        with self._threads():
            logs = self._evaluate_encoded(Xc, y_idx, sw, "")
        if self.is_regressor:
            pred = self._predict_values(Xc).reshape(y_idx.shape)
            logs.update(self.loss.metrics(y_checked.reshape(y_idx.shape), pred, sw))
        return logs

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y); R² for a regressor."""
        return self.evaluate(X, y)["r2" if self.is_regressor else "accuracy"]

    def _require_classifier(self, method: str) -> None:
        if self.is_regressor:
            raise AttributeError(
                f"{method} is for classifiers; this model regresses (loss "
                f"{self.loss!r}): use predict for its values"
            )

    # ------------------------------------------------------- save / restore
    def save(self, path: str | Path) -> None:
        """Write weights, classes, optimizer state and architecture to ``path``.

        The file is a ``.npz`` without pickled objects, written atomically; read it
        back with :func:`fastnn.load`.
        """
        serialize.save(self, path)

    def summary(self, print_fn: Any = print) -> str:
        """Print (with ``print_fn``; None: do not print) and return a Keras-style
        table of the layers: names and types, output shapes, parameter counts,
        and the totals."""
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

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n], dtype={self.dtype.name})"


@serialize.register
class MLP(Sequential):
    """A multi-layer perceptron: Linear layers with one activation between them.

    ``MLP(sizes=(784, 256, 10), activation="relu")`` is
    ``Sequential([Linear(784, 256), ReLU(), Linear(256, 10)])``.

    Parameters
    ----------
    sizes : sequence of int
        Input width, hidden widths, number of classes (or of regression targets,
        with ``loss=fastnn.MeanSquaredError()``); at least two entries.
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


def _common_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "loss": loss_from_config(config["loss"]),
        "optimizer": optimizer_from_config(config["optimizer"]),
        "dtype": DTYPES[config["dtype"]],
    }
