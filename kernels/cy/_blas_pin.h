/* The compiled kernels' BLAS pin: BLAS runs on one thread while a kernel of any
 * thread runs its GEMM blocks (one single-threaded BLAS call per block, inside our own
 * threads: never a BLAS pool inside them). The first pin saves BLAS's count, the last
 * unpin puts it back: one depth for the whole process, used by every Cython module
 * (kernels/cy/_blas.pxi) and by Numba (kernels/nb/matmul.py) through the addresses of
 * fnn_blas_pin and fnn_blas_unpin. When each kernel saved and restored the count
 * itself, one thread's restore reached another's kernel midway, whose later blocks
 * then ran on BLAS's threads: nested pools, and other last bits than the same call
 * alone. */
#ifndef FNN_BLAS_PIN_H
#define FNN_BLAS_PIN_H

#include <pthread.h>

typedef void (*fnn_blas_set_fn)(int);
typedef int (*fnn_blas_get_fn)(void);

static fnn_blas_set_fn fnn_pin_set = NULL;
static fnn_blas_get_fn fnn_pin_get = NULL;
static pthread_mutex_t fnn_pin_lock = PTHREAD_MUTEX_INITIALIZER;
static int fnn_pin_depth = 0; /* kernels between pin and unpin, all threads */
static int fnn_pin_saved = 0; /* BLAS's count when the first of them pinned */

static int fnn_pin_orphaned = 0; /* forked child: the parent's threads had pinned */

/* In a forked child, inside fork() (before any Python fork hook runs): only the
 * forking thread lives, and it was in no kernel (it was running fork), so pins of
 * the parent's other threads will never be undone, and one of them may have held the
 * lock. The lock starts anew, the depth at 0; BLAS's count is put back by
 * fnn_blas_pin_after_fork from Python's hook (no BLAS call here: a child of
 * subprocess runs this before exec). */
static void fnn_blas_pin_atfork_child(void)
{
    pthread_mutex_init(&fnn_pin_lock, NULL);
    fnn_pin_orphaned = fnn_pin_depth > 0;
    fnn_pin_depth = 0;
}

/* BLAS's thread count setter and getter (openblas_set/get_num_threads). */
static void fnn_blas_pin_configure(size_t set, size_t get)
{
    static int registered = 0;
    fnn_pin_set = (fnn_blas_set_fn)set;
    fnn_pin_get = (fnn_blas_get_fn)get;
    if (!registered && pthread_atfork(NULL, NULL, fnn_blas_pin_atfork_child) == 0)
        registered = 1;
}

/* BLAS on one thread until the matching unpin; returns the token to pass it. */
static int fnn_blas_pin(void)
{
    pthread_mutex_lock(&fnn_pin_lock);
    if (fnn_pin_depth++ == 0) {
        fnn_pin_saved = fnn_pin_get();
        if (fnn_pin_saved != 1)
            fnn_pin_set(1);
    }
    pthread_mutex_unlock(&fnn_pin_lock);
    return 1;
}

static void fnn_blas_unpin(int token)
{
    if (!token)
        return;
    pthread_mutex_lock(&fnn_pin_lock);
    if (--fnn_pin_depth == 0 && fnn_pin_saved > 1)
        fnn_pin_set(fnn_pin_saved);
    pthread_mutex_unlock(&fnn_pin_lock);
}

/* BLAS's count as code outside the kernels sees it (fastnn/threads.py): the count
 * saved by the first pin while kernels are pinned, else BLAS's own; -1 before
 * fnn_blas_pin_configure. */
static int fnn_blas_count(void)
{
    int count;
    if (fnn_pin_get == NULL)
        return -1;
    pthread_mutex_lock(&fnn_pin_lock);
    count = fnn_pin_depth > 0 ? fnn_pin_saved : fnn_pin_get();
    pthread_mutex_unlock(&fnn_pin_lock);
    return count;
}

/* Set BLAS's count from outside the kernels: while kernels are pinned it becomes the
 * count the last unpin restores (their blocks keep BLAS on one thread), else it is
 * set now. A count set under a pin and restored later by the setter's own save would
 * otherwise be the pinned 1, left for good. -1 before fnn_blas_pin_configure. */
static int fnn_blas_set_count(int count)
{
    if (fnn_pin_set == NULL)
        return -1;
    pthread_mutex_lock(&fnn_pin_lock);
    if (fnn_pin_depth > 0)
        fnn_pin_saved = count;
    else
        fnn_pin_set(count);
    pthread_mutex_unlock(&fnn_pin_lock);
    return 0;
}

/* In a forked child, from Python's fork hook: BLAS's count back from the pins the
 * parent's other threads held at the fork. */
static void fnn_blas_pin_after_fork(void)
{
    if (fnn_pin_orphaned && fnn_pin_saved > 1 && fnn_pin_set != NULL)
        fnn_pin_set(fnn_pin_saved);
    fnn_pin_orphaned = 0;
}

#endif
