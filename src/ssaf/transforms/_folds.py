"""The CPU path of sparsemax / sparsegen-lin: Michelot's passes on whole rows, from a folded lower bound.

The problem, per row: given shifted scores ``x`` (row maximum 0, -inf = masked) and a target ``T > 0``
(``T = 1 / scale``), find tau with ``sum_i max(x_i - tau, 0) = T``; then ``p = scale * max(x - tau, 0)``.

Two facts make it cheap without sorting:

* **Any set of entries gives a lower bound.** For any set A, ``tau_A = (sum_A x - T) / |A| <= tau*``
  (``f(tau) = sum_i max(x_i - tau, 0)`` is decreasing and ``f(tau_A) >= sum_A (x_i - tau_A) = T``).
  Michelot's step, tau <- tau_A with A = {x > tau}, is this bound for the current support; from a
  lower bound it never overshoots, supports only shrink, and a support that does not change is exact.
* **A sub-row of maxima gives a good one.** The threshold of any sub-row is a lower bound for the
  row's (take A inside the sub-row), and so is that of a row of *pairwise maxima*: folding the row,
  ``y_j = max(x_j, x_{j + n/2})``, keeps every large entry that does not share its pair with a larger
  one, so a few passes on a row folded twice (a quarter of the data) land just below tau*.

From that bound three passes over the full rows settle nearly every row (at lam = -8 on the packaged
MiniLM's attention, 96%; each pass after the first works on ``max(x - tau, 0)`` in place); the rest
continue on their own, compacted. Every pass is a few elementwise ops and
row sums on floats: comparisons producing boolean tensors cost 3-10x as much on CPU, so the support is
counted as ``sum(sign(max(x - tau, 0)))``. Exactness comes from the unchanged-support test, never from
a pass count. The accelerator path (``_dense``) runs the same fixed point with fixed shapes instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssaf.transforms._common import scratch

FOLDS = 2  # the bound is computed on rows folded twice: a quarter of the data
BOUND_PASSES = (2, 2)  # passes on the folded rows, then on rows folded twice more (a sixteenth)
FULL_PASSES = 3  # at most this many passes on whole rows, then the unsettled rows are compacted ...
COMPACT_BELOW = 0.15  # ... or as soon as at most this share of the rows is unsettled
MIN_FOLDED = 8  # rows are not folded below this length (4: a 5-19% slower forward at 64-96 tokens, 2026-12-02)


def fold(x: Tensor, out: Tensor | None = None) -> Tensor:
    """Pairwise maxima ``max(x_j, x_{j + h})``, h = n // 2 (an odd last entry is left out: a sub-row's
    threshold is still a lower bound)."""
    h = x.shape[-1] // 2
    return torch.maximum(x[..., :h], x[..., h : 2 * h], out=out)


def passes(x: Tensor, tau: Tensor, target: Tensor | float, n: int, r: Tensor) -> Tensor:
    """``n`` of Michelot's steps from the lower bound ``tau`` (..., 1): again a lower bound, never smaller.
    ``r`` is a buffer shaped like ``x``."""
    for _ in range(n):
        torch.sub(x, tau, out=r).clamp_(min=0)
        total = r.sum(-1, keepdim=True)
        k = r.sign_().sum(-1, keepdim=True)
        tau = torch.maximum(tau + (total - target) / k.clamp(min=1), tau)
    return tau


def lower_bound(x: Tensor, target: Tensor | float) -> Tensor:
    """A lower bound (..., 1) of the threshold of every row of ``x``, from its folded sub-rows."""
    lead, width = x.shape[:-1], x.shape[-1]
    plan = []  # per level: the widths of its folds and its passes
    for n_passes in BOUND_PASSES:
        if width < 2**FOLDS * MIN_FOLDED:
            break  # short rows: the passes on the rows themselves cost as little
        widths = []
        for _ in range(FOLDS):
            width //= 2
            widths.append(width)
        plan.append((widths, n_passes))
    rows = x.numel() // max(x.shape[-1], 1)
    arena = scratch((rows * sum(sum(w) + w[-1] for w, _ in plan),), x.dtype, x.device, 1)
    used = 0

    def take(w: int) -> Tensor:
        nonlocal used
        t = arena[used : used + rows * w].view(*lead, w)
        used += rows * w
        return t

    levels = []
    y = x
    for widths, n_passes in plan:
        for w in widths:
            y = fold(y, out=take(w))
        levels.append((y, n_passes, take(widths[-1])))
    # p_max <= 1 gives tau >= max(x) - T = -T: the bound every search starts from.
    tau = torch.full((*lead, 1), -1.0, dtype=x.dtype, device=x.device) * target
    for y, n_passes, r in reversed(levels):
        tau = passes(y, tau, target, n_passes, r)
    return tau


def threshold(x: Tensor, target: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """Solve ``sum_i max(x_i - tau, 0) = target`` exactly for every row.

    Args:
        x: (..., n) shifted scores (row maximum 0, or a row of -inf), contiguous; used as scratch.
        target: ``1 / scale``, a float or (..., 1) broadcastable.

    Returns:
        ``r = max(x - tau, 0)`` (the unscaled probabilities, a new tensor), the support size (..., 1) and
        the row sums of ``r`` (..., 1), which equal ``target`` up to rounding.
    """
    n = x.shape[-1]
    lb = lower_bound(x, target)
    r = torch.empty_like(x)
    torch.sub(x, lb, out=r).clamp_(min=0)  # the support of the bound holds the true one
    total = r.sum(-1, keepdim=True)
    k = torch.sign(r, out=x).sum(-1, keepdim=True)  # x is no longer needed: r has every entry above lb
    active = torch.ones_like(k, dtype=torch.bool)
    for _ in range(FULL_PASSES - 1):
        # Michelot's step relative to the current threshold: r <- max(r - d, 0) = max(x - (tau + d), 0).
        # Settled rows take d = 0 and keep their (exact) r.
        d = torch.where(active, ((total - target) / k.clamp(min=1)).clamp_(min=0), 0.0)
        r.sub_(d).clamp_(min=0)
        total = r.sum(-1, keepdim=True)
        k_new = torch.sign(r, out=x).sum(-1, keepdim=True)
        active &= k_new != k  # an unchanged support is the exact one
        k = k_new
        if float(active.sum()) <= COMPACT_BELOW * active.numel():
            break
    todo = active.view(-1).nonzero().squeeze(1)
    if todo.numel():
        _finish(r.view(-1, n), k.view(-1, 1), total.view(-1, 1), todo, target, x.shape[:-1])
    return r, k, total


def _finish(r: Tensor, k: Tensor, totals: Tensor, rows: Tensor, target: Tensor | float, lead: torch.Size) -> None:
    """Continue the unsettled ``rows`` of ``r`` (R, n) = max(x - tau, 0) to their fixed point, in place
    (with their support sizes ``k`` and row sums ``totals``, (R, 1)).

    ``r`` holds everything the search still needs: entries at or below tau can no longer enter the
    support, and the threshold relative to tau starts at 0 (tau is a lower bound).
    """
    y = r.index_select(0, rows)  # (R', n)
    kk = k.index_select(0, rows)  # (R', 1)
    t = torch.zeros_like(kk)
    goal = target.expand(*lead, 1).reshape(-1, 1).index_select(0, rows) if isinstance(target, Tensor) else target
    total = y.sum(-1, keepdim=True)
    out = torch.empty_like(y)
    active = torch.ones_like(kk, dtype=torch.bool)
    while True:
        t = torch.where(active, torch.maximum(t + (total - goal) / kk.clamp(min=1), t), t)
        torch.sub(y, t, out=out).clamp_(min=0)
        total = out.sum(-1, keepdim=True)
        k_new = out.sign().sum(-1, keepdim=True)
        active = active & (k_new != kk)  # settled rows keep their t: their support is final
        kk = k_new
        if not bool(active.any()):
            break
    r.index_copy_(0, rows, out)
    k.index_copy_(0, rows, kk)
    totals.index_copy_(0, rows, total)
