"""The compiled forward pass of a Linear(+activation) stack (``forward``): against the
NumPy oracle, bitwise against the backend's own layer-by-layer ``linear_forward``,
its argument checks, and the model's use of it in prediction."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import contract
from test_loss_grad import NETWORKS, SIZES, TOL, _network

import fastnn

# every activation once, leaky_relu with a negative slope too
NETWORKS_ALL = {
    **NETWORKS,
    "identity-leaky": [(0, 0, 0.0), (2, 0, 0.3), (0, 0, 0.0)],
}


def _layer_by_layer(kb, x, params, layout, alphas):
    """Each layer's checked linear_forward in turn: (hidden outputs, last)."""
    outs = []
    a = x
    for (w_off, b_off, k, m, act, _), alpha in zip(layout.tolist(), alphas,
                                                   strict=True):  # fmt: skip
        w = params[w_off : w_off + k * m].reshape(k, m)
        b = params[b_off : b_off + m] if b_off >= 0 else None
        a = kb.linear_forward(a, w, b, act, alpha=float(alpha))
        outs.append(a)
    return outs[:-1], outs[-1]


def _hidden(work, layout, n):
    offsets, _ = contract.forward_workspace_layout(layout, n)
    widths = layout[:-1, 3].tolist()
    return [work[o : o + n * m].reshape(n, m)
            for o, m in zip(offsets.tolist(), widths, strict=True)]  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 11])
@pytest.mark.parametrize("net", sorted(NETWORKS_ALL))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_matches_the_oracle_and_its_own_layers_bitwise(backend, oracle, dtype, rng,
                                                       net, bias, n):  # fmt: skip
    params, layout, alphas, _ = _network(rng, dtype, NETWORKS_ALL[net], bias)
    x = rng.normal(size=(n, SIZES[0])).astype(dtype)
    _, total = contract.forward_workspace_layout(layout, n)
    work = np.full(total, np.nan, dtype)
    out = backend.forward(x, params, layout, alphas, work)
    hidden = _hidden(work, layout, n)
    # bitwise the backend's own linear_forward calls one after another
    want_hidden, want_out = _layer_by_layer(backend, x, params, layout, alphas)
    assert out.tobytes() == want_out.tobytes()
    for h, w in zip(hidden, want_hidden, strict=True):
        assert h.tobytes() == w.tobytes()
    # and the NumPy oracle's forward
    ref = oracle.forward(x, params, layout, alphas)
    np.testing.assert_allclose(out, ref, rtol=TOL[dtype], atol=TOL[dtype])
    assert np.isfinite(out).all()


def test_one_layer_needs_no_workspace(backend, dtype, rng):
    params, layout, alphas, _ = _network(rng, dtype, [(4, 0, 0.0)], sizes=(6, 3))
    x = rng.normal(size=(5, 6)).astype(dtype)
    assert contract.forward_workspace_layout(layout, 5)[1] == 0
    out = backend.forward(x, params, layout, alphas, np.empty(0, dtype))
    _, want = _layer_by_layer(backend, x, params, layout, alphas)
    assert out.tobytes() == want.tobytes()


def test_workspace_pieces_start_on_aligned_offsets():
    layout = np.array([(0, -1, 3, 5, 1, 0), (15, -1, 5, 7, 1, 1), (50, -1, 7, 2, 0, 0)],
                      dtype=np.int64)  # fmt: skip
    offsets, total = contract.forward_workspace_layout(layout, 3)
    align = contract.TRAIN_WORK_ALIGN
    assert offsets.tolist() == [0, -(-15 // align) * align]
    assert total == offsets[1] + -(-21 // align) * align


def test_one_and_two_threads_bitwise_equal(compiled, dtype):
    """Wide enough for parallel GEMM blocks and epilogues."""
    rng = np.random.default_rng(3)
    sizes = (300, 512, 10)
    params, layout, alphas, _ = _network(rng, dtype, [(5, 0, 0.0), (0, 0, 0.0)],
                                         sizes=sizes)  # fmt: skip
    x = rng.normal(size=(256, sizes[0])).astype(dtype)
    results = []
    for n_threads in (1, 2):
        with fastnn.num_threads(n_threads):
            results.append(compiled.forward(x, params, layout, alphas).tobytes())
    assert results[0] == results[1]


def test_bad_arguments_are_refused_before_any_kernel_runs(backend, rng):
    dtype = np.dtype(np.float64)
    params, layout, alphas, _ = _network(rng, dtype, NETWORKS["relu-gelu"])
    x = rng.normal(size=(4, SIZES[0]))
    _, total = contract.forward_workspace_layout(layout, 4)
    work = np.zeros(total)
    out = np.zeros((4, SIZES[-1]))
    with pytest.raises(ValueError, match="work must be writeable with at least"):
        backend.forward(x, params, layout, alphas, work[:-1], out)
    with pytest.raises(ValueError, match="out has shape"):
        backend.forward(x, params, layout, alphas, work, out[:, :-1].copy())
    with pytest.raises(TypeError, match="mixed dtypes"):
        backend.forward(x.astype(np.float32), params, layout, alphas, work, out)
    with pytest.raises(ValueError, match="work must not overlap params"):
        backend.forward(x, params, layout, alphas, params, out)
    with pytest.raises(ValueError, match="work must not overlap out"):
        backend.forward(x, params, layout, alphas, work, work[:16].reshape(4, 4))
    with pytest.raises(ValueError, match="alphas must be C-contiguous"):
        backend.forward(x, params, layout, alphas[:-1], work, out)
    with pytest.raises(ValueError, match="in_features"):
        backend.forward(x[:, :-1].copy(), params, layout, alphas, work, out)
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.forward(np.asfortranarray(x), params, layout, alphas, work, out)
    assert not work.any() and not out.any()  # nothing was written
    # params are only read: a read-only buffer is fine
    frozen = params.copy()
    frozen.flags.writeable = False
    backend.forward(x, frozen, layout, alphas, work, out)
    assert np.isfinite(out).all() and out.any()


def test_an_empty_batch_gives_an_empty_output(backend, rng):
    params, layout, alphas, _ = _network(rng, np.float64, NETWORKS["relu-gelu"])
    out = backend.forward(np.empty((0, SIZES[0])), params, layout, alphas)
    assert out.shape == (0, SIZES[-1])


# ------------------------------------------------------------------ the model
def _fitted(backend_name, dtype=np.float32):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6)).astype(dtype)
    y = np.arange(64) % 3
    model = fastnn.MLP((6, 9, 7, 3), activation="gelu", dtype=dtype,
                       backend=backend_name)  # fmt: skip
    model.fit(X, y, epochs=2, batch_size=16, verbose=0, seed=0)
    return model, X


@pytest.mark.parametrize("rows", [1, 5, 64])
def test_model_prediction_is_the_layer_by_layer_pass_bitwise(backend, rows):
    model, X = _fitted(backend.name)
    fused = model.predict_proba(X[:rows])
    assert model._layers_read_params()
    # a layer whose weight is another array (of equal values) makes the model run
    # the layer-by-layer pass: the same bits
    lin = model.linears[1]
    lin.weight = lin.weight.copy()
    assert not model._layers_read_params()
    assert model.predict_proba(X[:rows]).tobytes() == fused.tobytes()


def test_an_assigned_weight_is_the_one_prediction_reads(backend):
    """A user may point ``layer.weight`` at an array of their own; prediction
    must read it, not the flat buffer the compiled forward would."""
    model, X = _fitted(backend.name, np.float64)
    before = model.predict_proba(X)
    lin = model.linears[-1]
    lin.weight = np.zeros_like(lin.weight)
    lin.bias = np.zeros_like(lin.bias)
    after = model.predict_proba(X)
    np.testing.assert_allclose(after, np.full_like(after, 1 / 3), rtol=1e-12)
    assert not np.allclose(before, after)


def test_the_raw_call_takes_only_inputs_the_checked_call_would(backend):
    """After a workspace's first (checked) call the model calls the raw kernel;
    an input that does not fit its buffers still goes through the checks."""
    model, X = _fitted(backend.name)
    kb = model._kernels()
    ws = model._workspace(4, False)
    model._forward(kb, X[:4].copy(), ws)
    assert ws.forward_checked
    with pytest.raises(TypeError, match="mixed dtypes"):
        model._forward(kb, X[:4].astype(np.float64), ws)
    with pytest.raises(ValueError, match="C-contiguous"):
        model._forward(kb, np.asfortranarray(X[:4]), ws)
    with pytest.raises(ValueError, match="out has shape"):
        model._forward(kb, X[:3].copy(), ws)
    with pytest.raises(ValueError, match="in_features"):
        model._forward(kb, X[:4, :5].copy(), ws)


def test_a_pickled_model_predicts_the_same_bits(backend):
    import pickle

    model, X = _fitted(backend.name)
    want = model.predict_proba(X)
    clone = pickle.loads(pickle.dumps(model))
    assert clone._layers_read_params()
    assert "_bound_views" not in model.__getstate__()
    assert clone.predict_proba(X).tobytes() == want.tobytes()


def test_a_bias_assigned_to_a_bias_less_layer_is_the_one_prediction_adds(backend):
    """A bias-less Linear has no bias in the flat buffer, so the compiled forward
    adds none: a bias a user assigns to it must send prediction down the
    layer-by-layer pass, which adds it (as before the compiled forward)."""
    model = fastnn.Sequential([fastnn.Linear(4, 3, bias=False), fastnn.ReLU(),
                               fastnn.Linear(3, 2)], dtype=np.float64,
                              backend=backend.name).initialize(0)  # fmt: skip
    model.classes_ = np.arange(2)
    X = np.random.default_rng(0).standard_normal((5, 4))
    before = model.decision_function(X)
    assert model._layers_read_params()
    lin = model.linears[0]
    lin.bias = np.full(3, 10.0)
    assert not model._layers_read_params()
    want = np.maximum(X @ lin.weight + 10.0, 0) @ model.linears[1].weight
    want += model.linears[1].bias
    np.testing.assert_allclose(model.decision_function(X), want, rtol=1e-12)
    assert not np.allclose(model.decision_function(X), before)
