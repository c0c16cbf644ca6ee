"""fastnn's own GEMM (kernels/cy/_gemm.h) against the NumPy oracle, on every ISA path
this CPU runs: both dtypes, transposes, alpha/beta, odd shapes, unaligned and strided
operands, several cache blockings, and bitwise-equal results for 1 and 2 threads."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys

import numpy as np
import pytest
from fastnn.kernels import cy
from fastnn.kernels import gemm as gemm_plan
from fastnn.kernels.cy import gemm as ext
from fastnn.kernels.isa import ISA_ENV
from tolerances import assert_close

import fastnn

RUNNABLE_ISAS = gemm_plan.ISAS[: gemm_plan.ISAS.index(ext.cpu_isa()) + 1]
DTYPES = (np.float32, np.float64)
OWN = gemm_plan.MODE_OWN

# (m, n, k): ones, non-multiples of every vector width and tile, exact tiles, and the
# products of a 784-256-128-10 step at batch 32
SHAPES = [
    (1, 1, 1),
    (1, 17, 5),
    (7, 1, 9),
    (13, 10, 1),
    (6, 16, 256),
    (12, 32, 64),
    (33, 17, 70),
    (37, 129, 300),
    (32, 256, 784),
    (784, 256, 32),
    (32, 128, 10),
]


@contextlib.contextmanager
def isa(name):
    """Run the own GEMM on ``name`` inside the block."""
    before = ext.get_isa()
    assert ext._set_isa(gemm_plan.ISAS.index(name)) >= 0
    try:
        yield
    finally:
        ext._set_isa(gemm_plan.ISAS.index(before))


@contextlib.contextmanager
def caches(l1, l2):
    """Block for these cache sizes inside the block (the OS's outside)."""
    ext._set_caches(l1, l2)
    try:
        yield
    finally:
        ext._set_caches(0, 0)


def operands(rng, m, n, k, ta, tb, dtype, *, pad=0, offset=0):
    """op(a) m x k, op(b) k x n; ``pad`` extra columns per row (a leading dimension
    above the width), ``offset`` elements of misalignment at the start."""

    def make(rows, cols):
        flat = rng.standard_normal(offset + rows * (cols + pad)).astype(dtype)
        return flat[offset:].reshape(rows, cols + pad)[:, :cols]

    a = make(k, m) if ta else make(m, k)
    b = make(n, k) if tb else make(k, n)
    return a, b


def oracle(a, b, c0, ta, tb, alpha, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    prod = (a64.T if ta else a64) @ (b64.T if tb else b64)
    return alpha * prod + (beta * c0.astype(np.float64) if beta else 0.0)


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product((False, True), repeat=2)))
def test_own_gemm_matches_numpy(isa_name, dtype, ta, tb):
    rng = np.random.default_rng(0)
    with isa(isa_name):
        for m, n, k in SHAPES:
            for alpha, beta in ((1.0, 0.0), (1.0, 1.0), (-0.5, 0.25)):
                a, b = operands(rng, m, n, k, ta, tb, dtype)
                c0 = rng.standard_normal((m, n)).astype(dtype)
                out = c0.copy()
                ext.gemm(a, b, out, ta, tb, alpha, beta, OWN)
                assert_close(
                    out,
                    oracle(a, b, c0, ta, tb, alpha, beta),
                    dtype,
                    kind="gemm",
                    err_msg=f"{isa_name} {m}x{n}x{k} ta={ta} tb={tb} b={beta}",
                )


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_row_count_matches_numpy_and_each_row_alone(isa_name, dtype):
    """Every m up to two tiles of the tallest kernel (12 rows) and past it: the row
    tiles, the evenly split last pair (32 rows by 6 are 6, 6, 6, 6, 4, 4) and each
    edge tile's unrolled case agree with the oracle, and with each row of C computed
    alone (a 1-row tile) to the last bit."""
    rng = np.random.default_rng(12)
    with isa(isa_name):
        for m, ta in itertools.product(range(1, 28), (False, True)):
            a, b = operands(rng, m, 37, 29, ta, False, dtype)
            out = np.empty((m, 37), dtype)
            ext.gemm(a, b, out, ta, False, 1.0, 0.0, OWN)
            assert_close(out, oracle(a, b, out, ta, False, 1.0, 0.0), dtype,
                         kind="gemm", err_msg=f"{isa_name} m={m} ta={ta}")  # fmt: skip
            for i in range(m):
                row = np.empty((1, 37), dtype)
                ext.gemm(a[:, i : i + 1] if ta else a[i : i + 1], b, row, ta, False,
                         1.0, 0.0, OWN)  # fmt: skip
                np.testing.assert_array_equal(row[0], out[i], err_msg=f"m={m} row {i}")


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_one_row_kernel_gives_each_row_its_tile_bits(isa_name, dtype):
    """A one-row product with B not transposed runs the row kernel (columns in wide
    chunks, then single vectors, then one by one): for widths around each of those,
    depths within and past a block of k, A transposed or strided, and alpha/beta,
    it agrees with the oracle and bit for bit with its row of a 7-row product (which
    runs the register tiles, k in blocks when beta is 0)."""
    rng = np.random.default_rng(5)
    widths = (1, 3, 8, 16, 31, 64, 65, 130, 300)
    with isa(isa_name):
        for n, k, ta, (alpha, beta), pad in itertools.product(
            widths, (1, 9, 700), (False, True), ((1.0, 0.0), (-0.5, 0.25)), (0, 3)
        ):
            a, b = operands(rng, 7, n, k, ta, False, dtype, pad=pad)
            c0 = rng.standard_normal((7, n)).astype(dtype)
            full = c0.copy()
            ext.gemm(a, b, full, ta, False, alpha, beta, OWN)
            assert_close(full, oracle(a, b, c0, ta, False, alpha, beta), dtype,
                         kind="gemm", err_msg=f"{isa_name} n={n} k={k}")  # fmt: skip
            for i in (0, 4, 6):
                row = c0[i : i + 1].copy()
                ext.gemm(a[:, i : i + 1] if ta else a[i : i + 1], b, row, ta, False,
                         alpha, beta, OWN)  # fmt: skip
                np.testing.assert_array_equal(
                    row[0], full[i], err_msg=f"{isa_name} n={n} k={k} ta={ta} row {i}"
                )


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_row_kernels_tail_columns_run_side_by_side_with_their_tile_bits(
    isa_name, dtype
):
    """Past its 4-tile chunks the row kernel runs the last whole vectors side by side,
    then the last columns side by side (independent FMA chains, not one chain after
    another): every count of each (widths 1-159 cover the 64-column float32 chunk of
    AVX2 and its tail, and more for the narrower ones) keeps the bits of the row's
    tile in a 7-row product, with beta and strided operands."""
    rng = np.random.default_rng(17)
    with isa(isa_name):
        for n in range(1, 160):
            for k, beta in ((5, 0.0), (300, 0.5)):
                a, b = operands(rng, 7, n, k, False, False, dtype, pad=n % 3)
                c0 = rng.standard_normal((7, n)).astype(dtype)
                full = c0.copy()
                ext.gemm(a, b, full, False, False, 1.0, beta, OWN)
                row = c0[3:4].copy()
                ext.gemm(a[3:4], b, row, False, False, 1.0, beta, OWN)
                np.testing.assert_array_equal(
                    row[0], full[3], err_msg=f"{isa_name} n={n} k={k} beta={beta}"
                )


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_own_gemm_unaligned_strided_and_blocked(isa_name, dtype):
    """Operands that start off any vector boundary, rows further apart than their
    width (lda > cols), an output with its own leading dimension, and caches so small
    that every blocking loop (several B blocks, several A blocks) runs."""
    rng = np.random.default_rng(1)
    with isa(isa_name):
        for (m, n, k), ta, tb, (l1, l2) in itertools.product(
            [(29, 45, 37), (64, 100, 130)],
            (False, True),
            (False, True),
            [(0, 0), (1024, 4096)],
        ):
            a, b = operands(rng, m, n, k, ta, tb, dtype, pad=3, offset=1)
            big = rng.standard_normal((m, n + 5)).astype(dtype)
            before = big.copy()
            out = big[:, 2 : n + 2]
            c0 = out.copy()
            with caches(l1, l2):
                ext.gemm(a, b, out, ta, tb, 1.0, 1.0, OWN)
            assert_close(out, oracle(a, b, c0, ta, tb, 1.0, 1.0), dtype, kind="gemm")
            # the columns beside the output are untouched
            np.testing.assert_array_equal(big[:, :2], before[:, :2])
            np.testing.assert_array_equal(big[:, n + 2 :], before[:, n + 2 :])


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocking_k_changes_no_bit(isa_name, dtype):
    """With beta == 0 a long k runs in blocks (each tile's sums go back to C and
    the next block goes on from them): bitwise the result of one block, whatever
    the L1 size that sets the blocks; with beta != 0 k is never blocked."""
    rng = np.random.default_rng(4)
    with isa(isa_name):
        for (m, n, k), ta, tb in itertools.product(
            [(32, 256, 784), (13, 37, 300), (7, 5, 1000)], (False, True), (False, True)
        ):
            a, b = operands(rng, m, n, k, ta, tb, dtype, pad=1, offset=1)
            results = []
            for l1 in (1 << 24, 32 * 1024, 1024):  # one block, a few, many
                out = np.full((m, n), np.nan, dtype)
                with caches(l1, 0):
                    ext.gemm(a, b, out, ta, tb, -0.5, 0.0, OWN)
                results.append(out)
            assert_close(results[0], oracle(a, b, 0, ta, tb, -0.5, 0.0), dtype,
                         kind="gemm")  # fmt: skip
            for other in results[1:]:
                np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
def test_own_gemm_leaves_padding_columns_alone(isa_name):
    rng = np.random.default_rng(2)
    with isa(isa_name):
        a = rng.standard_normal((9, 11)).astype(np.float32)
        b = rng.standard_normal((11, 13)).astype(np.float32)
        big = rng.standard_normal((9, 20)).astype(np.float32)
        before = big.copy()
        ext.gemm(a, b, big[:, 3:16], False, False, 1.0, 0.0, OWN)
        np.testing.assert_array_equal(big[:, :3], before[:, :3])
        np.testing.assert_array_equal(big[:, 16:], before[:, 16:])
        assert_close(big[:, 3:16], a.astype(np.float64) @ b, np.float32, kind="gemm")


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
def test_beta_zero_overwrites_nan_and_nan_inputs_propagate(isa_name):
    with isa(isa_name):
        a = np.ones((8, 5), np.float32)
        b = np.ones((5, 20), np.float32)
        out = np.full((8, 20), np.nan, np.float32)
        ext.gemm(a, b, out, False, False, 1.0, 0.0, OWN)
        np.testing.assert_array_equal(out, 5.0)
        a[3, 2] = np.nan
        ext.gemm(a, b, out, False, False, 1.0, 0.0, OWN)
        assert np.isnan(out[3]).all() and not np.isnan(np.delete(out, 3, 0)).any()


@pytest.mark.parametrize("isa_name", RUNNABLE_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_bitwise_equal(isa_name, dtype):
    """C split in fixed blocks, each element's k-sum in one thread: the thread count
    changes nothing, not even the last bit (the plan's own/OpenBLAS choice included)."""
    rng = np.random.default_rng(3)
    with isa(isa_name):
        for (m, n, k), ta, tb, mode in itertools.product(
            [(64, 300, 100), (300, 64, 32), (32, 256, 784)],
            (False, True),
            (False, True),
            (OWN, gemm_plan.MODE_PLAN),
        ):
            a, b = operands(rng, m, n, k, ta, tb, dtype)
            results = []
            for threads in (1, 2):
                # the kernels' own setting, put back after: the Cython count set
                # directly would outlive the block behind fastnn's back
                with fastnn.num_threads(threads):
                    out = np.empty((m, n), dtype)
                    ext.gemm(a, b, out, ta, tb, 1.0, 0.0, mode)
                results.append(out)
            np.testing.assert_array_equal(results[0], results[1])


def test_gemm_rejects_mismatched_shapes_and_overlapping_rows():
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        ext.gemm(a, np.ones((4, 5), np.float32), np.empty((4, 5), np.float32),
                 False, False, 1.0, 0.0, OWN)  # fmt: skip
    overlapping = np.lib.stride_tricks.as_strided(a, (4, 3), (4, 4))
    with pytest.raises(ValueError, match="rows"):
        ext.gemm(overlapping, np.ones((3, 5), np.float32), np.empty((4, 5), np.float32),
                 False, False, 1.0, 0.0, OWN)  # fmt: skip


@pytest.mark.parametrize("requested", gemm_plan.ISAS)
def test_fastnn_isa_forces_a_lower_path_and_refuses_a_missing_one(
    requested, monkeypatch
):
    best = ext.cpu_isa()
    monkeypatch.setenv(ISA_ENV, requested)
    try:
        if gemm_plan.ISAS.index(requested) <= gemm_plan.ISAS.index(best):
            plan = gemm_plan.configure()
            assert plan.isa == requested == ext.get_isa()
            assert plan.cpu_isa == best
        else:
            with pytest.raises(RuntimeError, match=f"lacks it.*best is {best}"):
                gemm_plan.configure()
            assert ext.get_isa() == best  # nothing changed
    finally:
        monkeypatch.delenv(ISA_ENV)
        assert gemm_plan.configure().isa == best


def test_fastnn_isa_rejects_an_unknown_name(monkeypatch):
    monkeypatch.setenv(ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="FASTNN_ISA='sse9'"):
        gemm_plan.configure()


def test_backend_info_names_the_gemm_isa():
    plan = cy.GEMM_PLAN
    assert plan.isa in cy.BACKEND_INFO["gemm"]
    rule = f"k <= {plan.max_k} and n >= {plan.min_n} and one-row ones"
    assert rule in cy.BACKEND_INFO["gemm"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_both_compiled_backends_run_the_plan(dtype):
    """The raw matmul of the Cython and the Numba backend give, bit for bit, what the
    own kernel gives for a product the plan hands it (k short, n wide), and what
    OpenBLAS gives (as fastnn calls it) for one it does not (the rule judges the whole
    product, never one fixed block of C)."""
    from fastnn.kernels import nb

    rng = np.random.default_rng(4)
    max_k, min_n = cy.GEMM_PLAN.max_k, cy.GEMM_PLAN.min_n
    for (m, n, k), expected_mode in (
        ((300, 2 * min_n, max_k), OWN),
        ((32, 256, max_k + 1), gemm_plan.MODE_BLAS),
        ((300, 2 * min_n - 1, max_k + 40), gemm_plan.MODE_BLAS),
        ((300, min_n - 1, 8), gemm_plan.MODE_BLAS),  # split by rows: n stays narrow
        ((1, 256, 784), OWN),  # one row: the own GEMM's row kernel, whatever k
        ((1, 3, 784), OWN),
    ):
        a, b = operands(rng, m, n, k, False, False, dtype)
        expected = np.empty((m, n), dtype)
        ext.gemm(a, b, expected, False, False, 1.0, 0.0, expected_mode)
        for backend in (cy, nb):
            out = np.empty((m, n), dtype)
            backend.matmul(a, b, out, False, False, False)
            np.testing.assert_array_equal(out, expected, err_msg=backend.__name__)


def test_numba_without_the_extension_says_why_it_runs_blas_only(tmp_path):
    """The Numba backend calls fastnn's own GEMM from the Cython extension; when that
    cannot be imported, every product goes to BLAS and the backend's info says so
    with the import error (never a silent change of kernels)."""
    code = (
        "import sys; sys.modules['fastnn.kernels.cy'] = None\n"
        "import fastnn\n"
        "print(fastnn.kernels.get_backend('numba').info['gemm'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the installed fastnn, not the source folder
    )
    assert out.returncode == 0, out.stderr
    said = "for every product: fastnn's own GEMM (the Cython extension) is unavailable"
    assert f"{said} (ModuleNotFoundError: import of fastnn.kernels.cy" in out.stdout
