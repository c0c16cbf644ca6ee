"""fastnn's own GEMM: which instruction set it runs, and which products it takes.

The micro-kernels (kernels/cy/_gemm.h, compiled into ``fastnn.kernels.cy.gemm``)
exist for AVX-512F, AVX2+FMA and a portable vector-extension fallback; the best one the
CPU runs is picked at import from its features (never from build flags);
``FASTNN_ISA`` forces a lower one (kernels/isa.py: the choice for every kernel family).

The plan (one for both compiled backends): a product whose shape was measured
(fastnn/_gemm_wisdom.py: the products of a training step, timed once per machine and
kept on disk) goes to the kernel found more than 5% faster, if either was; any other
goes to fastnn's GEMM when ``k <= max_k`` and ``n >= min_n``, or when it is one row
of C with B not transposed (the rule), else to OpenBLAS. It judges the whole product,
and every fixed block of C that one thread computes (the split of
kernels/cy/_blas.pxi and kernels/nb/matmul.py) runs the same kernel, so the bits of C
never depend on the split.
The rule's bounds come from the kernel's own parameters and the CPU's L1d: ``max_k``
is the most rows of a packed ``k x NR`` panel of B that fit in a quarter of L1d (the
tile runs its whole k against an L1-resident panel, with room left for the rows of A
it streams; a longer k runs in blocks of half-L1d panels, which keeps the bits but
measured no faster than OpenBLAS), ``min_n`` two register tiles' width (a narrower C
leaves most of each tile's lanes idle); float32's tile sets both, for either dtype.
A one-row product (a single row predicted) runs the own GEMM's row kernel, which
streams B once like a GEMV, where OpenBLAS's GEMM packs all of B for one row.
docs/performance.md has the measurements behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .isa import ISAS, choose, requested

#: Modes the compiled GEMM entry points understand (kernels/cy/_blas.pxi).
MODE_BLAS, MODE_PLAN, MODE_OWN = 0, 1, 2
#: The own GEMM's kernels and rule, as measured plans know them: bump it with any
#: change to either, so each machine's plan (fastnn/_gemm_wisdom.py) measures again
#: instead of keeping choices timed against the old kernels (2: the one-row kernel).
REVISION = 2


@dataclass(frozen=True)
class GemmPlan:
    """What fastnn's GEMM runs on this CPU and which products it takes."""

    isa: str  # the micro-kernels in use
    cpu_isa: str  # the best this CPU runs
    tile_f32: tuple[int, int]  # register tile (rows, columns), float32
    tile_f64: tuple[int, int]
    l1_bytes: int
    l2_bytes: int
    max_k: int  # products with k <= max_k and n >= min_n use the own kernel
    min_n: int
    sgemm: int  # addresses of fnn_sgemm / fnn_dgemm (ILP64 cblas_?gemm signature)
    dgemm: int
    lookup: int  # address of fnn_plan_lookup (the measured plan's table)

    def rule_takes(self, m: int, n: int, k: int, trans_b: bool) -> bool:
        """The rule: fastnn's GEMM for a product of m rows, n columns and depth k?"""
        return (k <= self.max_k and n >= self.min_n) or (m == 1 and not trans_b)

    @property
    def description(self) -> str:
        (mr, nr), (mr64, nr64) = self.tile_f32, self.tile_f64
        forced = "" if self.isa == self.cpu_isa else f" (forced; CPU: {self.cpu_isa})"
        return (
            f"fastnn's own ({self.isa}{forced}; tiles {mr}x{nr} float32, "
            f"{mr64}x{nr64} float64) for the products the measured plan gives it "
            f"and, where it has measured none, those with k <= {self.max_k} and "
            f"n >= {self.min_n} and one-row ones; OpenBLAS for the rest"
        )


def _max_k(l1_bytes: int, tile: tuple[int, int], itemsize: int) -> int:
    """Rows of a k x NR panel of B that fit in a quarter of L1d (see the module doc)."""
    return max(tile[0], l1_bytes // 4 // (tile[1] * itemsize))


def configure() -> GemmPlan:
    """Pick the ISA (the CPU's best or FASTNN_ISA) and return the plan.

    Raises RuntimeError when FASTNN_ISA names an instruction set this CPU lacks.
    """
    from .cy import gemm as ext  # the compiled kernels (raises when not built)

    best = ext.cpu_isa()
    # every ISA's micro-kernels are compiled in (the CPU check rules out those absent)
    isa = choose(best, ISAS, requested())
    ext._set_isa(ISAS.index(isa))
    index = ISAS.index(isa)
    l1, l2 = ext._set_caches(0, 0)
    tile32, tile64 = ext.tile(index, False), ext.tile(index, True)
    sgemm, dgemm = ext.addresses()
    ext._plan_clear()  # measurements of another ISA or cache size do not hold
    return GemmPlan(
        isa=isa,
        cpu_isa=best,
        tile_f32=tuple(tile32),
        tile_f64=tuple(tile64),
        l1_bytes=int(l1),
        l2_bytes=int(l2),
        max_k=_max_k(int(l1), tile32, 4),
        min_n=2 * tile32[1],
        sgemm=int(sgemm),
        dgemm=int(dgemm),
        lookup=int(ext.plan_lookup_address()),
    )
