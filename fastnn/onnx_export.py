"""ONNX export of fastnn models and of ``fastnn.MLPClassifier``.

The graph is the model's forward pass in its own dtype (float32 or float64):
``MatMul`` + ``Add`` per Linear, the activation (``Relu``, ``PRelu`` for leaky ReLU
with its slope a constant of the graph's dtype, ``Sigmoid``, ``Tanh``; GELU as
``0.5 x (1 + Erf(x / sqrt 2))``, the exact form fastnn computes; in a float64 graph
the Erf runs in float32, the only precision onnxruntime has it in), then
``Softmax`` (or, for a binary MLPClassifier, the logistic unit and ``[1 - p, p]``;
for a multilabel one, a logistic unit per label). Input ``input`` of shape
(N, n_features); outputs ``label`` (the class labels, as ``predict`` gives them) and
``probabilities`` (as ``predict_proba``). A regressor
(``loss=fastnn.MeanSquaredError()``) has the identity output: one output
``predictions``, shaped as ``predict``'s ((N,) or (N, n_outputs)).

Opset 17 (``ai.onnx``), IR version 8: loads in onnxruntime >= 1.12 and any runtime
that implements opset 17. Needs the ``onnx`` package (``pip install "fastnn[onnx]"``).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np

from ._version import __version__
from .checkpoint import write_atomic
from .network import Network

__all__ = ["OPSET", "to_onnx"]

#: The ONNX operator set the exported graphs use.
OPSET = 17
_IR_VERSION = 8


def to_onnx(model: Any, path: str | os.PathLike | None = None) -> Any:
    """Export a fitted model's inference graph to ONNX.

    Parameters
    ----------
    model : fastnn.Sequential, fastnn.MLP, fastnn.MLPClassifier or MLPRegressor
        Fitted (a classifier: outputs ``label`` and ``probabilities``; a regressor:
        ``predictions``, shaped as ``predict`` returns them).
    path : path-like, optional
        Write the model here (atomically).

    Returns
    -------
    onnx.ModelProto
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(
            'ONNX export needs the onnx package: pip install "fastnn[onnx]"'
        ) from None
    stages, output, classes, dtype = _describe(model)
    graph = _Graph(dtype)
    x = "input"
    for i, (w, b, act, alpha) in enumerate(stages):
        if w is not None:
            x = graph.node("MatMul", [x, graph.const(f"W{i}", w)])
            if b is not None:  # Linear(bias=False) has none
                x = graph.node("Add", [x, graph.const(f"b{i}", b)])
        x = graph.activation(x, act, alpha)
    if output == "identity":  # a regressor: the last layer's values
        k = int(model.n_outputs_)
        # as predict: a Network's y of shape (n,) gives (n,) back; scikit-learn's
        # MLPRegressor ravels any single output
        ravel = model.target_ndim_ == 1 if isinstance(model, Network) else k == 1
        if ravel:
            flat = graph.const("flat_shape", np.array([-1], dtype=np.int64))
            graph.node("Reshape", [x, flat], name="predictions")
            shape: list = ["N"]
        else:
            graph.node("Identity", [x], name="predictions")
            shape = ["N", k]
        outputs = [("predictions", graph.elem, shape)]
        return _finish(onnx, graph, model, outputs, path)
    if output == "softmax":
        proba = graph.node("Softmax", [x], axis=1)
    elif output == "logistic":  # binary, one logistic unit: [1 - p, p]
        p = graph.node("Sigmoid", [x])
        q = graph.node("Sub", [graph.const("one", np.ones((1, 1), dtype)), p])
        proba = graph.node("Concat", [q, p], axis=1)
    else:  # multilabel: one logistic unit per label
        proba = graph.node("Sigmoid", [x])
    graph.node("Identity", [proba], name="probabilities")
    if output == "multilabel":
        half = graph.const("half", np.full((1, 1), 0.5, dtype))
        above = graph.node("Greater", [proba, half])
        graph.node("Cast", [above], name="label", to=onnx.TensorProto.INT64)
        label_type, label_shape = onnx.TensorProto.INT64, ["N", len(classes)]
    else:
        index = graph.node("ArgMax", [proba], axis=1, keepdims=0)
        table, label_type = _class_table(classes)
        graph.node("Gather", [graph.const("classes", table), index], name="label")
        label_shape = ["N"]
    outputs = [
        ("label", label_type, label_shape),
        ("probabilities", graph.elem, ["N", len(classes)]),
    ]
    return _finish(onnx, graph, model, outputs, path)


def _finish(onnx, graph, model, outputs, path) -> Any:
    """Build and check the graph's model; write it to ``path`` when given."""
    onnx_model = graph.build(int(model.n_features_in_), outputs, type(model).__name__)
    onnx.checker.check_model(onnx_model)
    if path is not None:
        buf = io.BytesIO()
        onnx.save_model(onnx_model, buf)
        write_atomic(path, lambda f: f.write(buf.getvalue()))
    return onnx_model


def _describe(model: Any):
    """(stages [(W, b, activation, alpha)], output activation, classes, dtype)."""
    if isinstance(model, Network):
        model._require_fitted()
        stages = [
            (
                None if s.linear is None else np.asarray(s.linear.weight),
                None
                if s.linear is None or s.linear.bias is None
                else np.asarray(s.linear.bias),
                s.activation,
                s.alpha,
            )
            for s in model._stages
        ]
        if model.is_regressor:
            return stages, "identity", None, np.dtype(model.dtype)
        return stages, "softmax", np.asarray(model.classes_), np.dtype(model.dtype)
    estimator = type(model).__name__
    if estimator in ("MLPClassifier", "MLPRegressor") and hasattr(model, "coefs_"):
        last = len(model.coefs_) - 1
        acts = {"logistic": "sigmoid"}
        hidden = acts.get(model.activation, model.activation)
        stages = [
            (w, b, hidden if i < last else "identity", 0.01)
            for i, (w, b) in enumerate(
                zip(model.coefs_, model.intercepts_, strict=True)
            )
        ]
        dtype = np.dtype(model.coefs_[0].dtype)
        if estimator == "MLPRegressor":
            return stages, "identity", None, dtype
        output = model.out_activation_
        if output == "logistic" and model.coefs_[-1].shape[1] > 1:
            # one logistic unit per label; a two-label problem has two classes_
            # too, so the count of classes cannot tell it from a binary one
            output = "multilabel"
        return stages, output, np.asarray(model.classes_), dtype
    if estimator in ("MLPClassifier", "MLPRegressor"):
        raise ValueError(f"this {estimator} is not fitted yet: call fit first")
    raise TypeError(
        f"cannot export {estimator}: expected a fastnn Sequential, MLP, "
        "MLPClassifier or MLPRegressor"
    )


def _class_table(classes: np.ndarray) -> tuple[np.ndarray, int]:
    from onnx import TensorProto

    if classes.dtype.kind == "b":  # predict gives bool labels: so does the graph
        return classes.astype(bool), TensorProto.BOOL
    if classes.dtype.kind in "iu":
        return classes.astype(np.int64), TensorProto.INT64
    if classes.dtype.kind == "f":
        return classes.astype(np.float64), TensorProto.DOUBLE
    return np.asarray([str(c) for c in classes], dtype=object), TensorProto.STRING


class _Graph:
    """Nodes and initializers of one ONNX graph, with generated names."""

    def __init__(self, dtype: np.dtype) -> None:
        from onnx import TensorProto

        self.dtype = dtype
        self.elem = {
            np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float64): TensorProto.DOUBLE,
        }[dtype]
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        if value.dtype.kind == "f" and name != "classes":  # float class labels stay
            value = value.astype(self.dtype)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        from onnx import helper

        self._count += 1
        out = name or f"{op.lower()}_{self._count}"
        self.nodes.append(
            helper.make_node(op, inputs, [out], name=f"n{self._count}_{op}", **attrs)
        )
        return out

    def activation(self, x: str, act: str, alpha: float) -> str:
        from onnx import TensorProto

        if act == "identity":
            return x
        if act == "relu":
            return self.node("Relu", [x])
        if act == "leaky_relu":  # PRelu: LeakyRelu's alpha is a float32 attribute
            slope = self.const(f"slope_{self._count}", self._scalar(alpha))
            return self.node("PRelu", [x, slope])
        if act == "sigmoid":
            return self.node("Sigmoid", [x])
        if act == "tanh":
            return self.node("Tanh", [x])
        if act == "gelu":  # exact GELU: 0.5 x (1 + erf(x / sqrt(2)))
            k = self._count
            scaled = self.node(
                "Mul", [x, self.const(f"inv_sqrt2_{k}", self._scalar(1 / math.sqrt(2)))]
            )
            if self.dtype == np.float64:  # onnxruntime has Erf in float32 only
                as32 = self.node("Cast", [scaled], to=TensorProto.FLOAT)
                erf32 = self.node("Erf", [as32])
                erf = self.node("Cast", [erf32], to=TensorProto.DOUBLE)
            else:
                erf = self.node("Erf", [scaled])
            one_plus = self.node("Add", [erf, self.const(f"one_{k}", self._scalar(1))])
            half_x = self.node("Mul", [x, self.const(f"half_{k}", self._scalar(0.5))])
            return self.node("Mul", [half_x, one_plus])
        raise ValueError(f"no ONNX form for activation {act!r}")

    def _scalar(self, v: float) -> np.ndarray:
        return np.asarray(v, dtype=self.dtype)

    def build(self, n_features: int, outputs: list[tuple], name: str) -> Any:
        """The model of the graph; ``outputs``: (name, element type, shape) each."""
        from onnx import helper

        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", self.elem, ["N", n_features])],
            [helper.make_tensor_value_info(*out) for out in outputs],
            self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="fastnn",
            producer_version=__version__,
        )
        model.ir_version = _IR_VERSION
        return model
