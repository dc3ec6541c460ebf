"""Triton kernels of fused sparse attention: scores, exact threshold, probabilities, dropout and P.V, with
the backward pass. Imported only when triton is (``ssaf.kernels`` decides).

A forward program owns BLOCK_M queries of one (batch, head) and their *whole* key row (L_PAD <= 512 keys
on chip): the scores are one ``tl.dot``, the threshold is found on the row in registers with the same
exactness tests as ``ssaf.transforms`` (Michelot's unchanged support for sparsemax / sparsegen-lin, the
closed-form 1.5-entmax root on the exact support, alpha-entmax's bracketed Newton to a row-sum tolerance),
never a fixed number of steps. Only O(L) per row leaves the chip: the row max, the threshold and the
normaliser, from which the backward recomputes the probabilities (as FlashAttention recomputes softmax).

Backward, as FlashAttention-2: a query-block kernel (full rows) computes dQ and each row's statistic
delta = sum(g w) / sum(w) of the Jacobian (w = p^(2 - alpha): 1 on the support for sparsemax), and the
gradient of the transform's parameter per row; a key-block kernel loops over query blocks for dK, dV.
Dropout keeps an entry with probability 1 - p_drop (Philox ``tl.rand`` keyed by the entry's index), the
backward regenerates the same mask.

Transforms: 0 = sparsemax / sparsegen-lin (PARAM: the scale 1 / (1 - lam)), 1 = 1.5-entmax, 2 = alpha-entmax
(PARAM: alpha). Scores are ``x = a * (s - max(s))`` with a = scale, 1/2 or alpha - 1.
"""

from __future__ import annotations

import triton
import triton.language as tl

SPARSEMAX, ENTMAX15, BISECT = 0, 1, 2


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
    if TRANSFORM == 0:
        a = param
    elif TRANSFORM == 1:
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
    if TRANSFORM == 0:
        p = r
    elif TRANSFORM == 1:
        p = r * r
    else:
        p = _power(r, 1.0 / am1)
    return p / z[:, None]


@triton.jit
def _weights(p, am1, TRANSFORM: tl.constexpr):
    """w = p^(2 - alpha): the Jacobian's weights (1 on the support for sparsemax)."""
    if TRANSFORM == 0:
        w = tl.where(p > 0, 1.0, 0.0)
    elif TRANSFORM == 1:
        w = tl.sqrt(p)
    else:
        w = _power(p, 1.0 - am1)
    return w


@triton.jit
def _threshold(x, am1, tol, n_iter, TRANSFORM: tl.constexpr, BLOCK_M: tl.constexpr, L_PAD: tl.constexpr):
    """Exact threshold of each row of x (BLOCK_M, L_PAD) (row max 0, -inf = masked): (tau, z, err)."""
    tiny = 1e-30
    tau = tl.full((BLOCK_M,), -1.0, tl.float32)  # p_max <= 1
    z = tl.full((BLOCK_M,), 1.0, tl.float32)
    err = tl.zeros((BLOCK_M,), tl.float32)
    if TRANSFORM == 0:
        # Michelot: tau <- (sum_{x > tau} x - 1) / |{x > tau}|, a lower bound that never decreases; exact
        # once the support does not change (n_iter only bounds the loop against rounding).
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
    elif TRANSFORM == 1:
        # Newton from below; each pass tests the closed-form root on the current support for exactness.
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
        # the support is known: tau = mean_S(x) - sqrt(1/k - var_S(x)), from centred statistics
        kc = tl.maximum(k, 1.0)
        mean = tl.sum(tl.where(supp, x, 0.0), 1) / kc
        dev = tl.where(supp, x - mean[:, None], 0.0)
        var = tl.sum(dev * dev, 1) / kc
        tau = mean - tl.sqrt(tl.maximum(1.0 / kc - var, 0.0))
        tau = tl.where(k > 0, tau, -1.0)
    else:
        # bracketed Newton on f(tau) = sum p(tau) - 1, to |f| <= tol
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
def _scores(q, K, kbase, skn, skd, offs_n, offs_d, valid_n, softmax_scale, D, IEEE: tl.constexpr):
    """s = q K^T * scale over the whole key row (BLOCK_M, L_PAD); invalid keys -inf."""
    kt = tl.load(
        K + kbase + offs_n[None, :] * skn + offs_d[:, None] * skd,
        mask=valid_n[None, :] & (offs_d[:, None] < D),
        other=0.0,
    )  # (D_PAD, L_PAD)
    s = _dot(q, kt, IEEE)
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
    BLOCK_M: tl.constexpr, L_PAD: tl.constexpr, D_PAD: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, L_PAD)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < LQ
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)  # fmt: skip
    valid_n = _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM)
    s = _scores(q, K, b * skb + h * skh, skn, skd, offs_n, offs_d, valid_n, softmax_scale, D, IEEE)
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
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
                mask=valid_n[:, None] & (offs_d[None, :] < D), other=0.0)  # fmt: skip
    out = _dot(p.to(v.dtype), v, IEEE)
    tl.store(Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d[None, :] < D))  # fmt: skip
    row = bh * LQ + offs_m
    tl.store(M + row, tl.where(bad, float("nan"), m_safe), mask=row_ok)
    tl.store(TAU + row, tau, mask=row_ok)
    tl.store(Z + row, z, mask=row_ok)
    tl.store(ERR + row, err, mask=row_ok)


@triton.jit
def _bwd_rows(
    Q, K, V, DO, DQ, KPM, PARAM, M, TAU, Z, DELTA, DPARAM,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, skpm_b, skpm_n,
    H, LQ, LK, D, softmax_scale, dropout_p, seed,
    TRANSFORM: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, L_PAD: tl.constexpr, D_PAD: tl.constexpr,
):  # fmt: skip
    """Per query block, on full rows: dQ, the Jacobian's row statistic delta and d(parameter) per row."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, L_PAD)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < LQ
    dmask = row_ok[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, mask=dmask, other=0.0)
    do = tl.load(DO + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, mask=dmask, other=0.0)
    valid_n = _key_valid(KPM, b, skpm_b, skpm_n, offs_n, LK, HAS_KPM)
    s = _scores(q, K, b * skb + h * skh, skn, skd, offs_n, offs_d, valid_n, softmax_scale, D, IEEE)
    row = bh * LQ + offs_m
    m, tau, z = _row_stats(M, TAU, Z, row, row_ok)
    param = tl.load(PARAM + h)
    a = _coefficient(param, TRANSFORM)
    bad = m != m
    x = tl.where(bad[:, None], float("-inf"), (s - tl.where(bad, 0.0, m)[:, None]) * a)
    p = _probabilities(x, tau, z, a, TRANSFORM)
    vt = tl.load(
        V + b * svb + h * svh + offs_n[None, :] * svn + offs_d[:, None] * svd,
        mask=valid_n[None, :] & (offs_d[:, None] < D),
        other=0.0,
    )  # (D_PAD, L_PAD)
    g = _dot(do, vt, IEEE)  # dL/dP_dropped
    if DROPOUT:
        g = tl.where(_keep(seed, bh, offs_m, offs_n, LQ, LK, dropout_p), g / (1.0 - dropout_p), 0.0)
    w = _weights(p, a, TRANSFORM)
    sw = tl.sum(w, 1)
    gw = tl.sum(g * w, 1)
    delta = gw / tl.maximum(sw, 1e-30)
    gx = w * (g - delta[:, None])  # dL/dx for sparsemax; dL/ds for the entmaxes (x = (alpha - 1) s)
    if TRANSFORM == 0:
        ds = gx * a
        dparam = tl.sum(gx * p, 1) / a  # dL/d(scale): sum_i gx_i s_i, the row max cancelling (gx sums to 0)
    elif TRANSFORM == 1:
        ds = gx
        dparam = tl.zeros((BLOCK_M,), tl.float32)
    else:
        ds = gx
        beta = 1.0 / a
        plogp = tl.where(p > 0, p * tl.log(tl.maximum(p, 1e-30)), 0.0)
        w_hat = w / tl.maximum(sw[:, None], 1e-30)
        dp = beta * beta * (p - w_hat) - beta * (plogp - w_hat * tl.sum(plogp, 1)[:, None])
        dparam = tl.sum(g * dp, 1)
    ds = tl.where(bad[:, None], float("nan"), ds)
    kk = tl.load(
        K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd,
        mask=valid_n[:, None] & (offs_d[None, :] < D),
        other=0.0,
    )  # (L_PAD, D_PAD)
    dq = _dot(ds.to(kk.dtype), kk, IEEE) * softmax_scale
    tl.store(DQ + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, dq.to(DQ.dtype.element_ty),
             mask=dmask)  # fmt: skip
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
    nmask = valid_n[:, None] & (offs_d[None, :] < D)
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd, mask=nmask, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=nmask, other=0.0)
    param = tl.load(PARAM + h)
    a = _coefficient(param, TRANSFORM)
    dk = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    dv = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    start_m = 0
    while start_m < LQ:  # a while loop: Triton's interpreter cannot range() over a runtime bound
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < LQ
        mmask = row_ok[:, None] & (offs_d[None, :] < D)
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, mask=mmask, other=0.0)
        do = tl.load(DO + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, mask=mmask, other=0.0)
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
        if TRANSFORM == 0:
            dst = dst * a
        dv += _dot(pdt.to(do.dtype), do, IEEE)
        dk += _dot(dst.to(q.dtype), q, IEEE)
        start_m += BLOCK_M
    out_mask = (offs_n < LK)[:, None] & (offs_d[None, :] < D)
    tl.store(DK + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd,
             (dk * softmax_scale).to(DK.dtype.element_ty), mask=out_mask)  # fmt: skip
    tl.store(DV + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
             dv.to(DV.dtype.element_ty), mask=out_mask)  # fmt: skip
