"""Loss and gradients, and the whole training step, of a Linear(+activation) stack as
one nogil call each.

``loss_grad`` runs forward, the fused loss and backward (to every
parameter and, on request, to the input); ``train_step`` runs the same and then the
optimizer update, without touching Python: the very cores of linear.pyx, loss.pyx and optim.pyx
(shared through _linear.pxi, _loss.pxi, _optim.pxi), with the same thresholds, so the
weights are bitwise those of the layer-by-layer path and independent of the thread
count. One specialisation per dtype serves every depth: the network is the int64 layout
table plus the flat buffers (``fastnn.kernels.contract.train_workspace_layout`` says how
``work`` is carved).
"""

include "_common.pxi"
include "_act.pxi"
include "_blas.pxi"
include "_linear.pxi"
include "_loss.pxi"
include "_optim.pxi"

# contract.TRAIN_WORK_ALIGN and len(contract.TRAIN_LAYOUT_COLUMNS), set at import
cdef Py_ssize_t _WORK_ALIGN = 1
cdef Py_ssize_t _NCOL = 0


cdef inline Py_ssize_t _round_up(Py_ssize_t size) noexcept nogil:
    return (size + _WORK_ALIGN - 1) // _WORK_ALIGN * _WORK_ALIGN


cdef Py_ssize_t _argmax_hits(const floating* z, const Py_ssize_t* labels, Py_ssize_t n,
                             Py_ssize_t K) noexcept nogil:
    """Rows whose argmax (np.argmax: first maximum, a NaN wins) is the label."""
    cdef Py_ssize_t i, j, best, hits = 0
    cdef floating bv, v
    for i in range(n):
        best = 0
        bv = z[i * K]
        if bv == bv:
            for j in range(1, K):
                v = z[i * K + j]
                if v != v:
                    best = j
                    break
                if v > bv:
                    best = j
                    bv = v
        if best == labels[i]:
            hits += 1
    return hits


cdef struct _Update:
    int optimizer        # contract.TRAIN_OPTIMIZERS code
    double lr, momentum, beta1, beta2, eps
    bint nesterov, decoupled
    long step


cdef double _update(floating* params, floating* grads, floating* sa, floating* sb,
                    Py_ssize_t lo, Py_ssize_t hi, double wd, double l2,
                    const _Update* u, double* partials) noexcept nogil:
    """Segment [lo, hi) of the flat buffers, as optim.pyx's sgd/adam_update (sa: the
    velocity or m, sb: v) on the gradient grads + l2 params; with ``partials`` returns
    the segment's sum p^2 before the step, else 0."""
    if hi <= lo:
        return 0
    if u.optimizer == 0:
        return _sgd_core(params + lo, grads + lo,
                         sa + lo if u.momentum != 0 and sa != NULL else NULL, hi - lo,
                         u.lr, u.momentum, u.nesterov, wd, l2, partials)
    return _adam_core(params + lo, grads + lo, sa + lo, sb + lo, hi - lo, u.lr,
                      u.beta1, u.beta2, u.eps, u.step, wd, u.decoupled, l2, partials)


cdef double _loss_grad_core(const floating* x, const Py_ssize_t* labels,
                           const floating* targets, int loss_code,
                           const floating* sw, const floating* params,
                           floating* grads, const int64_t* layout, Py_ssize_t L,
                           const double* alphas, floating* work, Py_ssize_t n,
                           double label_smoothing, double l2, floating* input_grad,
                           Py_ssize_t* offs, double* rows,
                           Py_ssize_t* correct) noexcept nogil:
    """Forward, the loss (softmax-CE on labels, or squared error / sigmoid-CE on
    targets when loss_code is _SQUARED_ERROR / _SIGMOID_CE) and backward (dW gets l2 W; d loss / d x into
    input_grad unless NULL); returns the loss without its L2 term. BLAS is
    single-threaded."""
    cdef Py_ssize_t i, K, off = 0, d_off
    cdef const int64_t* row
    cdef const floating* a
    cdef floating* y
    cdef floating* dy
    cdef floating* dx
    cdef double loss
    # carve the workspace (the contract's rule): y, z (keep_z), dx (not layer 0) per
    # layer, then the gradient of the logits
    for i in range(L):
        row = layout + _NCOL * i
        offs[3 * i] = off
        off += _round_up(n * row[3])
        offs[3 * i + 1] = -1
        if row[5]:
            offs[3 * i + 1] = off
            off += _round_up(n * row[3])
        offs[3 * i + 2] = -1
        if i > 0:
            offs[3 * i + 2] = off
            off += _round_up(n * row[2])
    d_off = off
    # forward
    a = x
    for i in range(L):
        row = layout + _NCOL * i
        _linear_forward_core(a, params + row[0], params + row[1] if row[1] >= 0 else NULL,
                             work + offs[3 * i],
                             work + offs[3 * i + 1] if row[5] else NULL, n, row[2],
                             row[3], <int>row[4], <floating>alphas[i])
        a = work + offs[3 * i]
    # loss, its gradient w.r.t. the last output, hits
    K = layout[_NCOL * (L - 1) + 3]
    if loss_code == _SQUARED_ERROR or loss_code == _SIGMOID_CE:
        loss = _se_core(a, targets, sw, work + d_off, NULL, rows, n, K,
                        loss_code == _SIGMOID_CE)
        correct[0] = 0
    else:
        loss = _sce_core(a, labels, sw, work + d_off, NULL, rows, n, K,
                         label_smoothing)
        correct[0] = _argmax_hits(a, labels, n, K)
    # backward, last layer first; dz overwrites the incoming gradient in place
    dy = work + d_off
    for i in range(L - 1, -1, -1):
        row = layout + _NCOL * i
        y = work + offs[3 * i]
        dx = work + offs[3 * i + 2] if i > 0 else input_grad
        _linear_backward_core(dy, x if i == 0 else work + offs[3 * (i - 1)],
                              params + row[0], work + offs[3 * i + 1] if row[5] else y,
                              y, dy, grads + row[0],
                              grads + row[1] if row[1] >= 0 else NULL, dx, n, row[2],
                              row[3], <int>row[4], <floating>alphas[i], <floating>l2)
        dy = dx
    return loss


cdef struct _Scratch:
    Py_ssize_t* offs     # 3 per layer: the y, z, dx offsets in work
    double* rows         # one per row: the row losses of the loss
    double* partials     # one per _CHUNK of the weights: sum p^2 per chunk


cdef int _scratch_alloc(_Scratch* s, Py_ssize_t L, Py_ssize_t n,
                        Py_ssize_t weights_end) except -1:
    s.offs = <Py_ssize_t*>malloc(3 * L * sizeof(Py_ssize_t))
    s.rows = <double*>malloc(n * sizeof(double))
    s.partials = <double*>malloc(((weights_end + _CHUNK - 1) // _CHUNK + 1)
                                 * sizeof(double))
    if s.offs == NULL or s.rows == NULL or s.partials == NULL:
        _scratch_free(s)
        raise MemoryError()
    return 0


cdef void _scratch_free(_Scratch* s) noexcept:
    free(s.offs)
    free(s.rows)
    free(s.partials)
    s.offs = NULL
    s.rows = NULL
    s.partials = NULL


cdef bint _update_adds_l2(const int64_t* layout, Py_ssize_t L,
                         Py_ssize_t weights_end) noexcept nogil:
    """Whether params[:weights_end] holds every layer's weight matrix and no bias
    (what lies between them is no parameter: a model's padding): only then may the
    update of that segment add the L2 term's gradient l2 W, which backward adds to
    every dW."""
    cdef Py_ssize_t i
    cdef const int64_t* row
    for i in range(L):
        row = layout + i * _NCOL
        if row[0] + row[2] * row[3] > weights_end:
            return False
        if 0 <= row[1] < weights_end:
            return False
    return True


cdef double _train_step_core(const floating* x, const Py_ssize_t* lp,
                             const floating* tp, const floating* swp,
                             floating* params, floating* grads,
                             const int64_t* layout, Py_ssize_t L,
                             const double* alphas, floating* work, Py_ssize_t n,
                             Py_ssize_t n_params, const int64_t* config,
                             const double* hyper, floating* sa, floating* sb,
                             const _Update* u, _Scratch* s,
                             Py_ssize_t* correct) noexcept nogil:
    """One step: _loss_grad_core, then the update (weights with weight decay,
    biases without; the L2 term's sum of squares, float64 in fixed chunks, is read
    by the weights' update before it steps). The L2 term's gradient l2 W is added by
    the update, which reads W anyway, not by backward: a pass over the weights less,
    the same sums (backward adds it after the product, in the same rounding).
    ``grads`` keeps the data term's gradient. Only when params[:weights_end] holds
    the weights and no bias: otherwise backward adds l2 W, as loss_grad. Returns the
    loss with its L2 term."""
    cdef Py_ssize_t weights_end = config[_WEIGHTS_END]
    cdef double l2 = hyper[_L2]
    cdef bint in_update = _update_adds_l2(layout, L, weights_end)
    cdef double loss = _loss_grad_core(x, lp, tp, <int>config[_LOSS], swp, params,
                                       grads, layout, L, alphas, work, n,
                                       hyper[_LABEL_SMOOTHING],
                                       0.0 if in_update else l2, NULL, s.offs,
                                       s.rows, correct)
    loss += 0.5 * l2 * _update(params, grads, sa, sb, 0, weights_end,
                               hyper[_WEIGHT_DECAY], l2 if in_update else 0.0, u,
                               s.partials if l2 != 0 else NULL)
    _update(params, grads, sa, sb, weights_end, n_params, 0.0, 0.0, u, NULL)
    return loss


cdef void _update_settings(_Update* u, const int64_t[::1] config,
                           const double[::1] hyper) noexcept:
    u.optimizer = <int>config[_OPTIMIZER]
    u.lr = hyper[_LR]
    u.momentum = hyper[_MOMENTUM]
    u.nesterov = config[_NESTEROV] != 0
    u.beta1 = hyper[_BETA1]
    u.beta2 = hyper[_BETA2]
    u.eps = hyper[_EPS]
    u.decoupled = config[_DECOUPLED] != 0
    u.step = <long>config[_STEP]


# The slots of the config (int64) and hyper (float64) arrays: set from the contract's
# CONFIG_SLOTS / HYPER_SLOTS at import (kernels/cy/__init__.py), never restated here.
cdef Py_ssize_t _LOSS, _WEIGHTS_END, _OPTIMIZER, _STEP, _NESTEROV, _DECOUPLED
cdef Py_ssize_t _LABEL_SMOOTHING, _L2, _LR, _MOMENTUM, _WEIGHT_DECAY, _BETA1, _BETA2
cdef Py_ssize_t _EPS
cdef int _SQUARED_ERROR = -1  # contract.TRAIN_LOSSES["squared_error"]
cdef int _SIGMOID_CE = -1  # contract.TRAIN_LOSSES["sigmoid_cross_entropy"]


def _configure_slots(dict config, dict hyper, dict losses, Py_ssize_t work_align,
                     Py_ssize_t n_columns):
    """Slot index by name of the config and hyper arrays, the loss codes by name (the
    contract's TRAIN_LOSSES), the workspace alignment and the layout table's width."""
    global _LOSS, _WEIGHTS_END, _OPTIMIZER, _STEP, _NESTEROV, _DECOUPLED
    global _LABEL_SMOOTHING, _L2, _LR, _MOMENTUM, _WEIGHT_DECAY, _BETA1, _BETA2, _EPS
    global _SQUARED_ERROR, _SIGMOID_CE, _WORK_ALIGN, _NCOL
    _SQUARED_ERROR = losses["squared_error"]
    _SIGMOID_CE = losses["sigmoid_cross_entropy"]
    _WORK_ALIGN, _NCOL = work_align, n_columns
    _LOSS, _WEIGHTS_END = config["loss"], config["weights_end"]
    _OPTIMIZER, _STEP = config["optimizer"], config["step"]
    _NESTEROV, _DECOUPLED = config["nesterov"], config["decoupled"]
    _LABEL_SMOOTHING, _L2, _LR = hyper["label_smoothing"], hyper["l2"], hyper["lr"]
    _MOMENTUM, _WEIGHT_DECAY = hyper["momentum"], hyper["weight_decay"]
    _BETA1, _BETA2, _EPS = hyper["beta1"], hyper["beta2"], hyper["eps"]


def forward(const floating[:, ::1] x,             # IN  (n, in_0)
            const floating[::1] params,           # IN  flat weights and biases
            const int64_t[:, ::1] layout,         # IN  (L, 6) TRAIN_LAYOUT_COLUMNS
            const double[::1] alphas,             # IN  (L,) leaky_relu slopes
            floating[::1] work,                   # OUT the hidden layers' outputs
            floating[:, ::1] out):                # OUT (n, out_last)
    """Each layer's linear_forward in turn: layer i < L - 1 into work (the
    contract's forward_workspace_layout), the last into out."""
    cdef Py_ssize_t n = x.shape[0], L = layout.shape[0], i, off = 0
    cdef const int64_t* row
    cdef const floating* a = &x[0, 0]
    cdef floating* y
    cdef int pin
    if n == 0 or L == 0:
        return
    with nogil:
        pin = _blas_single_begin()  # once for the pass, as loss_grad
        for i in range(L):
            row = &layout[i, 0]
            y = &out[0, 0] if i == L - 1 else &work[0] + off
            _linear_forward_core(a, &params[0] + row[0],
                                 &params[0] + row[1] if row[1] >= 0 else NULL, y,
                                 NULL, n, row[2], row[3], <int>row[4],
                                 <floating>alphas[i])
            a = y
            off += _round_up(n * row[3])
        _blas_single_end(pin)


def loss_grad(const floating[:, ::1] x,           # IN  (n, in_0)
              const Py_ssize_t[::1] labels,       # IN  (n,) in [0, out_last), or empty
              const floating[:, ::1] targets,     # IN  (n, out_last), or empty
              const floating[::1] sample_weight,  # IN  (n,) or empty
              const floating[::1] params,         # IN  flat weights and biases
              floating[::1] grads,                # OUT flat gradients
              const int64_t[:, ::1] layout,       # IN  (L, 6) TRAIN_LAYOUT_COLUMNS
              const double[::1] alphas,           # IN  (L,) leaky_relu slopes
              floating[::1] work,                 # OUT carved workspace
              const int64_t[::1] config,          # IN  CONFIG_SLOTS
              const double[::1] hyper,            # IN  HYPER_SLOTS
              floating[:, ::1] input_grad):       # OUT (n, in_0) or empty
    """Forward, the loss (+ (l2/2)||W||^2) and backward; (loss, n_correct)."""
    cdef Py_ssize_t n = x.shape[0], L = layout.shape[0], correct = 0
    cdef Py_ssize_t weights_end = config[_WEIGHTS_END]
    cdef double l2 = hyper[_L2]
    cdef const floating* swp = NULL
    cdef const Py_ssize_t* lp = NULL
    cdef const floating* tp = NULL
    cdef floating* dxp = NULL
    cdef _Scratch s
    cdef double loss
    cdef int pin
    if n == 0 or L == 0:
        return float("nan"), 0
    if sample_weight.shape[0]:
        swp = &sample_weight[0]
    if labels.shape[0]:
        lp = &labels[0]
    if targets.shape[0]:
        tp = &targets[0, 0]
    if input_grad.shape[0]:
        dxp = &input_grad[0, 0]
    _scratch_alloc(&s, L, n, weights_end)
    with nogil:
        # BLAS to one thread once for the whole pass (each GEMM would switch it back
        # and forth); the GEMM blocks are single-threaded calls either way
        pin = _blas_single_begin()
        loss = _loss_grad_core(&x[0, 0], lp, tp, <int>config[_LOSS], swp,
                               &params[0], &grads[0],
                               &layout[0, 0], L, &alphas[0], &work[0], n,
                               hyper[_LABEL_SMOOTHING], l2, dxp, s.offs, s.rows,
                               &correct)
        _blas_single_end(pin)
        # the L2 term's sum of squares in the chunks train_step's update reads it in
        if l2 != 0 and weights_end > 0:
            loss += 0.5 * l2 * _sq_norm_core(&params[0], weights_end, s.partials)
    _scratch_free(&s)
    return loss, correct


def train_step(const floating[:, ::1] x,          # IN  (n, in_0)
               const Py_ssize_t[::1] labels,      # IN  (n,) in [0, out_last), or empty
               const floating[:, ::1] targets,    # IN  (n, out_last), or empty
               const floating[::1] sample_weight,  # IN  (n,) or empty
               floating[::1] params,              # IN/OUT flat weights and biases
               floating[::1] grads,               # OUT    flat gradients
               const int64_t[:, ::1] layout,      # IN  (L, 6) TRAIN_LAYOUT_COLUMNS
               const double[::1] alphas,          # IN  (L,) leaky_relu slopes
               floating[::1] work,                # OUT    carved workspace
               const int64_t[::1] config,         # IN  CONFIG_SLOTS
               const double[::1] hyper,           # IN  HYPER_SLOTS
               floating[::1] velocity,            # IN/OUT SGD momentum, or empty
               floating[::1] m,                   # IN/OUT Adam first moment, or empty
               floating[::1] v):                  # IN/OUT Adam second moment, or empty
    """Forward, the loss, backward and the optimizer update; (loss, n_correct)."""
    cdef Py_ssize_t n = x.shape[0], L = layout.shape[0], correct = 0
    cdef const floating* swp = NULL
    cdef const Py_ssize_t* lp = NULL
    cdef const floating* tp = NULL
    cdef floating* sa = NULL
    cdef floating* sb = NULL
    cdef _Scratch s
    cdef double loss
    cdef int pin
    cdef _Update u
    if n == 0 or L == 0:
        return float("nan"), 0
    if sample_weight.shape[0]:
        swp = &sample_weight[0]
    if labels.shape[0]:
        lp = &labels[0]
    if targets.shape[0]:
        tp = &targets[0, 0]
    _update_settings(&u, config, hyper)
    _state_pointers(u.optimizer, velocity, m, v, &sa, &sb)
    _scratch_alloc(&s, L, n, config[_WEIGHTS_END])
    with nogil:
        pin = _blas_single_begin()
        loss = _train_step_core(&x[0, 0], lp, tp, swp, &params[0], &grads[0],
                                &layout[0, 0], L, &alphas[0], &work[0], n,
                                params.shape[0], &config[0], &hyper[0], sa, sb, &u,
                                &s, &correct)
        _blas_single_end(pin)
    _scratch_free(&s)
    return loss, correct


cdef void _state_pointers(int optimizer, floating[::1] velocity, floating[::1] m,
                          floating[::1] v, floating** sa, floating** sb) noexcept:
    """The update's state buffers: SGD's velocity, or Adam's m and v (NULL: none)."""
    if optimizer == 0:
        if velocity.shape[0]:
            sa[0] = &velocity[0]
    else:
        if m.shape[0]:
            sa[0] = &m[0]
        if v.shape[0]:
            sb[0] = &v[0]


def train_steps(const floating[:, ::1] X,          # IN  (N_X, in_0)
                const Py_ssize_t[::1] x_rows,      # IN  (N,) X's row per training row, or empty
                const Py_ssize_t[::1] rows,        # IN  (k * bs,) training rows per step
                const Py_ssize_t[::1] labels,      # IN  (N,) or empty
                const floating[:, ::1] targets,    # IN  (N, out_last), or empty
                const floating[::1] sample_weight,  # IN  (N,) or empty
                floating[:, ::1] batch_x,          # OUT (bs, in_0)
                Py_ssize_t[::1] batch_labels,      # OUT (bs,) or empty
                floating[:, ::1] batch_targets,    # OUT (bs, out_last), or empty
                floating[::1] batch_weight,        # OUT (bs,) or empty
                floating[::1] params,              # IN/OUT as train_step
                floating[::1] grads,
                const int64_t[:, ::1] layout,
                const double[::1] alphas,
                floating[::1] work,
                const int64_t[::1] config,
                const double[::1] hyper,
                floating[::1] velocity,
                floating[::1] m,
                floating[::1] v,
                const double[::1] step_eps,        # IN  (k,) Adam's eps per step, or empty
                double[::1] losses,                # OUT (k,) each step's loss
                int64_t[::1] correct):             # OUT (k,) each step's n_correct
    """train_step on each batch of ``rows`` in turn, gathered here (step s is
    optimizer step config[STEP] + s)."""
    cdef Py_ssize_t bs = batch_x.shape[0], k0 = X.shape[1], L = layout.shape[0]
    cdef Py_ssize_t n_out = batch_targets.shape[1] if batch_targets.shape[0] else 0
    cdef Py_ssize_t k = losses.shape[0], st, r, i, hits
    cdef const Py_ssize_t* idx
    cdef const Py_ssize_t* xr = &x_rows[0] if x_rows.shape[0] else NULL
    cdef const Py_ssize_t* lp = &batch_labels[0] if labels.shape[0] else NULL
    cdef const floating* tp = &batch_targets[0, 0] if targets.shape[0] else NULL
    cdef const floating* swp = &batch_weight[0] if sample_weight.shape[0] else NULL
    cdef floating* sa = NULL
    cdef floating* sb = NULL
    cdef _Scratch s
    cdef int pin
    cdef _Update u
    if bs == 0 or L == 0:
        return
    _update_settings(&u, config, hyper)
    _state_pointers(u.optimizer, velocity, m, v, &sa, &sb)
    _scratch_alloc(&s, L, bs, config[_WEIGHTS_END])
    with nogil:
        pin = _blas_single_begin()
        for st in range(k):
            idx = &rows[st * bs]
            for r in range(bs):
                i = idx[r]
                memcpy(&batch_x[r, 0], &X[xr[i] if xr != NULL else i, 0],
                       k0 * sizeof(floating))
                if lp != NULL:
                    batch_labels[r] = labels[i]
                if tp != NULL:
                    memcpy(&batch_targets[r, 0], &targets[i, 0],
                           n_out * sizeof(floating))
                if swp != NULL:
                    batch_weight[r] = sample_weight[i]
            u.step = <long>config[_STEP] + st
            if step_eps.shape[0]:
                u.eps = step_eps[st]
            hits = 0
            losses[st] = _train_step_core(&batch_x[0, 0], lp, tp, swp, &params[0],
                                          &grads[0], &layout[0, 0], L, &alphas[0],
                                          &work[0], bs, params.shape[0], &config[0],
                                          &hyper[0], sa, sb, &u, &s, &hits)
            correct[st] = hits
        _blas_single_end(pin)
    _scratch_free(&s)
