"""The fused loss-and-gradient kernel (``loss_grad``): against the NumPy oracle, against
finite differences (float64), against ``train_step``'s own gradients, every backend."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import contract

import fastnn

# (activation code, keep_z, leaky slope) per layer; the last layer's output: logits
NETWORKS = {
    "relu-gelu": [(1, 0, 0.0), (5, 1, 0.0), (0, 0, 0.0)],
    "tanh-leaky-sigmoid": [(4, 0, 0.0), (2, 1, -0.2), (3, 0, 0.0)],
}
SIZES = (6, 9, 7, 4)
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def _network(rng, dtype, acts, bias=True):
    """Flat params (weights first, then biases), the layout table and alphas."""
    pairs = list(zip(SIZES[:-1], SIZES[1:], strict=True))
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


def _batch(rng, dtype, n=11):
    x = rng.normal(size=(n, SIZES[0])).astype(dtype)
    labels = np.arange(n) % SIZES[-1]
    sw = rng.uniform(0.2, 2.0, size=n).astype(dtype)
    return x, labels, sw


def _call(kb, x, labels, sw, params, layout, alphas, n_w, ls=0.1, l2=1e-2):
    grads = np.full_like(params, np.nan)
    dx = np.full_like(x, np.nan)
    loss, correct = kb.loss_grad(
        x, labels, params, grads, layout, alphas, sample_weight=sw,
        label_smoothing=ls, l2=l2, weights_end=n_w, input_grad=dx,
    )  # fmt: skip
    return loss, correct, grads, dx


@pytest.mark.parametrize("net", sorted(NETWORKS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_matches_the_oracle(backend, oracle, dtype, rng, net, bias):
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS[net], bias)
    x, labels, sw = _batch(rng, dtype)
    before = params.copy()
    got = _call(backend, x, labels, sw, params, layout, alphas, n_w)
    want = _call(oracle, x, labels, sw, params, layout, alphas, n_w)
    tol = TOL[dtype]
    assert got[0] == pytest.approx(want[0], rel=tol, abs=tol)
    assert got[1] == want[1]
    np.testing.assert_allclose(got[2], want[2], rtol=tol, atol=tol)
    np.testing.assert_allclose(got[3], want[3], rtol=tol, atol=tol)
    assert params.tobytes() == before.tobytes()  # loss_grad never updates


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_gradients_match_finite_differences(backend, rng, net):
    """Central differences in float64 of the loss loss_grad itself returns (the
    L2 term, sample weights and label smoothing included)."""
    dtype = np.dtype(np.float64)
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS[net])
    x, labels, sw = _batch(rng, dtype, n=5)
    _, _, grads, dx = _call(backend, x, labels, sw, params, layout, alphas, n_w)

    def loss_at(p, xx):
        return _call(backend, xx, labels, sw, p, layout, alphas, n_w)[0]

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


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_loss_and_gradients_as_train_step(backend, dtype, rng, optimizer):
    """train_step is loss_grad followed by the update: the same loss (its L2 term
    summed in the same chunks) and bitwise the same gradients."""
    params, layout, alphas, n_w = _network(rng, dtype, NETWORKS["relu-gelu"])
    x, labels, sw = _batch(rng, dtype)
    loss, correct, grads, _ = _call(backend, x, labels, sw, params, layout, alphas, n_w)
    stepped = params.copy()
    step_grads = np.zeros_like(params)
    states = {"m": np.zeros_like(params), "v": np.zeros_like(params)}
    step_loss, step_correct = backend.train_step(
        x, labels, stepped, step_grads, layout, alphas, sample_weight=sw,
        label_smoothing=0.1, l2=1e-2, weights_end=n_w, optimizer=optimizer, lr=0.1,
        momentum=0.0, **(states if optimizer == "adam" else {}),
    )  # fmt: skip
    assert step_loss == loss and step_correct == correct
    assert step_grads.tobytes() == grads.tobytes()
    assert not np.array_equal(stepped, params)


def test_one_and_two_threads_bitwise_equal(compiled, dtype):
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
    labels = np.arange(256) % m1
    out = []
    for n_threads in (1, 2):
        with fastnn.num_threads(n_threads):
            grads = np.empty_like(params)
            dx = np.empty_like(x)
            loss, _ = compiled.loss_grad(
                x, labels, params, grads, layout, alphas, l2=1e-3, weights_end=n_w,
                input_grad=dx,
            )  # fmt: skip
            out.append((loss, grads.tobytes(), dx.tobytes()))
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
