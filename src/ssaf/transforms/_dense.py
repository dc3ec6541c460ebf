"""Dense-row threshold search, for accelerators.

On a GPU the candidate lists of ``_candidates`` cost more than they save: every compaction
(``nonzero``) and every data-dependent loop test waits for the device, and a transform becomes a few
hundred small launches (about 1 ms whatever the size, measured on an H100). Here every pass reads the
whole row instead, with fixed shapes, so nothing waits for the device except one convergence test
every ``PASSES_PER_CHECK`` passes; the passes are memory-bound reductions the device does at full
bandwidth. Exactness still comes from the fixed-point test, not from a pass count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ssaf.transforms._common import additive_mask, compute_dtype

PASSES_PER_CHECK = 3  # passes at a fixed point change nothing, so a few extra cost only bandwidth


def shifted_scores(
    z: Tensor, mask: Tensor | None, scale: Tensor | float, shift: Callable | None = None
) -> tuple[Tensor, Tensor]:
    """``scale * (z - max_valid(z))`` in the compute dtype, -inf at masked entries, and the NaN rows.

    A row with no valid entry is all -inf (its max is taken as 0, so no NaN appears). A row holding a
    NaN or +inf (see ``_common``) is returned as all -inf too, flagged in the second result (..., 1),
    so the solvers see an empty row and the caller fills it with NaN: no host sync. ``shift`` is
    :func:`biased_shift` or its compiled version; the mask becomes an additive bias first, at the
    mask's own (usually broadcast, (B, 1, 1, K)) size: a compiled kernel that reads the boolean mask
    itself was 3.5x slower on CPU than one adding a float bias.
    """
    bias = None if mask is None else additive_mask(mask, compute_dtype(z.dtype), float("-inf"))
    return (shift or biased_shift)(z, bias, scale)


def biased_shift(z: Tensor, bias: Tensor | None, scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """``scale * (x - max(x))`` with ``x = z + bias`` in the compute dtype, and the rows whose max is NaN
    or +inf (see :func:`shifted_scores`)."""
    cd = compute_dtype(z.dtype)
    x = z.to(cd)
    if bias is not None:
        x = x + bias
    m = x.amax(dim=-1, keepdim=True)
    bad = torch.isnan(m) | (m == float("inf"))
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=cd, device=m.device))
    s = scale.to(cd) if isinstance(scale, Tensor) else scale
    x = torch.where(bad, float("-inf"), (x - m) * s)
    return x, bad


def nan_rows(t: Tensor, bad: Tensor) -> Tensor:
    """``t`` with the flagged rows (``bad`` (..., 1)) set to NaN."""
    return torch.where(bad, float("nan"), t)


def sparsemax_passes(x: Tensor, tau: Tensor, k: Tensor, n: int = PASSES_PER_CHECK) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` of Michelot's passes on whole rows, from the lower bound ``tau``.

    Each pass sets tau to (sum_S x - 1) / |S| over S = {x > tau}: again a lower bound and never
    smaller, so S only shrinks. Returns the new tau, the support sizes |S| (both (..., 1)), and a
    0-dim bool: whether any |S| changed in the last pass (False: every row is at its fixed point).
    Fixed shapes and no host sync, so it also compiles into one loop per row (``_compiled``).
    """
    k_prev = k
    for _ in range(n):
        on = x > tau
        k_prev, k = k, on.sum(dim=-1, keepdim=True, dtype=x.dtype)
        new = (torch.where(on, x, 0.0).sum(dim=-1, keepdim=True) - 1) / k.clamp(min=1)
        tau = torch.maximum(tau, new)  # never down, also under rounding
    return tau, k, (k != k_prev).any()


def sparsemax_threshold(x: Tensor, passes: Callable = sparsemax_passes) -> tuple[Tensor, Tensor]:
    """Michelot's fixed point on whole rows: tau with ``sum_i max(x_i - tau, 0) = 1`` per row.

    Args:
        x: (..., n) scores with each row's maximum at 0 (or a row of -inf: no valid entry).
        passes: :func:`sparsemax_passes` or its compiled version.

    Returns:
        tau (..., 1) and the support size (..., 1) in the dtype of ``x``. From the lower bound
        tau_0 = -1 the passes shrink every support; a pass that leaves every |S| unchanged has
        reached the exact support (see ``sparsemax``'s module docstring), whatever the pass count.
    """
    tau = torch.full((*x.shape[:-1], 1), -1.0, dtype=x.dtype, device=x.device)
    k = torch.full_like(tau, float(x.shape[-1]) + 1)  # more than any support: the first pass changes it
    # A test costs an accelerator a wait; on CPU it is free, so test after every pass there.
    n = 1 if x.device.type == "cpu" else PASSES_PER_CHECK
    while True:
        tau, k, changed = passes(x, tau, k, n)
        if not bool(changed):
            return tau, k


def sparsemax_output(x: Tensor, tau: Tensor) -> Tensor:
    """``max(x - tau, 0)``: the probabilities once tau is known."""
    return (x - tau).clamp(min=0)


def sparsemax_backward(p: Tensor, g: Tensor, scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """The gradient of ``p = sparsemax(scale * z)`` given ``p`` (which marks the support S).

    Returns ``gx`` (the gradient wrt x = scale * z: on S, g minus its mean over S; 0 elsewhere) and
    ``grad_z = scale * gx`` in ``g``'s dtype.
    """
    on = p > 0
    gx = torch.where(on, g.to(p.dtype), 0.0)
    k = on.sum(dim=-1, keepdim=True, dtype=p.dtype).clamp(min=1)
    gx = torch.where(on, gx - gx.sum(dim=-1, keepdim=True) / k, gx)
    return gx, (gx * scale).to(g.dtype)


def _rowsum(v: Tensor) -> Tensor:
    return v.sum(dim=-1, keepdim=True)


def entmax15_probabilities(x: Tensor, max_iter: int) -> Tensor:
    """Exact 1.5-entmax on whole rows: ``p = max(x - tau, 0)^2`` with ``sum p = 1``.

    Args:
        x: (..., n) halved scores with each row's maximum at 0 (a row of -inf has no valid entry).
        max_iter: a bound against pathological rounding only; the loop ends on exactness.

    The same iteration as ``entmax15_solve`` (Newton from the lower bound -1, each pass testing the
    closed-form root on the current support for exactness), then tau from centred support statistics.
    """
    tiny = torch.finfo(x.dtype).tiny
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    tau = torch.full((*x.shape[:-1], 1), -1.0, dtype=x.dtype, device=x.device)
    for it in range(max_iter):
        r = (x - tau).clamp(min=0)
        supp = r > 0
        k = supp.sum(dim=-1, keepdim=True, dtype=x.dtype)
        r1, r2 = _rowsum(r), _rowsum(r * r)
        disc = r1 * r1 - k * (r2 - 1)
        u = ((r2 - 1) / (r1 + disc.clamp(min=0).sqrt()).clamp(min=tiny)).clamp(min=0)
        below = _rowsum((supp & (r < u)).to(x.dtype))
        exact = (disc >= 0) & (below == 0)
        step = torch.where(exact, u, ((r2 - 1) / (2 * r1).clamp(min=tiny)).clamp(min=0))
        # Exact rows stay at their root (a further pass adds 0); the rest take a Newton step.
        settled = exact | (tau + step <= tau)
        tau = tau + step
        if it % PASSES_PER_CHECK == PASSES_PER_CHECK - 1 and bool(settled.all()):
            break
    # Support known: tau = mean_S(x) - sqrt(1/k - var_S(x)) (centred, so flat rows keep their digits).
    kc = k.clamp(min=1)
    mean = _rowsum(torch.where(supp, x, zero)) / kc
    var = _rowsum(torch.where(supp, (x - mean).square(), zero)) / kc
    t = mean - (1 / kc - var).clamp(min=0).sqrt()
    return torch.where(supp, (x - t).clamp(min=0).square(), zero)


def entmax_probabilities(
    x: Tensor, am1: Tensor | float, tol: float, max_iter: int, normalize: bool = True
) -> tuple[Tensor, Tensor]:
    """alpha-entmax on whole rows: ``p = max(x - tau, 0) ** (1 / (alpha - 1))``, rows summing to 1.

    Args:
        x: (..., n) scores scaled by ``alpha - 1``, each row's maximum at 0 (-inf = masked).
        am1: ``alpha - 1``, a float or (..., 1).
        tol: the largest row-sum error accepted.
        max_iter: the most search steps; the search stops at ``tol``.
        normalize: divide each row by its sum.

    The bracketed Newton search of ``entmax_solve``, on whole rows; returns p and the largest row-sum
    error (0-dim) the search ended with.
    """
    tiny = torch.finfo(x.dtype).tiny
    beta = 1.0 / am1
    bm1 = beta - 1.0
    count = _rowsum(torch.isfinite(x).to(x.dtype))
    empty = count == 0
    lo = torch.full((*x.shape[:-1], 1), -1.0, dtype=x.dtype, device=x.device)  # p_max <= 1
    hi = -((1.0 / count.clamp(min=1)) ** am1)  # every p <= 1/count there
    tau = lo
    for it in range(max_iter):
        r = (x - tau).clamp(min=0)
        pw = torch.where(r > 0, r.pow(bm1), 0.0)
        p = pw * r
        f = _rowsum(p) - 1
        done = (f.abs() <= tol) | empty
        lo = torch.where(f > 0, tau, lo)
        hi = torch.where(f < 0, tau, hi)
        newton = tau + f / _rowsum(beta * pw).clamp(min=tiny)
        new_tau = torch.where((newton > lo) & (newton < hi), newton, (lo + hi) / 2)
        settled = done | (new_tau == tau)
        tau = torch.where(done, tau, new_tau)
        if it % PASSES_PER_CHECK == PASSES_PER_CHECK - 1 and bool(settled.all()):
            break
    worst = torch.where(empty, 0.0, f.abs()).amax() if f.numel() else torch.zeros((), device=x.device)
    return (p / (f + 1).clamp(min=tiny) if normalize else p), worst
