"""OpenMP facts of the Cython kernels."""

include "_common.pxi"


def openmp_enabled():
    """True when the extension was compiled with OpenMP (else prange runs serially)."""
    return bool(FNN_OPENMP)


def get_max_threads():
    """omp_get_max_threads() (1 without OpenMP)."""
    return fnn_omp_max_threads()

