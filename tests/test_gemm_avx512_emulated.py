"""fastnn's AVX-512 GEMM kernels on CPUs without AVX-512: tests/gemm_avx512_emulated.c
builds kernels/cy/_gemm.h with each _mm512 operation the kernels use defined as the
same operation on two AVX2 halves, so the AVX-512 instance's tiling (12 x 32 float,
12 x 16 double), edge tiles, packing and K-blocking run here. Against the NumPy
oracle, and bitwise against the AVX2 kernels of the same build: every element of C is
the same FMA chain over k in both, so any difference is a bug in the tiling. (Where
the CPU has AVX-512, tests/test_gemm.py runs the real instructions too.)"""

from __future__ import annotations

import ctypes
import itertools
import shlex
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from fastnn.kernels import gemm as gemm_plan
from fastnn.kernels.cy import gemm as ext
from fastnn.kernels.isa import COMMON_FLAGS
from tolerances import assert_close

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).with_name("gemm_avx512_emulated.c")
AVX2, AVX512 = 1, 2  # kernels/cy/_gemm.h FNN_ISA_*
DTYPES = (np.float32, np.float64)
# the installed extension's own GEMM runs FMA kernels (not FASTNN_ISA=generic's): its
# bits are the emulated ones too
FMA_EXTENSION = ext.get_isa() != "generic"

# (m, n, k): ones, below / at / above the AVX-512 tile (12 rows; 32 float or 16
# double columns) and the AVX2 one (6; 16 or 8), K around a packed panel's L1 limit,
# and the products of a 784-256-128-10 step at batch 32
SHAPES = [
    (1, 1, 1),
    (1, 33, 7),
    (11, 1, 5),
    (12, 32, 16),
    (13, 31, 64),
    (24, 64, 129),
    (25, 17, 300),
    (7, 48, 513),
    (36, 96, 40),
    (32, 256, 784),
    (784, 256, 32),
    (32, 10, 128),
]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The shared library of tests/gemm_avx512_emulated.c, compiled here."""
    if ext.cpu_isa() == "generic":
        pytest.skip("this CPU has no AVX2+FMA to emulate AVX-512 with")
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    out = tmp_path_factory.mktemp("avx512") / "gemm_avx512_emulated.so"
    # setup.py's flags for the extension (no contraction of a*b+c: the kernels' bits),
    # but -O2 for -O3: the same IEEE results without fast-math, in a quarter of the time
    flags = ["-O2", "-fno-trapping-math", "-fno-math-errno", *COMMON_FLAGS]
    cmd = [*cc, *flags, "-fPIC", "-shared", f"-I{ROOT / 'kernels' / 'cy'}",
           str(SOURCE), "-o", str(out), "-lm"]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    lib = ctypes.CDLL(str(out))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for name, real in (("fnn_emu_sgemm", ctypes.c_float),
                       ("fnn_emu_dgemm", ctypes.c_double)):  # fmt: skip
        getattr(lib, name).argtypes = [ctypes.c_int, ctypes.c_int, i64, i64, i64, real,
                                       ptr, i64, ptr, i64, real, ptr, i64]  # fmt: skip
        getattr(lib, name).restype = None
    lib.fnn_emu_set_isa.argtypes = [ctypes.c_int]
    lib.fnn_emu_isa_name.restype = ctypes.c_char_p
    lib.fnn_emu_tile.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.fnn_emu_set_caches.argtypes = [i64, i64]
    lib.fnn_emu_set_caches.restype = None
    return lib


def gemm(lib, isa, ta, tb, a, b, c, alpha=1.0, beta=0.0):
    """c = alpha op(a) op(b) + beta c on the build's ``isa`` kernels (c: a view whose
    rows may be padded)."""
    assert lib.fnn_emu_set_isa(isa) == isa
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    for x in (a, b, c):
        assert x.strides[1] == x.itemsize
    run = lib.fnn_emu_sgemm if c.dtype == np.float32 else lib.fnn_emu_dgemm
    run(ta, tb, m, n, k, alpha, a.ctypes.data, a.strides[0] // a.itemsize,
        b.ctypes.data, b.strides[0] // b.itemsize, beta, c.ctypes.data,
        c.strides[0] // c.itemsize)  # fmt: skip


def operands(rng, m, n, k, ta, tb, dtype, pad):
    """op(a) m x k, op(b) k x n and c0 m x n, each row ``pad`` elements longer than its
    width (a leading dimension above it), starting one element off alignment."""

    def make(rows, cols):
        flat = rng.standard_normal(1 + rows * (cols + pad)).astype(dtype)
        return flat[1:].reshape(rows, cols + pad)

    a = make(k, m)[:, :m] if ta else make(m, k)[:, :k]
    b = make(n, k)[:, :k] if tb else make(k, n)[:, :n]
    return a, b, make(m, n)


def oracle(a, b, c0, ta, tb, alpha, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return alpha * ((a64.T if ta else a64) @ (b64.T if tb else b64)) + beta * c0


def test_the_emulated_build_runs_the_avx512_kernels_at_their_tile(emulated):
    assert emulated.fnn_emu_set_isa(AVX512) == AVX512
    assert emulated.fnn_emu_isa_name() == b"avx512"
    assert [emulated.fnn_emu_tile(dbl, cols) for dbl in (0, 1) for cols in (0, 1)] == [
        12, 32, 12, 16]  # fmt: skip
    assert emulated.fnn_emu_set_isa(AVX2) == AVX2
    assert emulated.fnn_emu_isa_name() == b"avx2"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", list(itertools.product((0, 1), repeat=2)))
@pytest.mark.parametrize("caches", [(0, 0), (4096, 16384)], ids=["os", "small"])
def test_avx512_kernels_match_numpy_and_the_avx2_bits(emulated, dtype, ta, tb, caches):
    """Small caches make k run in blocks (a k x NR panel over half of L1d) and B in
    several L2 blocks. The padding columns of C are never written."""
    rng = np.random.default_rng(hash((ta, tb, caches[0])) % 2**32)
    emulated.fnn_emu_set_caches(*caches)
    try:
        for (m, n, k), (alpha, beta) in itertools.product(
            SHAPES, [(1.0, 0.0), (-0.5, 0.0), (1.0, 1.0), (2.0, -0.25)]
        ):
            a, b, c0 = operands(rng, m, n, k, ta, tb, dtype, pad=int(rng.integers(3)))
            out = {}
            for isa in (AVX2, AVX512):
                c = c0.copy()
                gemm(emulated, isa, ta, tb, a, b, c[:, :n], alpha, beta)
                np.testing.assert_array_equal(c[:, n:], c0[:, n:])
                out[isa] = c[:, :n]
            case = f"{m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta}"
            assert_close(out[AVX512], oracle(a, b, c0[:, :n], ta, tb, alpha, beta),
                         dtype, kind="gemm", err_msg=case)  # fmt: skip
            np.testing.assert_array_equal(out[AVX512], out[AVX2], err_msg=case)
            if FMA_EXTENSION:  # the installed build: AVX2 here, AVX-512 where it runs
                installed = c0[:, :n].copy()
                ext.gemm(a, b, installed, ta, tb, alpha, beta, gemm_plan.MODE_OWN)
                np.testing.assert_array_equal(out[AVX512], installed, err_msg=case)
    finally:
        emulated.fnn_emu_set_caches(0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_kernels_give_the_same_bits_in_any_block_of_c(emulated, dtype):
    """fastnn's threads each take a fixed block of C: rows or columns cut anywhere
    (across tiles) leave every element's bits as in the whole product."""
    rng = np.random.default_rng(7)
    m, n, k = 53, 71, 300
    a, b, _ = operands(rng, m, n, k, 1, 0, dtype, pad=0)
    whole = np.empty((m, n), dtype)
    gemm(emulated, AVX512, 1, 0, a, b, whole)
    for cut in (1, 12, 13, 40):
        rows = np.empty((m, n), dtype)
        gemm(emulated, AVX512, 1, 0, a[:, :cut], b, rows[:cut])
        gemm(emulated, AVX512, 1, 0, a[:, cut:], b, rows[cut:])
        np.testing.assert_array_equal(rows, whole)
        cols = np.empty((m, n), dtype)
        gemm(emulated, AVX512, 1, 0, a, b[:, :cut], cols[:, :cut])
        gemm(emulated, AVX512, 1, 0, a, b[:, cut:], cols[:, cut:])
        np.testing.assert_array_equal(cols, whole)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_edge_tiles_of_every_row_count(emulated, dtype):
    """An edge tile of each row count (1 to 12: m % 12) runs its own unrolled case of
    the tile; SHAPES reach only some of them."""
    rng = np.random.default_rng(11)
    for m, ta, beta in itertools.product(range(1, 25), (0, 1), (0.0, 0.5)):
        a, b, c0 = operands(rng, m, 47, 19, ta, 0, dtype, pad=1)
        out = {}
        for isa in (AVX2, AVX512):
            c = c0.copy()
            gemm(emulated, isa, ta, 0, a, b, c[:, :47], 1.0, beta)
            out[isa] = c[:, :47]
        case = f"m={m} ta={ta} beta={beta}"
        assert_close(out[AVX512], oracle(a, b, c0[:, :47], ta, 0, 1.0, beta), dtype,
                     kind="gemm", err_msg=case)  # fmt: skip
        np.testing.assert_array_equal(out[AVX512], out[AVX2], err_msg=case)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_one_row_kernel_gives_each_row_its_tile_bits(emulated, dtype):
    """A one-row product (B not transposed) runs the row kernel: 128 float32 (64
    float64) columns at a time, then single vectors, then single columns. Each row
    alone has its bits in a 5-row product (the tiles, k in blocks when beta is 0)."""
    rng = np.random.default_rng(13)
    for n, ta, beta in itertools.product((47, 128, 300), (0, 1), (0.0, 0.5)):
        a, b, c0 = operands(rng, 5, n, 300, ta, 0, dtype, pad=1)
        whole = c0.copy()
        gemm(emulated, AVX512, ta, 0, a, b, whole[:, :n], 1.0, beta)
        assert_close(whole[:, :n], oracle(a, b, c0[:, :n], ta, 0, 1.0, beta), dtype,
                     kind="gemm", err_msg=f"n={n} ta={ta} beta={beta}")  # fmt: skip
        for i in range(5):
            row = c0[i : i + 1].copy()
            a_row = a[:, i : i + 1] if ta else a[i : i + 1]
            gemm(emulated, AVX512, ta, 0, a_row, b, row[:, :n], 1.0, beta)
            np.testing.assert_array_equal(
                row[0], whole[i], err_msg=f"n={n} ta={ta} beta={beta} row {i}"
            )


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_row_kernels_tail_columns_keep_their_tile_bits(emulated, dtype):
    """Every count of whole vectors (0-7) and of single columns (0, 1, VLEN - 1) past
    the row kernel's last 4-tile chunk (128 float32 or 64 float64 columns): the row
    alone has its bits in a 5-row product."""
    rng = np.random.default_rng(19)
    vlen = 16 if dtype == np.float32 else 8
    for nv, w in itertools.product(range(8), (0, 1, vlen - 1)):
        n = 8 * vlen + nv * vlen + w
        a, b, c0 = operands(rng, 5, n, 40, 0, 0, dtype, pad=1)
        whole = c0.copy()
        gemm(emulated, AVX512, 0, 0, a, b, whole[:, :n], 1.0, 0.5)
        row = c0[2:3].copy()
        gemm(emulated, AVX512, 0, 0, a[2:3], b, row[:, :n], 1.0, 0.5)
        np.testing.assert_array_equal(row[0], whole[2], err_msg=f"n={n}")
