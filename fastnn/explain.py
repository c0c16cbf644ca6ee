"""Interpretability: which inputs a fitted classifier's output depends on.

* :func:`input_gradients`: the gradient of the per-sample loss, or of one class's
  logit (or probability), with respect to the input row.
* :func:`gradient_x_input`: that gradient times the input.
* :func:`integrated_gradients` (Sundararajan et al., 2017): the gradient averaged
  along the straight path from a baseline to the input, times (input - baseline).
* :func:`feature_reliance`: permutation importance, the drop in score when one
  feature's column is shuffled, with repeats and their spread.
* :func:`feature_table`, :func:`write_feature_table`, :func:`saliency_map`: a ranked
  feature table (CSV) and saliency maps (PNG) for reports.

Gradients run through the model's engine, in the model's dtype: the loss and class
probabilities through the backend's fused ``loss_grad`` (input gradient included),
class logits through a forward pass and the model's backward pass seeded on the
logits. They use buffers of their own: the model's parameters, parameter
gradients, optimizer state and training workspaces are not touched, so training can
continue afterwards. Integrated gradients evaluate many interpolation points per
kernel call.

Targets (``target=``) of the gradient functions:

* ``None``: the per-sample softmax cross-entropy ``l_i`` (with the model's label
  smoothing; class weights and the L2 term, which do not depend on x, are left out)
  against the labels ``y``, or against the predicted labels when ``y`` is not given;
* ``"predicted"``: each row's predicted class;
* a class label (from ``classes_``), or an array of one label per row.

For a class target, ``output="logit"`` (default) differentiates that class's logit and
``output="probability"`` its softmax probability.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._buffers import aligned_empty, aligned_zeros
from ._insight import as_sequential, new_figure, write_figure
from ._validation import check_int, check_y
from .checkpoint import write_atomic
from .model import Sequential

__all__ = [
    "FeatureReliance",
    "feature_reliance",
    "feature_table",
    "gradient_x_input",
    "input_gradients",
    "integrated_gradients",
    "saliency_map",
    "write_feature_table",
]

_OUTPUTS = ("logit", "probability")
_SCORINGS = ("accuracy", "neg_log_loss")
_BATCH_ROWS = 4096  # rows per kernel call


# ---------------------------------------------------------------- gradients
class _Gradients:
    """d f / d x of batches of rows, through the model's engine.

    On the standard Linear(+activation) stack the loss and a class probability take
    one ``loss_grad`` call: the per-row loss gradient with row weights n, and
    d p_c / d x = -p_c d l_c / d x (l_c the cross-entropy against class c). A class
    logit, and every target of other stacks, take a forward pass, a seed on the
    logits and the model's layer-by-layer backward pass. Workspaces and parameter
    gradients are buffers of this object: the model's own are not touched.
    """

    def __init__(self, model: Sequential) -> None:
        self.model = model
        self.kb = model._kernels()
        self.grads = aligned_zeros(model._params.shape[0], model.dtype)
        self.stage_grads = model.stage_grads(self.grads)
        self._workspaces: dict[int, Any] = {}  # a full batch and the last, partial one

    def workspace(self, n: int):
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= 2:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[n] = self.model._new_workspace(n, True)
        return ws

    def values(self, x: np.ndarray, idx: np.ndarray, kind: str) -> np.ndarray:
        """f of each row of x (float64)."""
        ws = self.workspace(x.shape[0])
        logits = self.model._forward(self.kb, x, ws)
        return _seed(self.model, self.kb, logits, idx, kind, ws.dlogits)

    def __call__(
        self, x: np.ndarray, idx: np.ndarray, kind: str, out: np.ndarray
    ) -> np.ndarray:
        """Write d f_i / d x_i of every row into ``out`` (shaped like x)."""
        m, kb = self.model, self.kb
        n = x.shape[0]
        ws = self.workspace(n)
        if kind != "logit" and m._uses_fused_kernels():
            weights = np.full(n, n, dtype=m.dtype)  # the gradient of each row's loss
            smoothing = m.loss.label_smoothing if kind == "loss" else 0.0
            m._loss_grad(
                kb, x, idx, weights, 0.0, ws.work, grads=self.grads, input_grad=out,
                label_smoothing=smoothing,
            )  # fmt: skip
            if kind == "probability":
                p = ws.dlogits  # free after loss_grad: p = softmax(logits) here
                kb.softmax(ws.out[-1], p)
                out *= -p[np.arange(n), idx][:, None]
            return out
        logits = m._forward(kb, x, ws)
        _seed(m, kb, logits, idx, kind, ws.dlogits)
        return m._backward(kb, x, ws, self.stage_grads, input_grad=out)


# ------------------------------------------------------------------ targets
def _predicted(model: Sequential, Xc: np.ndarray) -> np.ndarray:
    idx = np.empty(Xc.shape[0], dtype=np.intp)
    for i, j, logits in model._logits_chunks(Xc):
        np.argmax(logits, axis=1, out=idx[i:j])
    return idx


def _resolve_target(
    model: Sequential, Xc: np.ndarray, target: Any, y: Any, output: str
) -> tuple[str, np.ndarray]:
    """("loss" | "logit" | "probability", class index of each row)."""
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    n = Xc.shape[0]
    if target is None:
        if y is None:
            return "loss", _predicted(model, Xc)
        return "loss", model._encode(check_y(y, n))
    if y is not None:
        raise ValueError(
            "y is only used with target=None (the loss); pass y or target, not both"
        )
    if isinstance(target, str) and target == "predicted":
        return output, _predicted(model, Xc)
    t = np.asarray(target)
    if t.ndim == 0:
        return output, np.full(n, model._encode(t.reshape(1))[0], dtype=np.intp)
    if t.shape == (n,):
        return output, model._encode(t)
    raise ValueError(
        "target must be None, 'predicted', a class label or one label per row "
        f"(shape ({n},)); got an array of shape {t.shape}"
    )


def _seed(
    model: Sequential, kb, logits: np.ndarray, idx: np.ndarray, kind: str, d
) -> np.ndarray:
    """Write d(objective)/d(logits) into ``d``; return the objective (float64)."""
    n = logits.shape[0]
    rows = np.arange(n)
    if kind == "loss":
        row_loss = np.empty(n, dtype=logits.dtype)
        kb.softmax_cross_entropy(
            logits,
            idx,
            label_smoothing=model.loss.label_smoothing,
            grad_out=d,
            row_loss_out=row_loss,
        )
        d *= d.dtype.type(n)  # the kernel's gradient is of the mean loss
        return row_loss.astype(np.float64)
    if kind == "logit":
        values = logits[rows, idx].astype(np.float64)
        d.fill(0)
        d[rows, idx] = 1
        return values
    kb.softmax(logits, d)  # d p_c / d z = p_c (onehot_c - p)
    pc = d[rows, idx].copy()
    d *= -pc[:, None]
    d[rows, idx] += pc
    return pc.astype(np.float64)


def _prepare(model: Any, X: Any, what: str) -> tuple[Sequential, np.ndarray]:
    seq = as_sequential(model, what)
    return seq, seq._check_predict_X(X)


# ---------------------------------------------------------------- gradients
def input_gradients(
    model: Any,
    X: Any,
    target: Any = None,
    *,
    y: Any = None,
    output: str = "logit",
    batch_size: int = _BATCH_ROWS,
) -> np.ndarray:
    """Gradient of the loss, or of one class's output, with respect to each input row.

    Parameters
    ----------
    model : fitted Sequential, MLP or MLPClassifier
    X : array-like of shape (n_samples, n_features)
    target : None, "predicted", class label or array-like of shape (n_samples,)
        What to differentiate (see the module docstring). None: the per-sample
        loss ``l_i`` against ``y`` (or the predicted labels without ``y``).
    y : array-like of shape (n_samples,), optional
        True labels, for ``target=None`` only.
    output : {"logit", "probability"}, default="logit"
        For class targets: differentiate the class's logit or its probability.
    batch_size : int, default=4096
        Rows per kernel call.

    Returns
    -------
    ndarray of shape (n_samples, n_features), in the model's dtype
        Row i is ``d f_i / d x_i``.
    """
    seq, Xc = _prepare(model, X, "input_gradients")
    batch_size = check_int("batch_size", batch_size, 1)
    out = np.empty_like(Xc)
    gradients = _Gradients(seq)
    with seq._threads():
        kind, idx = _resolve_target(seq, Xc, target, y, output)
        for i in range(0, Xc.shape[0], batch_size):
            j = min(Xc.shape[0], i + batch_size)
            gradients(Xc[i:j], idx[i:j], kind, out[i:j])
    return out


def gradient_x_input(
    model: Any,
    X: Any,
    target: Any = None,
    *,
    y: Any = None,
    output: str = "logit",
    batch_size: int = _BATCH_ROWS,
) -> np.ndarray:
    """Gradient times input, ``x * d f / d x`` (arguments as :func:`input_gradients`).

    The first-order share of each feature in ``f(x)`` relative to an all-zero input
    (exact for a model linear in x).
    """
    seq, Xc = _prepare(model, X, "gradient_x_input")
    grads = input_gradients(seq, Xc, target, y=y, output=output, batch_size=batch_size)
    grads *= Xc
    return grads


def _path_rule(n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of a quadrature rule over n_steps."""
    if method == "midpoint":
        return (np.arange(n_steps) + 0.5) / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "trapezoid":
        w = np.full(n_steps + 1, 1.0 / n_steps)
        w[[0, -1]] *= 0.5
        return np.arange(n_steps + 1) / n_steps, w
    raise ValueError(f"method must be 'midpoint' or 'trapezoid', got {method!r}")


def _baseline(baseline: Any, Xc: np.ndarray) -> np.ndarray:
    """The baseline as an array broadcastable to Xc, in its dtype."""
    n, d = Xc.shape
    if baseline is None:
        return np.zeros((1, d), dtype=Xc.dtype)
    b = np.asarray(baseline)
    if b.dtype.kind not in "biuf":
        raise ValueError(f"baseline must be numeric, got dtype {b.dtype}")
    if b.ndim == 0:
        b = np.full((1, d), b)
    elif b.shape == (d,):
        b = b.reshape(1, d)
    elif b.shape != (n, d):
        raise ValueError(
            f"baseline must be a number, shape ({d},) or shape ({n}, {d}); "
            f"got shape {b.shape}"
        )
    if not np.isfinite(b).all():
        raise ValueError("baseline contains NaN or infinity")
    return np.ascontiguousarray(b, dtype=Xc.dtype)


def integrated_gradients(
    model: Any,
    X: Any,
    target: Any = "predicted",
    *,
    y: Any = None,
    baseline: Any = None,
    n_steps: int = 64,
    method: str = "midpoint",
    output: str = "logit",
    batch_size: int = _BATCH_ROWS,
    return_delta: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Integrated gradients: ``(x - b) * mean over the path of d f / d x``.

    ``IG_j(x) = (x_j - b_j) * integral_0^1 d f(b + a (x - b)) / d x_j da``, the
    integral taken with ``n_steps`` intervals of a midpoint or trapezoid rule.
    Completeness: ``sum_j IG_j(x) = f(x) - f(b)``, up to the quadrature error, for
    the ``f`` that ``target`` and ``output`` select (by default the logit of the
    class predicted at ``x``, which stays fixed along the path).

    Parameters
    ----------
    model : fitted Sequential, MLP or MLPClassifier
    X : array-like of shape (n_samples, n_features)
    target : default="predicted"
        As in :func:`input_gradients`; the class (or the label of the loss) is
        fixed per row, resolved at x.
    y : array-like of shape (n_samples,), optional
        Labels for ``target=None`` (the loss).
    baseline : float, array-like of shape (n_features,) or (n_samples, n_features)
        Default: zeros (for standardized data: the mean input).
    n_steps : int, default=64
        Intervals of the quadrature (midpoint: ``n_steps`` gradient evaluations,
        trapezoid: ``n_steps + 1``).
    method : {"midpoint", "trapezoid"}, default="midpoint"
    output : {"logit", "probability"}, default="logit"
    batch_size : int, default=4096
        Interpolation points (rows) per kernel call.
    return_delta : bool, default=False
        Also return the completeness gap ``sum_j IG_j - (f(x) - f(b))`` per row.

    Returns
    -------
    attributions : ndarray of shape (n_samples, n_features), the model's dtype
    delta : ndarray of shape (n_samples,), float64
        Only with ``return_delta=True``.
    """
    seq, Xc = _prepare(model, X, "integrated_gradients")
    n_steps = check_int("n_steps", n_steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    alphas, weights = _path_rule(n_steps, method)
    B = np.broadcast_to(_baseline(baseline, Xc), Xc.shape)
    n, d = Xc.shape
    S = alphas.shape[0]
    per_call = max(1, batch_size // S)  # samples per kernel call
    a = alphas.astype(Xc.dtype)[None, :, None]
    w = weights.astype(Xc.dtype)
    attr = np.empty_like(Xc)
    gradients = _Gradients(seq)
    with seq._threads():
        kind, idx = _resolve_target(seq, Xc, target, y, output)
        path = grad = None
        for i in range(0, n, per_call):
            j = min(n, i + per_call)
            m = j - i
            diff = Xc[i:j] - B[i:j]
            if path is None or path.shape[0] != m * S:
                path = aligned_empty((m * S, d), Xc.dtype)
                grad = aligned_empty((m * S, d), Xc.dtype)
            np.add(B[i:j, None, :], a * diff[:, None, :], out=path.reshape(m, S, d))
            gradients(path, np.repeat(idx[i:j], S), kind, grad)
            g = grad.reshape(m, S, d)
            np.multiply(diff, np.einsum("msd,s->md", g, w), out=attr[i:j])
        if not return_delta:
            return attr
        f_x = _objective(gradients, Xc, idx, kind, batch_size)
        f_b = _objective(gradients, np.ascontiguousarray(B), idx, kind, batch_size)
    delta = attr.sum(axis=1, dtype=np.float64) - (f_x - f_b)
    return attr, delta


def _objective(gradients, A, idx, kind, batch_size) -> np.ndarray:
    """f of each row of A (the value that the gradient functions differentiate)."""
    out = np.empty(A.shape[0])
    for i in range(0, A.shape[0], batch_size):
        j = min(A.shape[0], i + batch_size)
        out[i:j] = gradients.values(A[i:j], idx[i:j], kind)
    return out


# ----------------------------------------------------------- feature reliance
@dataclass(frozen=True, eq=False)
class FeatureReliance:
    """Permutation importance of every feature (see :func:`feature_reliance`).

    Attributes
    ----------
    importances : ndarray of shape (n_features, n_repeats)
        ``baseline_score - score with the feature's column shuffled``, per repeat.
    baseline_score : float
        The score on the unshuffled data.
    scoring : str
    feature_names : tuple of str
    """

    importances: np.ndarray
    baseline_score: float
    scoring: str
    feature_names: tuple[str, ...]

    @property
    def importances_mean(self) -> np.ndarray:
        """Mean over repeats, shape (n_features,)."""
        return self.importances.mean(axis=1)

    @property
    def importances_std(self) -> np.ndarray:
        """Standard deviation over repeats (ddof=0), shape (n_features,)."""
        return self.importances.std(axis=1)

    @property
    def ranking(self) -> np.ndarray:
        """Feature indices, most relied-on first (ties: lower index first)."""
        return rank_features(self.importances_mean)

    def rank_of(self, feature: int | str) -> int:
        """1-based rank of a feature, given by index or name."""
        d = len(self.feature_names)
        if isinstance(feature, str):
            if feature not in self.feature_names:
                raise ValueError(
                    f"no feature named {feature!r}; the features are "
                    f"{list(self.feature_names)}"
                )
            j = self.feature_names.index(feature)
        else:
            j = int(feature)
            if not -d <= j < d:
                raise IndexError(
                    f"feature index {feature} out of range for {d} features"
                )
            j %= d
        return int(np.flatnonzero(self.ranking == j)[0]) + 1


def rank_features(scores: Any) -> np.ndarray:
    """Indices sorting ``scores`` from largest to smallest (stable: ties keep order)."""
    s = np.asarray(scores, dtype=np.float64)
    return np.argsort(-s, kind="stable")


def _feature_names(names: Sequence[str] | None, d: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"x{j}" for j in range(d))
    names = tuple(str(v) for v in names)
    if len(names) != d:
        raise ValueError(f"feature_names has {len(names)} entries, X has {d} features")
    return names


def feature_reliance(
    model: Any,
    X: Any,
    y: Any,
    *,
    n_repeats: int = 5,
    scoring: str = "accuracy",
    random_state: int | np.random.Generator | None = None,
    feature_names: Sequence[str] | None = None,
) -> FeatureReliance:
    """Permutation importance: how much the score drops when a feature is shuffled.

    :func:`sklearn.inspection.permutation_importance` with the model's own scores:
    for every feature j and repeat r, column j of X is permuted (the other columns
    are kept) and the model is scored again; the importance is the baseline score
    minus that score. A model that leans on a feature loses much when it is
    shuffled.

    Parameters
    ----------
    model : fitted Sequential, MLP or MLPClassifier
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_repeats : int, default=5
    scoring : {"accuracy", "neg_log_loss"}, default="accuracy"
        Higher is better for both (neg_log_loss: minus the mean cross-entropy).
    random_state : int or Generator, optional
    feature_names : sequence of str, optional

    Returns
    -------
    FeatureReliance
    """
    from sklearn.inspection import permutation_importance

    seq, Xc = _prepare(model, X, "feature_reliance")
    n, d = Xc.shape
    idx = seq._encode(check_y(y, n))
    n_repeats = check_int("n_repeats", n_repeats, 1)
    if scoring not in _SCORINGS:
        raise ValueError(f"scoring must be one of {_SCORINGS}, got {scoring!r}")
    names = _feature_names(feature_names, d)
    if isinstance(random_state, np.random.Generator):  # scikit-learn takes a seed
        random_state = int(random_state.integers(2**32 - 1))
    with seq._threads():
        kb = seq._kernels()

        def score(_estimator, A, labels):
            return _scores(seq, kb, np.ascontiguousarray(A), labels, 1, scoring)[0]

        base = score(None, Xc, idx)
        result = permutation_importance(
            seq, Xc, idx, scoring=score, n_repeats=n_repeats, random_state=random_state
        )
    return FeatureReliance(result.importances, float(base), scoring, names)


def _scores(seq, kb, A, labels, k, scoring) -> np.ndarray:
    """Score of each of the k equal row blocks of A."""
    per_row = np.empty(A.shape[0])
    for i, j, logits in seq._logits_chunks(A):
        if scoring == "accuracy":
            per_row[i:j] = logits.argmax(axis=1) == labels[i:j]
        else:
            row = np.empty(j - i, dtype=logits.dtype)
            kb.softmax_cross_entropy(
                logits, labels[i:j], compute_grad=False, row_loss_out=row
            )
            per_row[i:j] = -row
    return per_row.reshape(k, -1).mean(axis=1)


# ------------------------------------------------------------------- reports
def feature_table(
    attributions: Any,
    *,
    feature_names: Sequence[str] | None = None,
    reliance: FeatureReliance | None = None,
    top: int | None = None,
) -> list[dict[str, Any]]:
    """Features ranked by mean absolute attribution, as rows of a table.

    Parameters
    ----------
    attributions : array-like of shape (n_samples, n_features)
        E.g. from :func:`integrated_gradients` or :func:`gradient_x_input`.
    feature_names : sequence of str, optional
    reliance : FeatureReliance, optional
        Adds its mean, spread and rank to each row.
    top : int, optional
        Keep only the first ``top`` rows.

    Returns
    -------
    list of dict
        One per feature, best first: ``rank``, ``feature``, ``index``,
        ``mean_abs_attribution``, ``mean_attribution`` (and ``reliance_mean``,
        ``reliance_std``, ``reliance_rank``).
    """
    A = np.asarray(attributions, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0:
        raise ValueError(f"attributions must be 2-D and non-empty, got {A.shape}")
    d = A.shape[1]
    names = _feature_names(feature_names, d)
    mean_abs = np.abs(A).mean(axis=0)
    mean = A.mean(axis=0)
    rel_rank = None
    if reliance is not None:
        if reliance.importances.shape[0] != d:
            raise ValueError(
                f"reliance covers {reliance.importances.shape[0]} features, "
                f"attributions {d}"
            )
        rel_rank = np.empty(d, dtype=np.intp)
        rel_rank[reliance.ranking] = np.arange(1, d + 1)
    rows = []
    for r, j in enumerate(rank_features(mean_abs)[: top if top is not None else d]):
        row = {
            "rank": r + 1,
            "feature": names[j],
            "index": int(j),
            "mean_abs_attribution": float(mean_abs[j]),
            "mean_attribution": float(mean[j]),
        }
        if reliance is not None:
            row["reliance_mean"] = float(reliance.importances_mean[j])
            row["reliance_std"] = float(reliance.importances_std[j])
            row["reliance_rank"] = int(rel_rank[j])
        rows.append(row)
    return rows


def write_feature_table(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write :func:`feature_table` rows as CSV (atomically)."""
    if not rows:
        raise ValueError("no rows to write")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
        )
    path = Path(path)
    write_atomic(path, lambda f: f.write(text.getvalue().encode()))
    return path


def saliency_map(
    attribution: Any,
    path: str | Path,
    *,
    image_shape: tuple[int, int],
    image: Any = None,
    title: str = "Saliency map",
    label: str = "attribution",
) -> Path:
    """Write a saliency map (PNG): the attribution of one row drawn as an image.

    Signed attributions use a diverging colour map centred on 0 (red: pushes the
    output up, blue: down); non-negative ones (e.g. mean absolute values) a
    sequential one. With ``image`` the input is drawn beside it.

    Parameters
    ----------
    attribution : array-like of shape (height * width,)
    path : path-like
        Where the PNG goes (written atomically).
    image_shape : (int, int)
        (height, width).
    image : array-like of shape (height * width,), optional
    title : str
    label : str
        Colour-bar label.

    Returns
    -------
    Path
    """
    h, w = (int(v) for v in image_shape)
    a = np.asarray(attribution, dtype=np.float64).ravel()
    if a.size != h * w:
        raise ValueError(
            f"attribution has {a.size} values, image_shape {h}x{w} needs {h * w}"
        )
    panels = [("attribution", a)]
    if image is not None:
        img = np.asarray(image, dtype=np.float64).ravel()
        if img.size != h * w:
            raise ValueError(f"image has {img.size} values, expected {h * w}")
        panels.insert(0, ("input", img))
    fig = new_figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (kind, v) in zip(axes, panels, strict=True):
        v = v.reshape(h, w)
        if kind == "input":
            im = ax.imshow(v, cmap="gray_r", interpolation="nearest")
            ax.set_title("input", fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.8, label="input value")
        else:
            if np.nanmin(v) >= 0:
                im = ax.imshow(v, cmap="viridis", vmin=0, interpolation="nearest")
            else:
                lim = float(np.nanmax(np.abs(v))) or 1.0
                im = ax.imshow(
                    v, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
                )
            # the figure's title may already name the quantity: no second copy
            said = label.lower() in title.lower()
            ax.set_title("per pixel" if said else label, fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        ax.set_xlabel("column (pixel)")
        ax.set_ylabel("row (pixel)")
    fig.suptitle(title, fontsize=11)
    return write_figure(fig, path)
