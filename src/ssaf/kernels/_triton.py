"""Triton kernels of fused sparse attention: scores, exact threshold, probabilities, dropout and P.V, with
the backward pass. Imported only when triton is (``ssaf.kernels`` decides); launched as ``plan`` says.

A forward program owns BLOCK_M queries of one (batch, head) and their *whole* key row (L_PAD <= 512 keys
on chip): the scores are ``tl.dot``s over slices of BLOCK_D of the head dim (a slice of K passes through
registers, not the whole (D, L) tile, which spilled at 512 keys and D = 128), the threshold is found on
the row in registers with the same exactness tests as ``ssaf.transforms`` (Michelot's unchanged support
for sparsemax / sparsegen-lin, the closed-form 1.5-entmax root on the exact support, alpha-entmax's
bracketed Newton to a row-sum tolerance), never a fixed number of steps; P.V is written a head-dim slice
at a time. Only O(L) per row leaves the chip: the row max, the threshold and the normaliser, from which the
backward recomputes the probabilities (as FlashAttention recomputes softmax).

Backward, as FlashAttention-2: a query-block kernel computes dQ and each row's statistic
delta = sum(g w) / sum(w) of the Jacobian (w = p^(2 - alpha): 1 on the support for sparsemax), and the
gradient of the transform's parameter per row, in two passes over blocks of BLOCK_N keys (row sums, then
dQ), so its registers do not grow with the row; a key-block kernel loops over query blocks for dK, dV.
Dropout keeps an entry with probability 1 - p_drop (Philox ``tl.rand`` keyed by the entry's index), the
backward regenerates the same mask.

Transforms, the constexpr TRANSFORM: SPARSEMAX = sparsemax / sparsegen-lin (PARAM: the scale 1 / (1 - lam)),
ENTMAX15 = 1.5-entmax, BISECT = alpha-entmax (PARAM: alpha). Scores are ``x = a * (s - max(s))`` with
a = scale, 1/2 or alpha - 1.

Every (rows, cols) tile of q, k, v, dO and the outputs is addressed through ``_ptrs`` (loads through
``_tile``): block pointers cannot take the key-padding mask, which is per key, not a bound.
"""

from __future__ import annotations

import triton
import triton.language as tl

SPARSEMAX, ENTMAX15, BISECT = 0, 1, 2  # the TRANSFORM codes; plain ints, as the launcher passes them
# The same codes for the kernels: a @triton.jit function may read a global only when it is a constexpr.
_SPARSEMAX, _ENTMAX15, _BISECT = tl.constexpr(SPARSEMAX), tl.constexpr(ENTMAX15), tl.constexpr(BISECT)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """a @ b, in exact fp32 when IEEE (not TF32: fp32 scores are compared with the torch path exactly)."""
    if IEEE:  # noqa: SIM108  (a constexpr branch: one of the two is compiled)
        c = tl.dot(a, b, input_precision="ieee")
    else:
        c = tl.dot(a, b)
    return c


@triton.jit
def _coefficient(param, TRANSFORM: tl.constexpr):
    """a in x = a * (s - max s)."""
    if TRANSFORM == _SPARSEMAX:
        a = param
    elif TRANSFORM == _ENTMAX15:
        a = 0.5 + param * 0.0
    else:
        a = param - 1.0
    return a


@triton.jit
def _power(r, e):
    """r ** e for r >= 0 (0 where r == 0)."""
    return tl.where(r > 0, tl.exp2(tl.log2(tl.maximum(r, 1e-30)) * e), 0.0)


@triton.jit
def _probabilities(x, tau, z, am1, TRANSFORM: tl.constexpr):
    """p = h(x - tau) / z once the threshold is known (h: r, r^2, r^(1/(alpha-1)))."""
    r = tl.maximum(x - tau[:, None], 0.0)
    if TRANSFORM == _SPARSEMAX:
        p = r
    elif TRANSFORM == _ENTMAX15:
        p = r * r
    else:
        p = _power(r, 1.0 / am1)
    return p / z[:, None]


@triton.jit
def _weights(p, am1, TRANSFORM: tl.constexpr):
    """w = p^(2 - alpha): the Jacobian's weights (1 on the support for sparsemax)."""
    if TRANSFORM == _SPARSEMAX:
        w = tl.where(p > 0, 1.0, 0.0)
    elif TRANSFORM == _ENTMAX15:
        w = tl.sqrt(p)
    else:
        w = _power(p, 1.0 - am1)
    return w


@triton.jit
def _sparsemax_threshold(x, n_iter, BLOCK_M: tl.constexpr, L_PAD: tl.constexpr):
    """Sparsemax's threshold of each row of x (BLOCK_M, L_PAD) (row max 0, -inf = masked): the tau with
    sum(max(x - tau, 0)) = 1, by Michelot's iteration tau <- (sum_{x > tau} x - 1) / |{x > tau}| from
    tau = -1 (below it, as p_max <= 1). tau is a lower bound that never decreases and is exact once the
    support stops changing; n_iter only bounds the loop against rounding. A fully masked row keeps -1."""
    tau = tl.full((BLOCK_M,), -1.0, tl.float32)
    k_prev = tl.full((BLOCK_M,), L_PAD + 1.0, tl.float32)
    changed = 1
    it = 0
    while (changed > 0) & (it < n_iter):
        on = x > tau[:, None]
        k = tl.sum(tl.where(on, 1.0, 0.0), 1)
        total = tl.sum(tl.where(on, x, 0.0), 1)
        tau = tl.maximum(tau, (total - 1.0) / tl.maximum(k, 1.0))
        changed = tl.sum(tl.where(k != k_prev, 1, 0))
        k_prev = k
        it += 1
    return tau


@triton.jit
def _entmax15_threshold(x, n_iter, BLOCK_M: tl.constexpr):
    """1.5-entmax's threshold of each row of x (BLOCK_M, L_PAD) (row max 0, -inf = masked): the tau with
    sum(max(x - tau, 0)^2) = 1. Newton from below (tau = -1) finds the support: each pass tests the
    closed-form root on the current support for exactness and stops there. The answer is then that root
    from centred statistics, tau = mean_S(x) - sqrt(1/k - var_S(x)); a fully masked row gets -1."""
    tiny = 1e-30
    tau = tl.full((BLOCK_M,), -1.0, tl.float32)
    unsettled = 1
    it = 0
    k = tl.zeros((BLOCK_M,), tl.float32)
    supp = x > tau[:, None]
    while (unsettled > 0) & (it < n_iter):
        r = tl.maximum(x - tau[:, None], 0.0)
        supp = r > 0
        k = tl.sum(tl.where(supp, 1.0, 0.0), 1)
        r1 = tl.sum(r, 1)
        r2 = tl.sum(r * r, 1)
        disc = r1 * r1 - k * (r2 - 1.0)
        u = tl.maximum((r2 - 1.0) / tl.maximum(r1 + tl.sqrt(tl.maximum(disc, 0.0)), tiny), 0.0)
        below = tl.sum(tl.where(supp & (r < u[:, None]), 1.0, 0.0), 1)
        exact = (disc >= 0) & (below == 0)
        step = tl.where(exact, u, tl.maximum((r2 - 1.0) / tl.maximum(2.0 * r1, tiny), 0.0))
        settled = exact | (tau + step <= tau)
        tau = tau + step
        unsettled = tl.sum(tl.where(settled, 0, 1))
        it += 1
    # centred statistics: sum(x^2) - k mean^2 would cancel catastrophically on a near-flat support
    kc = tl.maximum(k, 1.0)
    mean = tl.sum(tl.where(supp, x, 0.0), 1) / kc
    dev = tl.where(supp, x - mean[:, None], 0.0)
    var = tl.sum(dev * dev, 1) / kc
    tau = mean - tl.sqrt(tl.maximum(1.0 / kc - var, 0.0))
    return tl.where(k > 0, tau, -1.0)


@triton.jit
def _bisect_threshold(x, am1, tol, n_iter, BLOCK_M: tl.constexpr):
    """alpha-entmax's threshold of each row of x (BLOCK_M, L_PAD) (row max 0, -inf = masked), am1 = alpha - 1:
    bracketed Newton on f(tau) = sum(max(x - tau, 0)^(1/am1)) - 1 from tau = -1, inside [-1, -(1/n)^am1]
    (f >= 0 at the left end, <= 0 at the right), bisecting when a Newton step leaves the bracket, until
    |f| <= tol. Returns (tau, z, err): z = sum p before normalising (1 for a fully masked row) and
    err = |z - 1|, which the launcher checks against tol."""
    tiny = 1e-30
    tau = tl.full((BLOCK_M,), -1.0, tl.float32)
    beta = 1.0 / am1
    count = tl.sum(tl.where(x > float("-inf"), 1.0, 0.0), 1)
    empty = count == 0
    lo = tl.full((BLOCK_M,), -1.0, tl.float32)
    hi = -_power(1.0 / tl.maximum(count, 1.0), am1)
    f = tl.zeros((BLOCK_M,), tl.float32)
    unsettled = 1
    it = 0
    while (unsettled > 0) & (it < n_iter):
        r = tl.maximum(x - tau[:, None], 0.0)
        pw = _power(r, beta - 1.0)
        f = tl.sum(pw * r, 1) - 1.0
        done = (tl.abs(f) <= tol) | empty
        lo = tl.where(f > 0, tau, lo)
        hi = tl.where(f < 0, tau, hi)
        newton = tau + f / tl.maximum(tl.sum(beta * pw, 1), tiny)
        new = tl.where((newton > lo) & (newton < hi), newton, (lo + hi) * 0.5)
        settled = done | (new == tau)
        tau = tl.where(done, tau, new)
        unsettled = tl.sum(tl.where(settled, 0, 1))
        it += 1
    r = tl.maximum(x - tau[:, None], 0.0)
    f = tl.sum(_power(r, beta), 1) - 1.0
    z = tl.where(empty, 1.0, tl.maximum(f + 1.0, tiny))
    err = tl.where(empty, 0.0, tl.abs(f))
    return tau, z, err


@triton.jit
def _threshold(x, am1, tol, n_iter, TRANSFORM: tl.constexpr, BLOCK_M: tl.constexpr, L_PAD: tl.constexpr):
    """The exact threshold of each row of x (BLOCK_M, L_PAD) (row max 0, -inf = masked) for TRANSFORM:
    (tau, z, err), with p = h(x - tau) / z. Sparsemax and 1.5-entmax are exact (z = 1, err = 0);
    alpha-entmax stops at a row-sum error err <= tol (n_iter bounds every search)."""
    if TRANSFORM == _SPARSEMAX:
        tau = _sparsemax_threshold(x, n_iter, BLOCK_M, L_PAD)
        z = tl.full((BLOCK_M,), 1.0, tl.float32)
        err = tl.zeros((BLOCK_M,), tl.float32)
    elif TRANSFORM == _ENTMAX15:
        tau = _entmax15_threshold(x, n_iter, BLOCK_M)
        z = tl.full((BLOCK_M,), 1.0, tl.float32)
        err = tl.zeros((BLOCK_M,), tl.float32)
    else:
        tau, z, err = _bisect_threshold(x, am1, tol, n_iter, BLOCK_M)
    return tau, z, err


@triton.jit
def _ptrs(PTR, offs_r, stride_r, ok_r, offs_c, stride_c, ok_c):
    """The pointers of the (rows, cols) tile of the matrix at PTR (rows offs_r, cols offs_c, in elements of the
    given strides) and its mask ok_r x ok_c: every tile of q, k, v, dO and the outputs is addressed here.

    Callers pass the origin as ``X + b * sxb + h * sxh``, the offsets added to the pointer one at a time:
    summed as integers first (``X + (b * sxb + h * sxh)``) they cost ``_bwd_keys`` up to 9 more registers on
    sm_80 (to the 255 limit), measured with ``scripts/kernel_resources.py``."""
    return PTR + offs_r[:, None] * stride_r + offs_c[None, :] * stride_c, ok_r[:, None] & ok_c[None, :]


@triton.jit
def _tile(PTR, offs_r, stride_r, ok_r, offs_c, stride_c, ok_c):
    """The (rows, cols) tile of the matrix at PTR, 0 outside ok_r x ok_c."""
    ptrs, ok = _ptrs(PTR, offs_r, stride_r, ok_r, offs_c, stride_c, ok_c)
    return tl.load(ptrs, mask=ok, other=0.0)


@triton.jit
def _scores(Q, qbase, sqm, sqd, offs_m, row_ok, K, kbase, skn, skd, offs_n, valid_n, softmax_scale, D,
            IEEE: tl.constexpr, BLOCK_M: tl.constexpr, N: tl.constexpr, D_PAD: tl.constexpr,
            BLOCK_D: tl.constexpr):  # fmt: skip
    """s = q K^T * scale for N keys offs_n (BLOCK_M, N); invalid keys -inf. The head dim is read in
    slices of BLOCK_D: a (BLOCK_D, L_PAD) slice of K^T, not all of it, is in registers at once."""
    s = tl.zeros((BLOCK_M, N), tl.float32)
    for c in tl.static_range(0, D_PAD, BLOCK_D):
        offs_d = c + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        q = _tile(Q + qbase, offs_m, sqm, row_ok, offs_d, sqd, d_ok)  # (BLOCK_M, BLOCK_D)
        kt = _tile(K + kbase, offs_d, skd, d_ok, offs_n, skn, valid_n)  # (BLOCK_D, N)
        s += _dot(q, kt, IEEE)
    return tl.where(valid_n[None, :], s * softmax_scale, float("-inf"))


@triton.jit
def _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM: tl.constexpr):
    valid = offs_n < LK
    if HAS_KPM:
        valid = valid & (tl.load(KPM + b * skpm_b + offs_n * skpm_n, mask=offs_n < LK, other=0) != 0)
    return valid


@triton.jit
def _keep(seed, bh, offs_m, offs_n, LQ, LK, dropout_p):
    """The dropout mask of a tile (entries kept with probability 1 - dropout_p)."""
    idx = (bh * LQ + offs_m[:, None]) * LK + offs_n[None, :]
    return tl.rand(seed, idx) >= dropout_p


@triton.jit
def _row_stats(M, TAU, Z, row, row_ok):
    """What the forward stored per row (max, threshold, normaliser), for the backward to rebuild P."""
    m = tl.load(M + row, mask=row_ok, other=0.0)
    tau = tl.load(TAU + row, mask=row_ok, other=0.0)
    z = tl.load(Z + row, mask=row_ok, other=1.0)
    return m, tau, z


@triton.jit
def _fwd(
    Q, K, V, Out, KPM, PARAM, M, TAU, Z, ERR,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skpm_b, skpm_n,
    H, LQ, LK, D, softmax_scale, dropout_p, seed, tol, n_iter,
    TRANSFORM: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, L_PAD: tl.constexpr, D_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, L_PAD)
    row_ok = offs_m < LQ
    valid_n = _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM)
    s = _scores(Q, b * sqb + h * sqh, sqm, sqd, offs_m, row_ok, K, b * skb + h * skh, skn, skd, offs_n, valid_n,
                softmax_scale, D, IEEE, BLOCK_M, L_PAD, D_PAD, BLOCK_D)  # fmt: skip
    m = tl.max(s, 1)
    bad = (m != m) | (m == float("inf"))  # a NaN or +inf score: the row is NaN (ssaf.transforms' rule)
    m_safe = tl.where((m == float("-inf")) | bad, 0.0, m)  # a fully masked row stays -inf: all zeros
    param = tl.load(PARAM + h)
    a = _coefficient(param, TRANSFORM)
    x = tl.where(bad[:, None], float("-inf"), (s - m_safe[:, None]) * a)
    tau, z, err = _threshold(x, a, tol, n_iter, TRANSFORM, BLOCK_M, L_PAD)
    p = _probabilities(x, tau, z, a, TRANSFORM)
    p = tl.where(bad[:, None], float("nan"), p)
    if DROPOUT:
        p = tl.where(_keep(seed, bh, offs_m, offs_n, LQ, LK, dropout_p), p / (1.0 - dropout_p), 0.0)
    p = p.to(V.dtype.element_ty)
    for c in tl.static_range(0, D_PAD, BLOCK_D):  # out = P V, a slice of the head dim at a time
        offs_d = c + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        v = _tile(V + b * svb + h * svh, offs_n, svn, valid_n, offs_d, svd, d_ok)  # (L_PAD, BLOCK_D)
        out = _dot(p, v, IEEE)
        out_ptrs, out_ok = _ptrs(Out + b * sob + h * soh, offs_m, som, row_ok, offs_d, sod, d_ok)
        tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=out_ok)
    row = bh * LQ + offs_m
    tl.store(M + row, tl.where(bad, float("nan"), m_safe), mask=row_ok)
    tl.store(TAU + row, tau, mask=row_ok)
    tl.store(Z + row, z, mask=row_ok)
    tl.store(ERR + row, err, mask=row_ok)


@triton.jit
def _row_grad_tile(Q, K, V, DO, KPM, qbase, kbase, vbase, obase, sqm, sqd, skn, skd, svn, svd, som, sod,
                   b, skpm_b, skpm_n, bh, offs_m, row_ok, offs_n, m0, bad, tau, z, a, LQ, LK, D, softmax_scale,
                   dropout_p, seed, TRANSFORM: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr,
                   IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
                   BLOCK_D: tl.constexpr):  # fmt: skip
    """For keys offs_n of a query block: p (recomputed from the stored row statistics), g = dL/dP (through
    the dropout mask) and the Jacobian's weights w, each (BLOCK_M, BLOCK_N), with the keys' validity."""
    valid_n = _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM)
    s = _scores(Q, qbase, sqm, sqd, offs_m, row_ok, K, kbase, skn, skd, offs_n, valid_n, softmax_scale, D, IEEE,
                BLOCK_M, BLOCK_N, D_PAD, BLOCK_D)  # fmt: skip
    x = tl.where(bad[:, None], float("-inf"), (s - m0[:, None]) * a)
    p = _probabilities(x, tau, z, a, TRANSFORM)
    g = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)  # dL/dP_dropped = dO V^T, a slice of the head dim at a time
    for c in tl.static_range(0, D_PAD, BLOCK_D):
        offs_d = c + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        do = _tile(DO + obase, offs_m, som, row_ok, offs_d, sod, d_ok)  # (BLOCK_M, BLOCK_D)
        vt = _tile(V + vbase, offs_d, svd, d_ok, offs_n, svn, valid_n)  # (BLOCK_D, BLOCK_N)
        g += _dot(do, vt, IEEE)
    if DROPOUT:
        g = tl.where(_keep(seed, bh, offs_m, offs_n, LQ, LK, dropout_p), g / (1.0 - dropout_p), 0.0)
    return p, g, _weights(p, a, TRANSFORM), valid_n


@triton.jit
def _bwd_rows(
    Q, K, V, DO, DQ, KPM, PARAM, M, TAU, Z, DELTA, DPARAM,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skpm_b, skpm_n,
    H, LQ, LK, D, softmax_scale, dropout_p, seed,
    TRANSFORM: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per query block: dQ, the Jacobian's row statistic delta and d(parameter) per row, in two passes over
    blocks of BLOCK_N keys, so that registers hold (BLOCK_M, BLOCK_N) tiles however long the row (a whole
    row of 512 keys spilled): the first sums what delta and d(parameter) need, the second forms
    dS = w (g - delta) and accumulates dQ = dS K. p, g and w are recomputed in each pass.

    With gx = w (g - delta): sparsemax's d(scale) = sum(gx p) / a = (sum(g p) - delta sum(p)) / a (w = 1 on
    the support); alpha-entmax's d(alpha) = sum(g dp/dalpha) = beta^2 (sum(g p) - delta)
    - beta (sum(g p log p) - delta sum(p log p)), beta = 1 / (alpha - 1)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < LQ
    row = bh * LQ + offs_m
    m, tau, z = _row_stats(M, TAU, Z, row, row_ok)
    a = _coefficient(tl.load(PARAM + h), TRANSFORM)
    bad = m != m
    m0 = tl.where(bad, 0.0, m)
    qbase, kbase, vbase, obase = b * sqb + h * sqh, b * skb + h * skh, b * svb + h * svh, b * sob + h * soh
    sw = tl.zeros((BLOCK_M,), tl.float32)  # sum(w)
    gw = tl.zeros((BLOCK_M,), tl.float32)  # sum(g w)
    gp = tl.zeros((BLOCK_M,), tl.float32)  # sum(g p)
    ps = tl.zeros((BLOCK_M,), tl.float32)  # sum(p) (sparsemax) or sum(p log p) (alpha-entmax)
    gpl = tl.zeros((BLOCK_M,), tl.float32)  # sum(g p log p) (alpha-entmax)
    start_n = 0
    while start_n < LK:  # a while loop: Triton's interpreter cannot range() over a runtime bound
        offs_n = start_n + tl.arange(0, BLOCK_N)
        p, g, w, _ = _row_grad_tile(
            Q, K, V, DO, KPM, qbase, kbase, vbase, obase, sqm, sqd, skn, skd, svn, svd, som, sod, b, skpm_b, skpm_n,
            bh, offs_m, row_ok, offs_n, m0, bad, tau, z, a, LQ, LK, D, softmax_scale, dropout_p, seed,
            TRANSFORM, HAS_KPM, DROPOUT, IEEE, BLOCK_M, BLOCK_N, D_PAD, BLOCK_D,
        )  # fmt: skip
        sw += tl.sum(w, 1)
        gw += tl.sum(g * w, 1)
        gp += tl.sum(g * p, 1)
        if TRANSFORM == _SPARSEMAX:
            ps += tl.sum(p, 1)
        if TRANSFORM == _BISECT:
            plogp = tl.where(p > 0, p * tl.log(tl.maximum(p, 1e-30)), 0.0)
            ps += tl.sum(plogp, 1)
            gpl += tl.sum(g * plogp, 1)
        start_n += BLOCK_N
    delta = gw / tl.maximum(sw, 1e-30)
    if TRANSFORM == _SPARSEMAX:
        dparam = (gp - delta * ps) / a
    elif TRANSFORM == _ENTMAX15:
        dparam = tl.zeros((BLOCK_M,), tl.float32)
    else:
        beta = 1.0 / a
        dparam = beta * beta * (gp - delta) - beta * (gpl - delta * ps)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < D
    dq = tl.zeros((BLOCK_M, D_PAD), tl.float32)
    start_n = 0
    while start_n < LK:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        p, g, w, valid_n = _row_grad_tile(
            Q, K, V, DO, KPM, qbase, kbase, vbase, obase, sqm, sqd, skn, skd, svn, svd, som, sod, b, skpm_b, skpm_n,
            bh, offs_m, row_ok, offs_n, m0, bad, tau, z, a, LQ, LK, D, softmax_scale, dropout_p, seed,
            TRANSFORM, HAS_KPM, DROPOUT, IEEE, BLOCK_M, BLOCK_N, D_PAD, BLOCK_D,
        )  # fmt: skip
        ds = w * (g - delta[:, None])  # dL/dx for sparsemax; dL/ds for the entmaxes (x = (alpha - 1) s)
        if TRANSFORM == _SPARSEMAX:
            ds = ds * a
        ds = tl.where(bad[:, None], float("nan"), ds)
        kk = _tile(K + kbase, offs_n, skn, valid_n, offs_d, skd, d_ok)  # (BLOCK_N, D_PAD)
        dq += _dot(ds.to(kk.dtype), kk, IEEE)
        start_n += BLOCK_N
    dq_ptrs, dq_ok = _ptrs(DQ + qbase, offs_m, sqm, row_ok, offs_d, sqd, d_ok)
    tl.store(dq_ptrs, (dq * softmax_scale).to(DQ.dtype.element_ty), mask=dq_ok)
    tl.store(DELTA + row, tl.where(bad, float("nan"), delta), mask=row_ok)
    tl.store(DPARAM + row, tl.where(bad, float("nan"), dparam), mask=row_ok)


@triton.jit
def _bwd_keys(
    Q, K, V, DO, DK, DV, KPM, PARAM, M, TAU, Z, DELTA,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skpm_b, skpm_n,
    H, LQ, LK, D, softmax_scale, dropout_p, seed,
    TRANSFORM: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
):  # fmt: skip
    """Per key block: dK and dV, looping over the query blocks (scores and probabilities recomputed)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    valid_n = _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM)
    k = _tile(K + b * skb + h * skh, offs_n, skn, valid_n, offs_d, skd, offs_d < D)  # (BLOCK_N, D_PAD)
    v = _tile(V + b * svb + h * svh, offs_n, svn, valid_n, offs_d, svd, offs_d < D)  # (BLOCK_N, D_PAD)
    param = tl.load(PARAM + h)
    a = _coefficient(param, TRANSFORM)
    dk = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    dv = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    start_m = 0
    while start_m < LQ:  # a while loop: Triton's interpreter cannot range() over a runtime bound
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < LQ
        q = _tile(Q + b * sqb + h * sqh, offs_m, sqm, row_ok, offs_d, sqd, offs_d < D)  # (BLOCK_M, D_PAD)
        do = _tile(DO + b * sob + h * soh, offs_m, som, row_ok, offs_d, sod, offs_d < D)  # (BLOCK_M, D_PAD)
        row = bh * LQ + offs_m
        m, tau, z = _row_stats(M, TAU, Z, row, row_ok)
        delta = tl.load(DELTA + row, mask=row_ok, other=0.0)
        st = _dot(k, tl.trans(q), IEEE) * softmax_scale  # (BLOCK_N, BLOCK_M)
        bad = m != m
        xt = tl.where(valid_n[:, None] & row_ok[None, :], (st - tl.where(bad, 0.0, m)[None, :]) * a, float("-inf"))
        pt = tl.trans(_probabilities(tl.trans(xt), tau, z, a, TRANSFORM))
        pt = tl.where(bad[None, :], float("nan"), pt)
        gt = _dot(v, tl.trans(do), IEEE)  # dL/dP_dropped, transposed
        if DROPOUT:
            keep = tl.trans(_keep(seed, bh, offs_m, offs_n, LQ, LK, dropout_p))  # the forward's mask, transposed
            pdt = tl.where(keep, pt / (1.0 - dropout_p), 0.0)
            gt = tl.where(keep, gt / (1.0 - dropout_p), 0.0)
        else:
            pdt = pt
        wt = _weights(pt, a, TRANSFORM)
        dst = wt * (gt - delta[None, :])
        if TRANSFORM == _SPARSEMAX:
            dst = dst * a
        dv += _dot(pdt.to(do.dtype), do, IEEE)
        dk += _dot(dst.to(q.dtype), q, IEEE)
        start_m += BLOCK_M
    in_range = offs_n < LK  # masked keys get their zero rows written too: every row of dK, dV below LK is ours
    dk_ptrs, dk_ok = _ptrs(DK + b * skb + h * skh, offs_n, skn, in_range, offs_d, skd, offs_d < D)
    tl.store(dk_ptrs, (dk * softmax_scale).to(DK.dtype.element_ty), mask=dk_ok)
    dv_ptrs, dv_ok = _ptrs(DV + b * svb + h * svh, offs_n, svn, in_range, offs_d, svd, offs_d < D)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=dv_ok)
