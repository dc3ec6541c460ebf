"""alpha-entmax (Peters et al., 2019; Correia et al., 2019): a family from softmax (alpha=1) to sparsemax (alpha=2).

    entmax_alpha(z) = argmax_{p in simplex}  p.z + H_alpha(p),
    H_alpha(p) = sum_i (p_i - p_i^alpha) / (alpha (alpha - 1))        (Tsallis entropy)

whose solution is ``p_i = max((alpha - 1) z_i - tau, 0) ** (1 / (alpha - 1))`` with tau chosen so that
the row sums to 1. Both solvers below start from the lower bound tau_0 = max((alpha-1) z) - 1 (no
probability exceeds 1) and move tau up with Newton steps on the convex, decreasing function
f(tau) = sum_i p_i(tau) - 1; from below, Newton never overshoots, so every iterate is a lower bound and
the support only shrinks. No row is sorted.

* ``entmax15`` (alpha = 1.5) is exact: once the current support is the true one, tau solves a
  quadratic in closed form. Each pass tests the closed-form candidate for exactness (every support
  entry at or above it) and stops only when every row passes.
* ``entmax_bisect`` (any alpha > 1, also a tensor, e.g. one per head, with a gradient) stops when
  every row sums to 1 within ``tol``; a bracket [lo, hi] guards the Newton steps for alpha > 2, where
  f is no longer convex.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssaf.transforms._candidates import find_candidates, gather, row_scale, scatter_rows, segment_sum, select
from ssaf.transforms._common import (
    check_dim,
    check_input,
    check_k,
    check_mask,
    check_param,
    compute_dtype,
    fill_rows,
    from_last,
    no_double_backward,
    row_param,
    sum_to_shape,
    to_last,
    warn_once,
)
from ssaf.transforms._dense import entmax15_probabilities, entmax_probabilities, nan_rows, shifted_scores

# A cap that correct inputs never reach (Newton from below converges quadratically, and a step that
# rounds to zero ends the search); it only bounds the loop against pathological rounding.
_MAX_ITER = 200


def entmax15_solve(x: Tensor, row: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Exact 1.5-entmax of a flat candidate list: solve ``sum_{i in row} max(x_i - tau, 0)^2 = 1``.

    Args:
        x: (C,) halved scores, each row's maximum at 0.
        row: (C,) row id of each entry; n_rows: number of rows.

    Returns:
        ``pos`` (S,), the positions in ``x`` of the support, and ``p = (x[pos] - tau[row[pos]])^2``.
    """
    tiny = torch.finfo(x.dtype).tiny
    tau = torch.full((n_rows,), -1.0, dtype=x.dtype, device=x.device)  # p_max <= 1
    pos = torch.arange(x.numel(), device=x.device)
    for _ in range(_MAX_ITER):
        r = (x - gather(tau, row)).clamp_(min=0)  # r_i = x_i - tau on the current support
        supp = r > 0
        k = segment_sum(supp.to(x.dtype), row, n_rows)
        r1 = segment_sum(r, row, n_rows)
        r2 = segment_sum(r * r, row, n_rows)
        # Candidate: the smaller root u of sum_S (r_i - u)^2 = 1 over the current support S, in the
        # cancellation-free form c / (b + sqrt(b^2 - a c)); u >= 0 because tau is a lower bound.
        disc = r1 * r1 - k * (r2 - 1)
        u = ((r2 - 1) / (r1 + disc.clamp(min=0).sqrt()).clamp(min=tiny)).clamp(min=0)
        # Exact iff no support entry falls below the candidate threshold (then it is a fixed point).
        below = segment_sum((supp & (r < gather(u, row))).to(x.dtype), row, n_rows)
        exact = (disc >= 0) & (below == 0)
        newton = ((r2 - 1) / (2 * r1).clamp(min=tiny)).clamp(min=0)
        # A Newton step lost to rounding means the root is reached to working precision.
        if bool((exact | (tau + newton <= tau)).all()):
            break
        tau = tau + torch.where(exact, u, newton)
        if 2 * int(k.sum()) < x.numel():  # tau only grows: entries out of the support stay out
            x, row, pos = select(supp, x, row, pos)
    # The support is known; solve for tau on it from centred statistics, because r = x - tau_lower
    # loses digits when the lower bound was far from the threshold (flat rows):
    # sum_S (x_i - t)^2 = 1  <=>  t = mean_S(x) - sqrt(1/k - var_S(x)).
    x, row, pos = select(supp, x, row, pos)
    kc = k.clamp(min=1)
    mean = segment_sum(x, row, n_rows) / kc
    var = segment_sum((x - gather(mean, row)).square(), row, n_rows) / kc
    tau = mean - (1 / kc - var).clamp(min=0).sqrt()
    return pos, (x - gather(tau, row)).clamp_(min=0).square_()


class _Entmax15Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None) -> Tensor:
        c = find_candidates(z, mask, 0.5)
        pos, p = entmax15_solve(c.x, c.row, c.n_rows)
        flat, row = gather(c.flat, pos), gather(c.row, pos)
        ctx.save_for_backward(flat, row, p)
        ctx.n_rows, ctx.bad = c.n_rows, c.bad
        return fill_rows(scatter_rows(p, flat, z), c.bad, float("nan"))

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        no_double_backward("entmax15")
        flat, row, p = ctx.saved_tensors
        # dp/dz = diag(w) - w w^T / sum(w) on the support, with w = sqrt(p) = p^(2 - alpha).
        w = p.sqrt()
        gw = gather(g.reshape(-1), flat).to(p.dtype) * w
        q = segment_sum(gw, row, ctx.n_rows) / segment_sum(w, row, ctx.n_rows).clamp(min=torch.finfo(p.dtype).tiny)
        return fill_rows(scatter_rows(gw - gather(q, row) * w, flat, g), ctx.bad, float("nan")), None


def entmax15(X: Tensor, dim: int = -1, k: int | None = None, *, mask: Tensor | None = None) -> Tensor:
    """Exact 1.5-entmax along ``dim``.

    Solves ``argmax_{p in simplex} p.X + H_1.5(p)`` (Tsallis alpha = 1.5); the solution is
    ``p_i = max(X_i / 2 - tau, 0) ** 2``. Sparser than softmax, smoother than sparsemax. Positional
    arguments as in the ``entmax`` package (1.3).

    Args:
        X: scores; fp16/bf16 are solved in fp32 and returned in their own dtype. -inf means "may not
            attend"; a row holding a NaN or +inf comes back NaN.
        dim: the dimension that sums to 1.
        k: accepted for entmax compatibility (its partial-sort size); nothing is sorted here.
        mask: optional boolean tensor broadcastable to ``X``; True = may attend. Masked entries get
            exactly 0; a row with no valid entry returns all zeros.
    """
    check_input("entmax15", X, dim)
    check_k("entmax15", k)
    z = X
    d = check_dim(z, dim)
    check_mask(mask, z)
    zl = to_last(z, d).contiguous()  # type: ignore[union-attr]
    fn = _Entmax15Function if zl.device.type == "cpu" else _DenseEntmax15Function
    return from_last(fn.apply(zl, to_last(mask, d)), d)


class _DenseEntmax15Function(torch.autograd.Function):
    """entmax15 on whole rows (see ``_dense``): the path for accelerators."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None) -> Tensor:
        x, bad = shifted_scores(z, mask, 0.5)
        p = entmax15_probabilities(x, _MAX_ITER)
        ctx.save_for_backward(p, bad)
        return nan_rows(p, bad).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        no_double_backward("entmax15")
        p, bad = ctx.saved_tensors
        w = p.sqrt()  # p^(2 - alpha); 0 off the support
        gw = g.to(p.dtype) * w
        q = gw.sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp(min=torch.finfo(p.dtype).tiny)
        return nan_rows(gw - q * w, bad).to(g.dtype), None


def _pow(r: Tensor, e: Tensor | float) -> Tensor:
    """r ** e for r >= 0 with 0 ** e = 0 for any e (also e <= 0, where it would be inf)."""
    if isinstance(e, float) and e == 1.0:
        return r
    return torch.where(r > 0, r.pow(e), 0.0)


def entmax_solve(
    x: Tensor, row: Tensor, n_rows: int, am1_row: Tensor | float, tol: float, max_iter: int, normalize: bool = True
) -> tuple[Tensor, Tensor]:
    """alpha-entmax of a flat candidate list: ``sum_{i in row} max(x_i - tau, 0) ** (1/(alpha-1)) = 1``.

    Args:
        x: (C,) scores scaled by ``alpha - 1``, each row's maximum at 0.
        row: (C,) row id of each entry; n_rows: number of rows.
        am1_row: ``alpha - 1`` as a float or one value per row (n_rows,).
        tol: the largest row-sum error accepted.
        max_iter: the most search steps (a bound, not a schedule: the search stops at ``tol``).
        normalize: divide each row by its sum (the entmax package's ``ensure_sum_one``).

    Returns:
        p (C,), and the largest row-sum error the search ended with (0-dim), which exceeds ``tol`` only
        where floating point cannot get closer (alpha far above 2, where p is steep at the threshold)
        or ``max_iter`` was too small.
    """
    tiny = torch.finfo(x.dtype).tiny
    am1 = gather(am1_row, row) if isinstance(am1_row, Tensor) else am1_row
    beta = 1.0 / am1
    bm1 = beta - 1.0
    count = segment_sum(torch.ones_like(x), row, n_rows)
    empty = count == 0  # fully masked rows: nothing to solve
    lo = torch.full((n_rows,), -1.0, dtype=x.dtype, device=x.device)  # p_max <= 1
    # At tau = -(1/c)^(alpha-1) each of the c candidates has p <= 1/c: an upper bound.
    hi = -((1.0 / count.clamp(min=1)) ** am1_row)
    tau = lo
    for _ in range(max_iter):
        r = (x - gather(tau, row)).clamp_(min=0)
        pw = _pow(r, bm1)  # d p_i / d r_i = beta * r_i ** (beta - 1)
        p = pw * r
        f = segment_sum(p, row, n_rows) - 1
        done = (f.abs() <= tol) | empty
        if bool(done.all()):
            break
        lo = torch.where(f > 0, tau, lo)
        hi = torch.where(f < 0, tau, hi)
        fprime = segment_sum(beta * pw, row, n_rows)
        newton = tau + f / fprime.clamp(min=tiny)
        # Newton from below never overshoots for alpha <= 2 (f convex); the bracket guards alpha > 2.
        new_tau = torch.where((newton > lo) & (newton < hi), newton, (lo + hi) / 2)
        if bool((done | (new_tau == tau)).all()):
            break
        tau = torch.where(done, tau, new_tau)
    else:  # max_iter steps without a final check: measure the last iterate
        r = (x - gather(tau, row)).clamp_(min=0)
        p = _pow(r, bm1) * r
        f = segment_sum(p, row, n_rows) - 1
    worst = torch.where(empty, 0.0, f.abs()).amax() if n_rows else torch.zeros(())
    return (p / gather((f + 1).clamp(min=tiny), row) if normalize else p), worst


def warn_unconverged(alpha: Tensor | float, worst: Tensor, tol: float) -> None:
    """Say once that alpha-entmax rows were returned with a row-sum error above ``tol``."""
    if float(worst) > tol:
        what = f"{alpha:g}" if isinstance(alpha, float) else f"{float(alpha.min()):g} to {float(alpha.max()):g}"
        warn_once(
            "entmax_bisect: unconverged",
            f"entmax_bisect (alpha = {what}): the threshold search stopped with a row-sum error of "
            f"{float(worst):.1e}, above tol = {tol:g}; the rows were renormalised (ensure_sum_one) but are not "
            "exact. Floating point may get no closer when alpha is near 1 (p = r ** (1 / (alpha - 1)) "
            "magnifies rounding) or far above 2 (p is steep at the threshold); otherwise raise n_iter "
            "or tol. (Shown once per process.)",
        )


class _EntmaxBisectFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, z: Tensor, mask: Tensor | None, alpha: Tensor | float, tol: float, max_iter: int, normalize: bool
    ) -> Tensor:
        c = find_candidates(z, mask, alpha - 1)
        a_row = row_scale(alpha, z)  # (n_rows,) or a float
        p, worst = entmax_solve(c.x, c.row, c.n_rows, a_row - 1, tol, max_iter, normalize)
        warn_unconverged(alpha, worst, tol)
        flat, row, p = select(p > 0, c.flat, c.row, p)
        a = gather(a_row, row) if isinstance(a_row, Tensor) else a_row  # alpha per support entry
        ctx.save_for_backward(flat, row, p, a if isinstance(a, Tensor) else None)
        ctx.alpha = None if isinstance(a, Tensor) else a
        ctx.alpha_shape = alpha.shape if isinstance(alpha, Tensor) else None
        ctx.alpha_dtype = alpha.dtype if isinstance(alpha, Tensor) else None
        ctx.n_rows, ctx.bad = c.n_rows, c.bad
        return fill_rows(scatter_rows(p, flat, z), c.bad, float("nan"))

    @staticmethod
    def backward(ctx, g: Tensor):
        no_double_backward("entmax_bisect")
        flat, row, p, a_t = ctx.saved_tensors
        a = a_t if a_t is not None else ctx.alpha
        n = ctx.n_rows
        tiny = torch.finfo(p.dtype).tiny
        w = p.pow(2 - a)  # p^(2 - alpha) on the support
        wsum = segment_sum(w, row, n).clamp(min=tiny)
        gs = gather(g.reshape(-1), flat).to(p.dtype)
        gw = gs * w
        grad_z = scatter_rows(gw - w * gather(segment_sum(gw, row, n) / wsum, row), flat, g)
        grad_z = fill_rows(grad_z, ctx.bad, float("nan"))
        grad_alpha = None
        if ctx.needs_input_grad[2]:
            # d p_i / d alpha = beta^2 (p_i - w^_i) - beta (p_i log p_i - w^_i sum_j p_j log p_j),
            # w^ = w / sum(w), beta = 1 / (alpha - 1); this includes the scaling of z by alpha - 1.
            beta = 1.0 / (a - 1)
            plogp = p * p.log()
            w_hat = w / gather(wsum, row)
            ent = gather(segment_sum(plogp, row, n), row)
            dp = beta * beta * (p - w_hat) - beta * (plogp - w_hat * ent)
            per_row = fill_rows(segment_sum(gs * dp, row, n).view(-1, 1), ctx.bad, float("nan"))
            grad_alpha = sum_to_shape(per_row.view(*g.shape[:-1], 1), ctx.alpha_shape).to(ctx.alpha_dtype)
        return grad_z, None, grad_alpha, None, None, None


class _DenseEntmaxBisectFunction(torch.autograd.Function):
    """entmax_bisect on whole rows (see ``_dense``): the path for accelerators."""

    @staticmethod
    def forward(
        ctx, z: Tensor, mask: Tensor | None, alpha: Tensor | float, tol: float, max_iter: int, normalize: bool
    ) -> Tensor:
        a = alpha.to(compute_dtype(z.dtype)) if isinstance(alpha, Tensor) else alpha
        x, bad = shifted_scores(z, mask, a - 1)
        p, worst = entmax_probabilities(x, a - 1, tol, max_iter, normalize)
        warn_unconverged(alpha, worst, tol)
        ctx.save_for_backward(p, bad, a if isinstance(a, Tensor) else None)
        ctx.alpha = None if isinstance(a, Tensor) else a
        ctx.alpha_shape = alpha.shape if isinstance(alpha, Tensor) else None
        ctx.alpha_dtype = alpha.dtype if isinstance(alpha, Tensor) else None
        return nan_rows(p, bad).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        no_double_backward("entmax_bisect")
        p, bad, a_t = ctx.saved_tensors
        a = a_t if a_t is not None else ctx.alpha
        tiny = torch.finfo(p.dtype).tiny
        w = _pow(p, 2 - a)  # p^(2 - alpha) on the support, 0 elsewhere
        wsum = w.sum(-1, keepdim=True).clamp(min=tiny)
        gs = g.to(p.dtype)
        gw = gs * w
        grad_z = nan_rows(gw - w * (gw.sum(-1, keepdim=True) / wsum), bad).to(g.dtype)
        grad_alpha = None
        if ctx.needs_input_grad[2]:
            # The formula of _EntmaxBisectFunction.backward, on whole rows (0 log 0 = 0).
            beta = 1.0 / (a - 1)
            plogp = torch.special.xlogy(p, p)
            w_hat = w / wsum
            dp = beta * beta * (p - w_hat) - beta * (plogp - w_hat * plogp.sum(-1, keepdim=True))
            per_row = nan_rows((gs * dp).sum(-1, keepdim=True), bad)
            grad_alpha = sum_to_shape(per_row, ctx.alpha_shape).to(ctx.alpha_dtype)
        return grad_z, None, grad_alpha, None, None, None


def _check_alpha(alpha: Tensor | float) -> None:
    check_param("entmax_bisect", "alpha", alpha)


def entmax_bisect(
    X: Tensor,
    alpha: Tensor | float = 1.5,
    dim: int = -1,
    n_iter: int = 50,
    ensure_sum_one: bool = True,
    *,
    mask: Tensor | None = None,
    tol: float | None = None,
    validate: bool = True,
) -> Tensor:
    """alpha-entmax for any alpha > 1, differentiable in ``X`` and in ``alpha``.

    Solves ``argmax_{p in simplex} p.X + H_alpha(p)`` (Tsallis entropy) along ``dim``; the solution is
    ``p_i = max((alpha - 1) X_i - tau, 0) ** (1 / (alpha - 1))``. Positional arguments as in the
    ``entmax`` package (1.3); the threshold is found by bracketed Newton steps that stop at a row-sum
    tolerance, rather than by ``n_iter`` bisection steps (see module doc).

    Args:
        X: scores; fp16/bf16 are solved in fp32 and returned in their own dtype. -inf means "may not
            attend"; a row holding a NaN or +inf comes back NaN.
        alpha: a float > 1, or a tensor broadcastable to ``X`` with size 1 along ``dim`` (e.g. one
            per head, (H, 1, 1)); a tensor that requires grad receives d loss / d alpha.
        dim: the dimension that sums to 1.
        n_iter: the most search steps (entmax: the exact number of bisections). The search usually
            stops at ``tol`` within 10; if it does not, a warning says so once.
        ensure_sum_one: divide each row by its sum after the search (as entmax does).
        mask: optional boolean tensor; True = may attend. Masked entries get exactly 0; a row with no
            valid entry returns all zeros.
        tol: largest accepted row-sum error of the threshold search (default 1e-6, 1e-12 for fp64).
        validate: check that alpha is finite and > 1 (for a tensor on an accelerator, a host sync);
            ``False`` is for values valid by construction (``LearnedAlpha``).
    """
    check_input("entmax_bisect", X, dim)
    if validate:
        _check_alpha(alpha)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise TypeError(f"entmax_bisect: n_iter must be a positive int, got {n_iter!r}")
    z = X
    d = check_dim(z, dim)
    check_mask(mask, z)
    a = row_param(alpha, z, d, "alpha")
    if tol is None:
        tol = 1e-12 if z.dtype == torch.float64 else 1e-6
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    zl = to_last(z, d).contiguous()  # type: ignore[union-attr]
    fn = _EntmaxBisectFunction if zl.device.type == "cpu" else _DenseEntmaxBisectFunction
    return from_last(fn.apply(zl, to_last(mask, d), a, tol, n_iter, bool(ensure_sum_one)), d)
