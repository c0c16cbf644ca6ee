"""The fused loss-and-gradient kernel (``loss_grad``): against the NumPy oracle, against
finite differences (float64), against ``train_step``'s own gradients, every backend,
for every loss (softmax cross-entropy on labels, squared error and sigmoid
cross-entropy on float targets)."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import contract
from scipy.special import expit, xlogy

import fastnn

# (activation code, keep_z, leaky slope) per layer; the last layer's output: logits
NETWORKS = {
    "relu-gelu": [(1, 0, 0.0), (5, 1, 0.0), (0, 0, 0.0)],
    "tanh-leaky-sigmoid": [(4, 0, 0.0), (2, 1, -0.2), (3, 0, 0.0)],
}
SIZES = (6, 9, 7, 4)
LOSSES = ("softmax_cross_entropy", "squared_error", "sigmoid_cross_entropy")
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def _network(rng, dtype, acts, bias=True, sizes=SIZES):
    """Flat params (weights first, then biases), the layout table and alphas."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    n_w = sum(k * m for k, m in pairs)
    n_b = sum(m for _, m in pairs) if bias else 0
    params = rng.normal(scale=0.6, size=n_w + n_b).astype(dtype)
    rows, w_off, b_off = [], 0, n_w
    for (k, m), (act, keep, _) in zip(pairs, acts, strict=True):
        rows.append((w_off, b_off if bias else -1, k, m, act, keep))
        w_off += k * m
        b_off += m
    layout = np.array(rows, dtype=np.int64)
    alphas = np.array([a for _, _, a in acts], dtype=np.float64)
    return params, layout, alphas, n_w


def _batch(rng, dtype, n=11, loss="softmax_cross_entropy", sizes=SIZES):
    """x, the loss's target (labels, float targets for squared error, 0/1 targets
    for sigmoid cross-entropy), weights."""
    x = rng.normal(size=(n, sizes[0])).astype(dtype)
    if loss == "squared_error":
        y = rng.normal(size=(n, sizes[-1])).astype(dtype)
    elif loss == "sigmoid_cross_entropy":
        y = (rng.uniform(size=(n, sizes[-1])) < 0.5).astype(dtype)
    else:
        y = np.arange(n) % sizes[-1]
    sw = rng.uniform(0.2, 2.0, size=n).astype(dtype)
    return x, y, sw


def _call(kb, x, y, sw, params, layout, alphas, n_w, loss="softmax_cross_entropy",
          l2=1e-2):  # fmt: skip
    grads = np.full_like(params, np.nan)
    dx = np.full_like(x, np.nan)
    loss_value, correct = kb.loss_grad(
        x, y, params, grads, layout, alphas, loss=loss, sample_weight=sw,
        label_smoothing=0.1 if loss == "softmax_cross_entropy" else 0.0, l2=l2,
        weights_end=n_w, input_grad=dx,
    )  # fmt: skip
    return loss_value, correct, grads, dx


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("net", sorted(NETWORKS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_matches_the_oracle(backend, oracle, dtype, rng, net, bias, loss):
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS[net], bias)
    x, y, sw = _batch(rng, dtype, loss=loss)
    before = params.copy()
    got = _call(backend, x, y, sw, params, layout, alphas, n_w, loss)
    want = _call(oracle, x, y, sw, params, layout, alphas, n_w, loss)
    tol = TOL[dtype]
    assert got[0] == pytest.approx(want[0], rel=tol, abs=tol)
    assert got[1] == want[1]
    np.testing.assert_allclose(got[2], want[2], rtol=tol, atol=tol)
    np.testing.assert_allclose(got[3], want[3], rtol=tol, atol=tol)
    assert params.tobytes() == before.tobytes()  # loss_grad never updates


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_gradients_match_finite_differences(backend, rng, net, loss):
    """Central differences in float64 of the loss loss_grad itself returns (the
    L2 term, sample weights and label smoothing included)."""
    dtype = np.dtype(np.float64)
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS[net])
    x, y, sw = _batch(rng, dtype, n=5, loss=loss)
    _, _, grads, dx = _call(backend, x, y, sw, params, layout, alphas, n_w, loss)

    def loss_at(p, xx):
        return _call(backend, xx, y, sw, p, layout, alphas, n_w, loss)[0]

    h = 1e-6
    for idx in rng.choice(params.size, size=25, replace=False):
        up, down = params.copy(), params.copy()
        up[idx] += h
        down[idx] -= h
        fd = (loss_at(up, x) - loss_at(down, x)) / (2 * h)
        assert grads[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), idx
    for i, j in [(0, 0), (2, 3), (4, 5), (1, 2)]:
        up, down = x.copy(), x.copy()
        up[i, j] += h
        down[i, j] -= h
        fd = (loss_at(params, up) - loss_at(params, down)) / (2 * h)
        assert dx[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-8), (i, j)


# optimizer settings of train_step, and the public update that does the same
UPDATES = {
    "sgd-nesterov": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                         weight_decay=1e-3),
    "adam": dict(optimizer="adam", lr=0.01, weight_decay=1e-3, step=3),
    "adamw": dict(optimizer="adamw", lr=0.01, weight_decay=0.05, step=3),
}  # fmt: skip


@pytest.mark.parametrize(
    "sizes", [SIZES, (300, 400, 64, 10)], ids=["serial", "parallel"]
)
@pytest.mark.parametrize("update", sorted(UPDATES))
def test_train_step_is_loss_grad_then_the_update_bitwise(backend, dtype, rng, update,
                                                          sizes):  # fmt: skip
    """train_step adds the L2 term's gradient inside the update (and leaves grads
    without it): the parameters and optimizer state are bitwise those of loss_grad
    (l2 W in dW) followed by the public sgd_update / adam_update, with weight decay
    on the weights, for updates below and above the parallel threshold."""
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"],
                                           sizes=sizes)  # fmt: skip
    x, y, sw = _batch(rng, dtype, sizes=sizes)
    cfg = UPDATES[update]
    state = {k: rng.uniform(0.0, 0.1, params.size).astype(dtype) for k in "mv"}
    velocity = rng.normal(scale=0.1, size=params.size).astype(dtype)
    _, _, grads, _ = _call(backend, x, y, sw, params, layout, alphas, n_w)
    expected = params.copy()
    exp_state = {k: b.copy() for k, b in state.items()}
    exp_velocity = velocity.copy()
    for seg, wd in ((slice(0, n_w), cfg["weight_decay"]), (slice(n_w, None), 0.0)):
        if cfg["optimizer"] == "sgd":
            backend.sgd_update(expected[seg], grads[seg], exp_velocity[seg],
                               lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True,
                               weight_decay=wd)  # fmt: skip
        else:
            backend.adam_update(expected[seg], grads[seg], exp_state["m"][seg],
                                exp_state["v"][seg], step=cfg["step"], lr=cfg["lr"],
                                weight_decay=wd,
                                decoupled=cfg["optimizer"] == "adamw")  # fmt: skip
    stepped = params.copy()
    backend.train_step(
        x, y, stepped, np.zeros_like(params), layout, alphas, sample_weight=sw,
        label_smoothing=0.1, l2=1e-2, weights_end=n_w,
        **({"velocity": velocity} if cfg["optimizer"] == "sgd" else state), **cfg,
    )  # fmt: skip
    assert stepped.tobytes() == expected.tobytes()
    if cfg["optimizer"] == "sgd":
        assert velocity.tobytes() == exp_velocity.tobytes()
    else:
        for k in "mv":
            assert state[k].tobytes() == exp_state[k].tobytes()


@pytest.mark.parametrize("weights_end", ["all", "none", "part"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_with_any_weights_end_steps_with_loss_grads_gradient(
    backend, dtype, rng, optimizer, weights_end
):
    """weights_end need not end the weight matrices (all of params, biases included,
    as when it is None; none of them; part of them): the L2 term's gradient is still
    l2 W on every layer's dW and nothing on the biases, as loss_grad's, so train_step
    is bitwise loss_grad followed by the public update."""
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    end = {"all": params.size, "none": 0, "part": n_w // 2}[weights_end]
    x, y, sw = _batch(rng, dtype)
    cfg = dict(lr=0.1, weight_decay=1e-3)
    _, _, grads, _ = _call(backend, x, y, sw, params, layout, alphas, end)
    expected = params.copy()
    velocity, exp_velocity = np.zeros_like(params), np.zeros_like(params)
    m, v = np.zeros_like(params), np.zeros_like(params)
    exp_m, exp_v = m.copy(), v.copy()
    for seg, wd in ((slice(0, end), cfg["weight_decay"]), (slice(end, None), 0.0)):
        if expected[seg].size == 0:
            continue
        if optimizer == "sgd":
            backend.sgd_update(expected[seg], grads[seg], exp_velocity[seg],
                               lr=cfg["lr"], momentum=0.9, weight_decay=wd)  # fmt: skip
        else:
            backend.adam_update(expected[seg], grads[seg], exp_m[seg], exp_v[seg],
                                step=1, lr=cfg["lr"], weight_decay=wd)  # fmt: skip
    stepped = params.copy()
    backend.train_step(
        x, y, stepped, np.zeros_like(params), layout, alphas, sample_weight=sw,
        label_smoothing=0.1, l2=1e-2, weights_end=end, optimizer=optimizer,
        **(dict(momentum=0.9, velocity=velocity) if optimizer == "sgd" else
           dict(m=m, v=v)), **cfg,
    )  # fmt: skip
    assert stepped.tobytes() == expected.tobytes()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_loss_and_gradients_as_train_step(backend, dtype, rng, optimizer, loss):
    """train_step is loss_grad followed by the update: the same loss (its L2 term
    summed in the same chunks) and bitwise the same gradients, once the L2 term's
    gradient, which train_step leaves to the update, is added as backward adds it."""
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    x, y, sw = _batch(rng, dtype, loss=loss)
    loss_value, correct, grads, _ = _call(backend, x, y, sw, params, layout, alphas,
                                          n_w, loss)  # fmt: skip
    stepped = params.copy()
    step_grads = np.zeros_like(params)
    states = {"m": np.zeros_like(params), "v": np.zeros_like(params)}
    step_loss, step_correct = backend.train_step(
        x, y, stepped, step_grads, layout, alphas, loss=loss, sample_weight=sw,
        label_smoothing=0.1 if loss == "softmax_cross_entropy" else 0.0, l2=1e-2,
        weights_end=n_w, optimizer=optimizer, lr=0.1, momentum=0.0,
        **(states if optimizer == "adam" else {}),
    )  # fmt: skip
    assert step_loss == loss_value and step_correct == correct
    assert step_grads.tobytes() != grads.tobytes()  # the data term's gradient
    step_grads[:n_w] += params.dtype.type(1e-2) * params[:n_w]
    assert step_grads.tobytes() == grads.tobytes()
    assert not np.array_equal(stepped, params)


@pytest.mark.parametrize("loss", LOSSES)
def test_one_and_two_threads_bitwise_equal(compiled, dtype, loss):
    """Wide enough for parallel GEMM blocks, epilogues, the loss and the L2 sum."""
    rng = np.random.default_rng(7)
    sizes = (300, 512, 10)
    k0, m0, m1 = sizes
    n_w = k0 * m0 + m0 * m1
    params = rng.normal(scale=0.05, size=n_w + m0 + m1).astype(dtype)
    layout = np.array([(0, n_w, k0, m0, 1, 0), (k0 * m0, n_w + m0, m0, m1, 0, 0)],
                      dtype=np.int64)  # fmt: skip
    alphas = np.zeros(2)
    x = rng.normal(size=(256, k0)).astype(dtype)
    if loss == "squared_error":
        y = rng.normal(size=(256, m1)).astype(dtype)
    elif loss == "sigmoid_cross_entropy":
        y = (rng.uniform(size=(256, m1)) < 0.5).astype(dtype)
    else:
        y = np.arange(256) % m1
    out = []
    for n_threads in (1, 2):
        with fastnn.num_threads(n_threads):
            grads = np.empty_like(params)
            dx = np.empty_like(x)
            loss_value, _ = compiled.loss_grad(
                x, y, params, grads, layout, alphas, loss=loss, l2=1e-3,
                weights_end=n_w, input_grad=dx,
            )  # fmt: skip
            out.append((loss_value, grads.tobytes(), dx.tobytes()))
    assert out[0] == out[1]


def test_bad_arguments_are_refused_before_any_kernel_runs(backend, rng):
    dtype = np.dtype(np.float64)
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    x, labels, _ = _batch(rng, dtype)
    grads = np.zeros_like(params)
    with pytest.raises(ValueError, match="input_grad must be a writeable array"):
        backend.loss_grad(x, labels, params, grads, layout, alphas,
                          input_grad=np.zeros((x.shape[0], 2)))  # fmt: skip
    with pytest.raises(ValueError, match="input_grad must not overlap x"):
        backend.loss_grad(x, labels, params, grads, layout, alphas, input_grad=x)
    with pytest.raises(ValueError, match="grads must not overlap params"):
        backend.loss_grad(x, labels, params, params, layout, alphas)
    with pytest.raises(ValueError, match="labels"):
        backend.loss_grad(x, labels + SIZES[-1], params, grads, layout, alphas)
    with pytest.raises(TypeError, match="mixed dtypes"):
        backend.loss_grad(x.astype(np.float32), labels, params, grads, layout, alphas)
    assert not grads.any()  # nothing was written
    # params are only read: a read-only buffer is fine
    frozen = params.copy()
    frozen.flags.writeable = False
    loss, _ = backend.loss_grad(x, labels, frozen, grads, layout, alphas)
    assert np.isfinite(loss) and grads.any()


def test_raw_signature_is_the_contracts(backend):
    assert (
        contract.raw_signature(backend.raw.loss_grad)
        == contract.RAW_KERNELS["loss_grad"]
    )


def test_config_and_hyper_put_each_value_in_its_named_slot():
    """The raw kernels read config / hyper by the contract's slot names: packing by
    keyword puts every value where its name says."""
    config = contract.pack_config(
        **{name: 10 + i for i, name in enumerate(contract.CONFIG_SLOTS)}
    )
    hyper = contract.pack_hyper(
        **{name: 0.5 + i for i, name in enumerate(contract.HYPER_SLOTS)}
    )
    assert config.dtype == np.int64 and hyper.dtype == np.float64
    assert config.tolist() == [10 + i for i in range(len(contract.CONFIG_SLOTS))]
    assert hyper.tolist() == [0.5 + i for i in range(len(contract.HYPER_SLOTS))]
    for name in contract.CONFIG_SLOTS:
        assert getattr(contract, name.upper()) == contract.CONFIG_SLOTS.index(name)
    for name in contract.HYPER_SLOTS:
        assert getattr(contract, name.upper()) == contract.HYPER_SLOTS.index(name)


def test_squared_error_is_the_standalone_kernels_loss(backend, dtype, rng):
    """One identity Linear: the fused loss is (1/n) sum_i w_i 0.5 ||yhat_i - y_i||^2
    (the standalone squared_error kernel's convention) + (l2 / 2) ||W||^2, and
    dW = x^T (yhat - y) w / n + l2 W."""
    n, k, m, l2 = 13, 5, 3, 0.03
    params = rng.normal(size=k * m + m).astype(dtype)
    layout = np.array([(0, k * m, k, m, 0, 0)], dtype=np.int64)
    x = rng.normal(size=(n, k)).astype(dtype)
    y = rng.normal(size=(n, m)).astype(dtype)
    sw = rng.uniform(0.2, 2.0, size=n).astype(dtype)
    grads = np.empty_like(params)
    loss, correct = backend.loss_grad(
        x, y, params, grads, layout, np.zeros(1), loss="squared_error",
        sample_weight=sw, l2=l2, weights_end=k * m,
    )  # fmt: skip
    w, b = params[: k * m].reshape(k, m), params[k * m :]
    pred = x @ w + b
    alone, g = backend.squared_error(pred, y, sample_weight=sw)
    w64 = w.astype(np.float64)
    d = pred.astype(np.float64) - y
    by_hand = np.mean(sw * 0.5 * (d * d).sum(axis=1))
    tol = TOL[dtype]
    assert correct == 0
    assert loss == pytest.approx(alone + 0.5 * l2 * np.sum(w64 * w64), rel=tol)
    assert loss == pytest.approx(by_hand + 0.5 * l2 * np.sum(w64 * w64), rel=tol)
    np.testing.assert_allclose(grads[: k * m].reshape(k, m), x.T @ g + l2 * w,
                               rtol=tol, atol=tol)  # fmt: skip
    np.testing.assert_allclose(grads[k * m :], g.sum(axis=0), rtol=tol, atol=tol)


@pytest.mark.parametrize("loss", contract.FLOAT_TARGET_LOSSES)
def test_float_targets_are_checked(backend, rng, loss):
    dtype = np.dtype(np.float64)
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    x, y, _ = _batch(rng, dtype, loss=loss)
    grads = np.zeros_like(params)
    args = (params, grads, layout, alphas)
    with pytest.raises(ValueError, match=f"y has shape .*{loss}"):
        backend.loss_grad(x, y[:, :2].copy(), *args, loss=loss)
    with pytest.raises(TypeError, match="y must be float32 or float64"):
        backend.loss_grad(x, np.zeros(y.shape, np.int64), *args, loss=loss)
    with pytest.raises(TypeError, match="mixed dtypes"):
        backend.loss_grad(x, y.astype(np.float32), *args, loss=loss)
    with pytest.raises(ValueError, match="label_smoothing"):
        backend.loss_grad(x, y, *args, loss=loss, label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        backend.loss_grad(x, y, *args, loss="hinge")
    shared = np.zeros(y.size + x.size)  # targets and input_grad in one buffer
    shared[: y.size] = y.reshape(-1)
    with pytest.raises(ValueError, match="input_grad must not overlap targets"):
        backend.loss_grad(
            x,
            shared[: y.size].reshape(y.shape),
            *args,
            loss=loss,
            input_grad=shared[4 : 4 + x.size].reshape(x.shape),
        )
    assert not grads.any()  # nothing was written


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's matmul
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_squared_error_nan_and_inf_targets_propagate(backend, dtype, rng, bad):
    """A NaN/inf target gives a non-finite loss and gradients, never a silent 0."""
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    x, y, sw = _batch(rng, dtype, loss="squared_error")
    y[3, 1] = bad
    loss, _, grads, _ = _call(backend, x, y, sw, params, layout, alphas, n_w,
                              "squared_error")  # fmt: skip
    assert not np.isfinite(loss)
    assert not np.all(np.isfinite(grads))


def _identity_logits(x):
    """One identity Linear with W = I and no bias: the logits are x itself."""
    k = x.shape[1]
    params = np.eye(k, dtype=x.dtype).reshape(-1)
    layout = np.array([(0, -1, k, k, 0, 0)], dtype=np.int64)
    return params, layout, np.zeros(1)


def _sklearn_binary_log_loss(z, y, sw):
    """scikit-learn's binary log loss (neural_network._base.binary_log_loss) and
    its output delta (_backprop: (p - y) w, over the weights' sum)."""
    p = expit(z)
    eps = np.finfo(p.dtype).eps
    clipped = np.clip(p, eps, 1 - eps)
    loss = -np.average(xlogy(y, clipped) + xlogy(1 - y, 1 - clipped), weights=sw,
                       axis=0).sum()  # fmt: skip
    return loss, (p - y) * (sw / sw.sum())[:, None]


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_sigmoid_cross_entropy_is_scikit_learns_binary_log_loss(backend, dtype, rng,
                                                                 weighted):  # fmt: skip
    """Logits from moderate to +-100 (where p saturates and the clip decides the
    loss): scikit-learn's loss value and its gradient w.r.t. the logits, every
    backend, with weights scaled to mean 1 (as the estimator passes them)."""
    z = np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 3.5], [30.0, -30.0, -0.7],
                  [0.25, -2.0, 17.0], [-17.0, 1.0, -40.0]], dtype=dtype)  # fmt: skip
    y = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=dtype)
    sw = rng.uniform(0.2, 2.0, size=z.shape[0]) if weighted else np.ones(z.shape[0])
    sw = (sw * (z.shape[0] / sw.sum())).astype(dtype)
    params, layout, alphas = _identity_logits(z)
    grads = np.full_like(params, np.nan)
    dz = np.full_like(z, np.nan)
    loss, correct = backend.loss_grad(
        z, y, params, grads, layout, alphas, loss="sigmoid_cross_entropy",
        sample_weight=sw if weighted else None, input_grad=dz,
    )  # fmt: skip
    want_loss, want_dz = _sklearn_binary_log_loss(z, y, sw)
    assert np.isfinite(loss) and correct == 0
    tol = TOL[dtype]
    assert loss == pytest.approx(float(want_loss), rel=tol)
    np.testing.assert_allclose(dz, want_dz, rtol=tol, atol=tol)  # dz = d loss / dz
    np.testing.assert_allclose(grads.reshape(z.shape[1], -1), z.T @ want_dz,
                               rtol=tol, atol=10 * tol * np.abs(z).max())  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's matmul
def test_sigmoid_cross_entropy_nan_logits_propagate(backend, dtype, rng):
    """A NaN logit gives a NaN loss and a NaN gradient, never a clipped finite
    value; the other rows keep theirs (the input gradient's row of the NaN is all
    NaN: dz @ I spreads it across the row)."""
    z = rng.normal(size=(4, 3)).astype(dtype)
    z[2, 1] = np.nan
    y = (rng.uniform(size=z.shape) < 0.5).astype(dtype)
    params, layout, alphas = _identity_logits(z)
    grads = np.zeros_like(params)
    dz = np.zeros_like(z)
    loss, _ = backend.loss_grad(
        z, y, params, grads, layout, alphas, loss="sigmoid_cross_entropy", input_grad=dz
    )
    assert np.isnan(loss)
    assert np.isnan(dz[2, 1])
    finite = np.ones(z.shape, bool)
    finite[2] = False
    _, want_dz = _sklearn_binary_log_loss(np.where(finite, z, 0), y, np.ones(4))
    np.testing.assert_allclose(dz[finite], want_dz[finite], rtol=TOL[dtype])
