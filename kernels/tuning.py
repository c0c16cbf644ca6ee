"""The tuning table and the float32 numerics spec of both compiled backends, once.

nb/ reads these values at import (``nb/_options.py``); cy/ receives the sizes and
thresholds at import (``cy/__init__.py`` calls each module's ``_configure_tuning``)
and the approximation constants and stack scratch sizes at build time (``setup.py``
compiles them in as macros, so the vectorised loops keep literal constants and the
scratch lives on the stack). Changing a size or a
threshold never changes a result (chunk and block boundaries, and the serial or
parallel choice, leave every row's arithmetic as it is); changing a numerics constant
changes float32 results. The measurements behind the values: docs/performance.md
("Kernel tuning").
"""

from __future__ import annotations

# ----------------------------------------------------------------------- work split
#: Element-wise work (activations, optimizer updates, the L2 sum) is cut into fixed
#: chunks of this many elements, one parallel task each.
CHUNK = 16384
#: A kernel runs serially below this much work: waking the sleeping workers of a
#: parallel region costs more than a streaming pass over fewer elements. One work
#: unit is one element of a cheap streaming op (relu, a copy, an SGD update). The
#: default until a model first trains on 2 or more threads: then this machine's
#: crossover for that thread count is measured and kept (fastnn/_gemm_wisdom.py,
#: plan_parallel; kernels.set_parallel_min_work hands it to the backends).
PARALLEL_MIN_WORK = 262144
#: No work is this large: as a threshold, every kernel serial (a forked child; the
#: largest threshold the compiled code holds in an int64).
MAX_MIN_WORK = 2**62
#: Work units per element, by activation code (identity, relu, leaky_relu, sigmoid,
#: tanh, gelu), forward or backward.
ACT_COST = (1, 1, 1, 4, 4, 32)
#: Work units per parameter of an SGD / Adam update (and of the L2 sum: SGD's).
SGD_COST = 2
ADAM_COST = 4
#: Work units per logit of softmax / softmax cross-entropy (an exp and a few passes).
SOFTMAX_COST = 8
#: Work units per output of the squared error (a subtract, a square, a multiply).
SQUARED_ERROR_COST = 2
#: linear_backward's dz / db pass runs by column blocks of this many columns.
COL_BLOCK = 64
#: A row-wise loss task (softmax, softmax-CE, squared error) holds about this many
#: values (whole rows).
LOSS_TASK = 2048
#: The squared error squares whole rows of a task into a float64 scratch of this many
#: values (one row when it is longer), then sums each row from there.
SQUARED_ERROR_SCRATCH = 512
#: Every piece of the train_step / loss_grad workspace starts on a multiple of this
#: many elements (64 bytes or more for both dtypes when the workspace itself is
#: 64-byte aligned); contract.train_workspace_layout applies it.
WORK_ALIGN = 16

# ------------------------------------------------------------- float32 numerics spec
# float64 uses libm everywhere; float32 uses these branch-free approximations (libm's
# float32 exp/tanh/erf are scalar calls that stop a loop from vectorising).
#: exp: Cody-Waite reduction x = n ln2 + r, a degree-6 Cephes polynomial, 2^n applied
#: as two factors. x is clamped to [EXP_F32_MIN, EXP_F32_MAX] first: above, the
#: result overflows to inf; down to EXP_F32_MIN it underflows gradually (subnormals),
#: below it is 0. NaN passes both clamps and propagates.
EXP_F32_MAX = 89.0
EXP_F32_MIN = -104.0
#: tanh: Cephes tanhf's odd polynomial for |x| < TANH_F32_SMALL, else
#: 1 - 2 / (exp(2|x|) + 1) with x's sign (saturates to exactly +-1).
TANH_F32_SMALL = 0.625
#: erf: the rational minimax fit of Eigen and XLA on x clamped to
#: [-ERF_F32_CLAMP, ERF_F32_CLAMP] (erf is +-1 in float32 beyond).
ERF_F32_CLAMP = 4.0


def c_macros() -> list[tuple[str, str]]:
    """The numerics constants (float literals) and the sizes of stack scratch
    (integers) as C macros for the Cython build."""
    values = {
        "FNN_EXP_F32_MAX": EXP_F32_MAX,
        "FNN_EXP_F32_MIN": EXP_F32_MIN,
        "FNN_TANH_F32_SMALL": TANH_F32_SMALL,
        "FNN_ERF_F32_CLAMP": ERF_F32_CLAMP,
    }
    return [(name, f"({float(v)!r}f)") for name, v in values.items()] + [
        ("FNN_SE_SCRATCH", str(int(SQUARED_ERROR_SCRATCH)))
    ]
