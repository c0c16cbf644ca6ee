"""fastnn.calibration: confidence scores, temperature scaling, expected calibration
error, reliability diagrams, and out-of-distribution AUROC / FPR@95%TPR."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from plotting import assert_titled_and_labelled, capture_figures
from sklearn.metrics import roc_auc_score, roc_curve

import fastnn
from fastnn import calibration as cal
from fastnn.layers import Linear


@functools.cache
def _digits_model(backend_name: str):
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    model = fastnn.MLP((64, 64, 10), backend=backend_name)
    model.fit(X_tr, y_tr, epochs=20, seed=0, verbose=0)
    return model, X_tr, X_te, y_te


# ---------------------------------------------------------------- confidence
def test_confidence_from_logits_by_hand():
    z = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 1.0]])
    s = cal.confidence_from_logits(z)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(s["max_softmax"], p.max(axis=1), rtol=1e-14)
    np.testing.assert_allclose(s["entropy"], -(p * np.log(p)).sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(s["energy"], -np.log(np.exp(z).sum(axis=1)), rtol=1e-14)
    top = np.sort(p, axis=1)
    np.testing.assert_allclose(s["margin"], top[:, -1] - top[:, -2], atol=1e-15)
    assert s["entropy"][1] == pytest.approx(np.log(3)) and s["margin"][1] == 0.0
    # temperature: softmax(z / T); energy -T logsumexp(z / T)
    t = cal.confidence_from_logits(z, temperature=2.0)
    np.testing.assert_allclose(
        t["max_softmax"], cal.confidence_from_logits(z / 2)["max_softmax"]
    )
    np.testing.assert_allclose(
        t["energy"], 2 * cal.confidence_from_logits(z / 2)["energy"]
    )
    assert list(s) == list(cal.SCORES)


def test_confidence_is_stable_for_extreme_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e30, -1e30, -1e30]], dtype=np.float32)
    s = cal.confidence_from_logits(z)
    for v in s.values():
        assert np.isfinite(v).all()
    assert s["max_softmax"][0] == 1.0 and s["entropy"][0] == 0.0
    assert s["energy"][0] == pytest.approx(-1e4)
    nan = cal.confidence_from_logits(np.array([[np.nan, 0.0]]))
    assert np.isnan(nan["max_softmax"]).all()  # NaN propagates, never a silent 0
    # entropy too: it was 0 ("certain") on NaN logits, and on +inf ones
    assert np.isnan(nan["entropy"]).all() and np.isnan(nan["margin"]).all()
    inf = cal.confidence_from_logits(np.array([[np.inf, 0.0, 1.0]]))
    assert np.isnan(inf["entropy"]).all() and np.isnan(inf["max_softmax"]).all()
    # a certain row's entropy is +0.0, not -0.0 (printed as "-0.0" in JSON)
    assert math.copysign(1.0, s["entropy"][0]) == 1.0


def test_model_confidence_method(backend):
    model, _, X_te, _ = _digits_model(backend.name)
    s = model.confidence(X_te[:50])
    assert set(s) == set(cal.SCORES)
    for v in s.values():
        assert v.shape == (50,) and v.dtype == np.float64
    p = model.predict_proba(X_te[:50])
    np.testing.assert_allclose(s["max_softmax"], p.max(axis=1), rtol=1e-5)
    assert np.all((s["margin"] >= 0) & (s["margin"] <= 1))
    assert np.all(s["entropy"] <= np.log(10) + 1e-9)
    warm = model.confidence(X_te[:50], temperature=3.0)
    assert np.all(warm["max_softmax"] <= s["max_softmax"] + 1e-12)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        model.confidence(X_te[:5], temperature=0)
    with pytest.raises(ValueError, match="X has 3 features"):
        model.confidence(X_te[:5, :3])


# -------------------------------------------------------- temperature scaling
def _overconfident(seed=0):
    """Over-fitted on 300 images (large logits): T > 1 should help."""
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    model = fastnn.MLP((64, 256, 10), optimizer=fastnn.Adam(lr=1e-2))
    model.fit(X_tr[:300], y_tr[:300], epochs=100, seed=seed, verbose=0)
    return model, (X_tr[300:], y_tr[300:]), (X_te, y_te)


def _underconfident(seed=0):
    """Label smoothing 0.3 keeps probabilities low: T < 1 should help."""
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    model = fastnn.MLP(
        (64, 64, 10), loss=fastnn.SoftmaxCrossEntropy(label_smoothing=0.3)
    )
    model.fit(X_tr, y_tr, epochs=20, seed=seed, verbose=0)
    return model, (X_te[::2], y_te[::2]), (X_te[1::2], y_te[1::2])


@pytest.mark.parametrize(
    "make, hotter", [(_overconfident, True), (_underconfident, False)]
)
def test_temperature_scaling_lowers_held_out_ece(make, hotter):
    model, (X_val, y_val), (X_test, y_test) = make()
    scaled = fastnn.calibrate(model, X_val, y_val)
    assert isinstance(scaled, fastnn.TemperatureScaled)
    assert (scaled.temperature_ > 1.2) if hotter else (scaled.temperature_ < 0.8)
    assert scaled.nll_after_ < scaled.nll_before_
    before = cal.expected_calibration_error(y_test, model.predict_proba(X_test))
    after = cal.expected_calibration_error(y_test, scaled.predict_proba(X_test))
    assert after < 0.8 * before, (before, after)
    # the labels do not change, the model is not touched
    np.testing.assert_array_equal(scaled.predict(X_test), model.predict(X_test))
    assert scaled.score(X_test, y_test) == model.score(X_test, y_test)


def test_temperature_scaled_model_api():
    model, _, X_te, y_te = _digits_model("numpy")
    scaled = cal.TemperatureScaled(model, 2.5)
    z = model.decision_function(X_te)
    np.testing.assert_allclose(scaled.decision_function(X_te), z / 2.5, rtol=1e-6)
    p = np.exp(z / 2.5 - (z / 2.5).max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scaled.predict_proba(X_te), p, rtol=1e-5, atol=1e-7)
    for k, v in scaled.confidence(X_te).items():
        np.testing.assert_allclose(v, cal.confidence(model, X_te, temperature=2.5)[k])
        np.testing.assert_allclose(v, cal.confidence(scaled, X_te)[k])
    np.testing.assert_array_equal(scaled.classes_, model.classes_)
    assert scaled.n_features_in_ == 64 and "2.5" in repr(scaled)
    refit = fastnn.calibrate(scaled, X_te, y_te)  # re-fitted from the wrapped model
    assert refit.model is model
    with pytest.raises(ValueError, match="temperature must be finite"):
        cal.TemperatureScaled(model, -1.0)
    with pytest.raises(ValueError, match="low < high"):
        fastnn.calibrate(model, X_te, y_te, bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="previously unseen labels"):
        fastnn.calibrate(model, X_te, y_te + 20)


def test_calibrate_errors_name_bounds_and_y_val():
    # bounds were checked as temperatures ("temperature must be finite and > 0,
    # got 0"), or unpacked ("not enough values to unpack"); y_val=None gave
    # "y should be a 1d array, got an array of shape ()"
    model, _, X_te, y_te = _digits_model("numpy")
    for bad in [(0.0, 10.0), (-1.0, 2.0), (1.0, math.inf), (1.0,), (1, 2, 3), None]:
        with pytest.raises((TypeError, ValueError), match="^bounds must be"):
            fastnn.calibrate(model, X_te, y_te, bounds=bad)
    with pytest.raises(TypeError, match="^bounds must be"):
        fastnn.calibrate(model, X_te, y_te, bounds=("a", 2.0))
    with pytest.raises(TypeError, match="y_val"):
        fastnn.calibrate(model, X_te, None)


def test_calibrate_warns_when_the_temperature_hits_a_bound():
    # validation rows that the model classifies perfectly: the NLL falls as T -> 0,
    # and T came back at the lower bound without a word
    model, _, X_te, y_te = _digits_model("numpy")
    right = model.predict(X_te) == y_te
    with pytest.warns(RuntimeWarning, match="lower bound"):
        scaled = fastnn.calibrate(model, X_te[right], y_te[right])
    assert scaled.temperature_ == pytest.approx(0.01, rel=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.calibrate(model, X_te, y_te)  # an interior minimum: no warning


def test_calibrate_recovers_a_known_temperature():
    """Labels drawn from softmax(x W); a model with logits 3 x W x is 3x too hot."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 4))
    X = rng.normal(size=(20000, 5))
    logits = X @ W
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.random((X.shape[0], 1)) > p.cumsum(axis=1)).sum(axis=1)
    model = fastnn.Sequential([Linear(5, 4)], dtype=np.float64, backend="numpy")
    model.fit(X[:40], np.arange(40) % 4, epochs=1, verbose=0)
    model.linears[0].weight[...] = 3 * W
    model.linears[0].bias[...] = 0
    scaled = fastnn.calibrate(model, X, y)
    assert scaled.temperature_ == pytest.approx(3.0, rel=0.05)


# ----------------------------------------------------------------------- ECE
def test_expected_calibration_error_by_hand():
    # bins of width 0.5: rows 0-1 in (0.5, 1], row 2 in (0, 0.5]
    y_prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.6, 0.4]])
    y_true = np.array([0, 0, 1, 0])
    curve = cal.reliability_curve(y_true, y_prob, n_bins=2)
    np.testing.assert_array_equal(curve["count"], [0, 4])
    np.testing.assert_allclose(curve["bin_edges"], [0, 0.5, 1])
    assert curve["confidence"][1] == pytest.approx((0.9 + 0.8 + 0.55 + 0.6) / 4)
    assert curve["accuracy"][1] == pytest.approx(3 / 4)
    assert np.isnan(curve["accuracy"][0])
    ece = cal.expected_calibration_error(y_true, y_prob, n_bins=2)
    assert ece == pytest.approx(abs(0.75 - 0.7125))
    ece10 = cal.expected_calibration_error(y_true, y_prob, n_bins=10)
    # bins (0.5,0.6]: rows 2,3 (conf .55,.6; both right); (0.7,0.8]: row 1 (wrong);
    # (0.8,0.9]: row 0 (right)
    assert ece10 == pytest.approx((2 * abs(1 - 0.575) + 0.8 + 0.1) / 4)
    labels = cal.expected_calibration_error(
        np.array(["a", "a", "b", "a"]), y_prob, n_bins=2, classes=["a", "b"]
    )
    assert labels == pytest.approx(ece)


def test_perfectly_calibrated_probabilities_have_small_ece():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, size=200_000)
    y_prob = np.stack([conf, 1 - conf], axis=1)
    y_true = (rng.random(conf.size) > conf).astype(int)  # right with prob conf
    assert cal.expected_calibration_error(y_true, y_prob) < 0.005
    assert cal.expected_calibration_error(1 - y_true, y_prob) > 0.4


def test_calibration_input_errors():
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="y_true has shape"):
        cal.expected_calibration_error([0, 1], p)
    with pytest.raises(ValueError, match="not in classes"):
        cal.expected_calibration_error([0, 1, 5], p)
    with pytest.raises(ValueError, match="NaN or infinity"):
        cal.expected_calibration_error([0, 1, 1], np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="classes has shape"):
        cal.expected_calibration_error([0, 1, 1], p, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        cal.expected_calibration_error([0, 1, 1], p, n_bins=0)


def test_reliability_diagram_png(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch, cal)
    model, _, X_te, y_te = _digits_model("numpy")
    path = cal.reliability_diagram(
        y_te,
        {
            "model": model.predict_proba(X_te),
            "T = 2": cal.TemperatureScaled(model, 2.0).predict_proba(X_te),
        },
        tmp_path / "rel.png",
        classes=model.classes_,
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    assert_titled_and_labelled(fig)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("ECE" in t for t in legend)


# ----------------------------------------------------------------------- OOD
@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 8, size=57).astype(float)  # many ties
    b = rng.integers(0, 6, size=31).astype(float)
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    assert cal.auroc(a, b) == pytest.approx(roc_auc_score(y, np.r_[a, b]), abs=1e-12)
    c, d = rng.normal(size=100), rng.normal(0.5, size=80)
    assert cal.auroc(c, d) == pytest.approx(
        roc_auc_score(np.r_[np.ones(100), np.zeros(80)], np.r_[c, d]), abs=1e-12
    )


def test_auroc_extremes():
    assert cal.auroc([2, 3], [0, 1]) == 1.0
    assert cal.auroc([0, 1], [2, 3]) == 0.0
    assert cal.auroc([1, 1], [1, 1, 1]) == 0.5
    with pytest.raises(ValueError, match="at least one value"):
        cal.auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        cal.auroc([np.nan], [1.0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tpr", [0.95, 0.8, 1.0])
def test_fpr_at_tpr_matches_sklearn_roc_curve(seed, tpr):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(1.0, size=203), 1)  # some ties
    b = np.round(rng.normal(size=151), 1)
    fpr, tprs, _ = roc_curve(
        np.r_[np.ones(a.size), np.zeros(b.size)],
        np.r_[a, b],
        drop_intermediate=False,
    )
    expected = fpr[np.argmax(tprs >= tpr - 1e-12)]
    assert cal.fpr_at_tpr(a, b, tpr) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="tpr must lie"):
        cal.fpr_at_tpr(a, b, 0.0)


def _noise_images(X_tr, n, seed):
    """Uniform-noise 8x8 images with the digits' per-pixel mean and spread.

    The digits are standardized per pixel, so such images have each pixel uniform
    on [-sqrt(3), sqrt(3)]: mean 0 and variance 1 like the data, but no strokes.
    (Raw uniform pixels in [0, 16] would instead blow up the near-constant border
    pixels to dozens of standard deviations: far outside the data, where ReLU
    networks become arbitrarily confident - a different failure mode.)
    """
    rng = np.random.default_rng(seed)
    return rng.uniform(-np.sqrt(3), np.sqrt(3), size=(n, X_tr.shape[1])).astype(
        np.float32
    )


def test_max_softmax_separates_digits_from_noise(backend):
    model, X_tr, X_te, _ = _digits_model(backend.name)
    noise = _noise_images(X_tr, X_te.shape[0], seed=1)
    metrics = cal.ood_metrics(model, X_te, noise)
    assert set(metrics) == set(cal.SCORES)
    assert metrics["max_softmax"]["auroc"] >= 0.9, metrics
    for m in metrics.values():
        assert 0 <= m["fpr_at_95_tpr"] <= 1
    # the same from the oriented scores
    s_in, s_out = cal.ood_scores(model, X_te), cal.ood_scores(model, noise)
    assert metrics["energy"]["auroc"] == cal.auroc(s_in["energy"], s_out["energy"])
    np.testing.assert_array_equal(s_in["entropy"], -model.confidence(X_te)["entropy"])
    assert "fpr_at_90_tpr" in cal.ood_metrics(model, X_te, noise, tpr=0.9)["margin"]


def test_ood_score_histograms_png(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch, cal)
    model, X_tr, X_te, _ = _digits_model("numpy")
    noise = _noise_images(X_tr, 100, seed=2)
    path = cal.ood_score_histograms(
        cal.ood_scores(model, X_te),
        cal.ood_scores(model, noise),
        tmp_path / "ood.png",
        metrics=cal.ood_metrics(model, X_te, noise),
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    assert_titled_and_labelled(fig)
    assert all("AUROC" in ax.get_title() for ax in fig.axes)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlpclassifier_confidence_and_calibration():
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0)
    clf.fit(X_tr, y_tr)
    s = cal.confidence(clf, X_te)
    np.testing.assert_allclose(
        s["max_softmax"], clf.predict_proba(X_te).max(axis=1), rtol=1e-5
    )
    scaled = fastnn.calibrate(clf, X_te[::2], y_te[::2])
    np.testing.assert_array_equal(scaled.predict(X_te), clf.predict(X_te))


def test_binary_mlpclassifier_energy_does_not_favour_a_class():
    # with the logits (0, z) of its one logistic unit, a confidently negative row
    # had energy -log(1 + e^z) -> 0 (the out-of-distribution end) and a
    # confidently positive one -> -inf: energy ranked by class, not familiarity
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning
        clf.fit(X, y)
    p = clf.predict_proba(X)[:, 1]
    z = np.log(p) - np.log1p(-p)
    energy = cal.confidence(clf, X)["energy"]
    # -logsumexp(-z/2, z/2): the same for z and -z
    expected = -(np.abs(z) / 2 + np.log1p(np.exp(-np.abs(z))))
    np.testing.assert_allclose(energy, expected, rtol=1e-6, atol=1e-9)


def test_reliability_diagram_draws_no_line_through_sparse_bins(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch, cal)
    model, _, X_te, y_te = _digits_model("numpy")
    p = model.predict_proba(X_te)
    cal.reliability_diagram(y_te, p, tmp_path / "rel.png", classes=model.classes_,
                            min_count=10)  # fmt: skip
    (fig,) = figures
    assert_titled_and_labelled(fig)
    curve = cal.reliability_curve(y_te, p, classes=model.classes_)
    ax, ax_n = fig.axes
    line = next(s for s in ax.get_lines() if s.get_label().startswith("model (ECE"))
    solid = curve["count"] >= 10
    np.testing.assert_allclose(line.get_xdata(), curve["confidence"][solid])
    np.testing.assert_allclose(line.get_ydata(), curve["accuracy"][solid])
    sparse = (curve["count"] > 0) & ~solid
    if sparse.any():
        hollow = next(s for s in ax.get_lines() if "bins of < 10 rows" in s.get_label())
        assert hollow.get_linestyle() == "None"
        np.testing.assert_allclose(hollow.get_xdata(), curve["confidence"][sparse])
    # the lower panel: one bar per bin, its height and label the bin's count
    heights = [bar.get_height() for bar in ax_n.patches]
    np.testing.assert_array_equal(heights, curve["count"])
    labels = [t.get_text() for t in ax_n.texts]
    assert labels == [str(c) if c else "" for c in curve["count"]]


def test_ood_histograms_are_zoomed_and_log_scaled(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch, cal)
    model, X_tr, X_te, _ = _digits_model("numpy")
    noise = _noise_images(X_tr, 100, seed=2)
    s_in, s_out = cal.ood_scores(model, X_te), cal.ood_scores(model, noise)
    cal.ood_score_histograms(s_in, s_out, tmp_path / "ood.png")
    (fig,) = figures
    for ax, name in zip(fig.axes, cal.SCORES, strict=True):
        assert ax.get_yscale() == "log"
        both = np.concatenate([s_in[name], s_out[name]])
        bins = np.linspace(np.percentile(both, 1.0), both.max(), 41)
        # one filled step outline per data set: it spans the zoomed bins (from the
        # 1st percentile, not from an outlier) and its steps are the bin counts,
        # values below the range counted in the first bin
        polygons = ax.patches
        assert len(polygons) == 2
        for poly, scores in zip(polygons, (s_in[name], s_out[name]), strict=True):
            xy = poly.get_xy()
            assert xy[:, 0].min() == pytest.approx(bins[0])
            assert xy[:, 0].max() == pytest.approx(bins[-1])
            counts = np.histogram(np.clip(scores, bins[0], bins[-1]), bins)[0]
            assert counts.sum() == scores.size
            assert xy[:, 1].max() == counts.max()
