"""OpenMP facts and the thread setting of the Cython kernels."""

include "_common.pxi"


def openmp_enabled():
    """True when the extension was compiled with OpenMP (else prange runs serially)."""
    return bool(FNN_OPENMP)


def get_max_threads():
    """omp_get_max_threads() (1 without OpenMP)."""
    return fnn_omp_max_threads()


def set_num_threads(int n):
    """Set OpenMP's default team size (the kernels pass num_threads explicitly)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fnn_omp_set_threads(n)
    _set_threads(n)
