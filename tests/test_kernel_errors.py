"""Bad arguments get a clear ValueError/TypeError before any kernel touches memory."""

from __future__ import annotations

import numpy as np
import pytest


def f32(*shape):
    return np.ones(shape, np.float32)


def sentinel(*shape, dtype=np.float32):
    return np.full(shape, 7.0, dtype)


def test_labels_out_of_range_rejected_before_writing(backend):
    logits, grad = f32(4, 3), sentinel(4, 3)
    for bad in ([0, 1, 3, 0], [0, -1, 2, 0]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            backend.softmax_cross_entropy(logits, np.array(bad), grad_out=grad)
        assert np.all(grad == 7.0)


def test_label_type_and_shape(backend):
    with pytest.raises(TypeError, match="labels must be integers"):
        backend.softmax_cross_entropy(f32(2, 3), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels has shape"):
        backend.softmax_cross_entropy(f32(2, 3), np.array([0, 1, 2]))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda be: be.matmul(f32(2, 3), f32(4, 2)), ValueError, "shapes do not agree"),
        (
            lambda be: be.linear_forward(f32(2, 3), f32(4, 2)),
            ValueError,
            "x has 3 features",
        ),
        (
            lambda be: be.linear_forward(f32(2, 3), f32(3, 2), f32(3)),
            ValueError,
            "b has shape",
        ),
        (
            lambda be: be.linear_forward(f32(2, 3), f32(3, 2), activation="swish"),
            ValueError,
            "unknown activation",
        ),
        (
            lambda be: be.linear_forward(f32(2, 3), np.ones((3, 2))),
            TypeError,
            "mixed dtypes",
        ),
        (lambda be: be.linear_forward(f32(3), f32(3, 2)), ValueError, "must be 2-D"),
        (
            lambda be: be.linear_forward(np.ones((2, 3), np.int64), f32(3, 2)),
            TypeError,
            "float32 or float64",
        ),
        (lambda be: be.linear_forward([[1.0]], f32(1, 1)), TypeError, "numpy.ndarray"),
        (
            lambda be: be.linear_forward(f32(3, 2).T, f32(3, 2)),
            ValueError,
            "C-contiguous",
        ),
        (
            lambda be: be.activation_forward(f32(4, 4)[:, ::2], "relu"),
            ValueError,
            "C-contiguous",
        ),
        (
            lambda be: be.activation_backward(f32(2, 2), f32(2, 3), f32(2, 2)),
            ValueError,
            "z has shape",
        ),
        (
            lambda be: be.softmax_cross_entropy(
                f32(2, 3), np.array([0, 1]), sample_weight=np.ones(2)
            ),
            TypeError,
            "mixed dtypes",
        ),
        (
            lambda be: be.softmax_cross_entropy(
                f32(2, 3), np.array([0, 1]), label_smoothing=1.5
            ),
            ValueError,
            "label_smoothing",
        ),
        (
            lambda be: be.sgd_update(f32(3), f32(4), lr=0.1),
            ValueError,
            "grad has shape",
        ),
        (
            lambda be: be.sgd_update(f32(3), f32(3), lr=-1.0),
            ValueError,
            "lr must be >= 0",
        ),
        (
            lambda be: be.sgd_update(f32(3), f32(3), lr=0.1, momentum=0.9),
            ValueError,
            "velocity buffer",
        ),
        (
            lambda be: be.sgd_update(f32(3), f32(3), lr=float("nan")),
            ValueError,
            "lr must be finite",
        ),
        (
            lambda be: be.sgd_update(f32(3), f32(3), lr=0.1, sq_norm_out=f32(1)),
            TypeError,
            "sq_norm_out must be float64",
        ),
        (
            lambda be: be.adam_update(
                f32(3), f32(3), f32(3), f32(3), step=1, sq_norm_out=np.zeros(2)
            ),
            ValueError,
            "sq_norm_out must be writeable with shape",
        ),
        (
            lambda be: be.adam_update(f32(3), f32(3), f32(3), f32(3), step=0),
            ValueError,
            "step counts from 1",
        ),
        (
            lambda be: be.adam_update(
                f32(3), f32(3), f32(3), f32(3), step=1, beta1=1.0
            ),
            ValueError,
            "beta1",
        ),
    ],
)
def test_bad_arguments(backend, call, exc, match):
    with pytest.raises(exc, match=match):
        call(backend)


def test_bad_out_buffers_rejected_and_untouched(backend):
    x, w = f32(4, 3), f32(3, 2)
    wrong_shape = sentinel(4, 3)
    with pytest.raises(ValueError, match="out has shape"):
        backend.linear_forward(x, w, out=wrong_shape)
    wrong_dtype = sentinel(4, 2, dtype=np.float64)
    with pytest.raises(TypeError, match="out has dtype"):
        backend.linear_forward(x, w, out=wrong_dtype)
    read_only = sentinel(4, 2)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        backend.linear_forward(x, w, out=read_only)
    with pytest.raises(ValueError, match="must not overlap"):
        square = f32(4, 4)
        backend.matmul(square, f32(4, 4), out=square)
    for buf in (wrong_shape, wrong_dtype, read_only):
        assert np.all(buf == 7.0)


def test_out_buffer_overlap_found_through_views(backend):
    """The overlap check's shortcut for arrays owning their memory must not hide a
    view into an input, nor an input that is a view of the output."""
    buf = f32(8, 3)
    pred, target = buf[:4], f32(4, 3)
    with pytest.raises(ValueError, match="grad_out must not overlap"):
        backend.squared_error(pred, target, grad_out=buf[2:6])
    out = sentinel(4, 3)
    with pytest.raises(ValueError, match="grad_out must not overlap"):
        backend.squared_error(out[:], target, grad_out=out)
    assert np.all(out == 7.0)
    _, grad = backend.squared_error(pred, target, grad_out=buf[4:])  # disjoint views
    assert grad.base is buf and np.all(grad == 0.0)


def test_read_only_optimizer_state_rejected(backend):
    p = f32(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param is updated in place"):
        backend.sgd_update(p, f32(3), lr=0.1)
