"""sparsemax (Martins & Astudillo, 2016) and SSAF's sparsegen-lin (Laha et al., 2018; Cui et al., 2019).

The threshold is found without sorting (the entmax package sorts every row), with Michelot's
fixed-point iteration: starting from a lower bound tau_0 of the threshold, the support
S_t = {i : x_i > tau_t} is a superset of the true support, and

    tau_{t+1} = (sum_{i in S_t} x_i - 1) / |S_t|

is again a lower bound (for any set A, (sum_A x - 1)/|A| <= tau*), with tau_{t+1} >= tau_t. Supports
shrink strictly until they stop changing, and a support that does not change is the exact one, so the
loop is exact whatever the number of passes. Three paths run it, with the same results (tested):

* CPU, eager: whole rows, float-only passes from a folded lower bound (``_folds``), or, on long rows
  that are sparse anyway (lam >= 0), a compacted list of candidates (``_candidates``);
* accelerators and ``compiled=True``: whole rows with fixed shapes (``_dense``, ``_compiled``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssaf.transforms import _folds
from ssaf.transforms._candidates import (
    find_candidates,
    gather,
    row_scale,
    scatter_rows,
    segment_count,
    segment_sum,
    select,
)
from ssaf.transforms._common import (
    additive_mask,
    check_dim,
    check_input,
    check_k,
    check_mask,
    check_param,
    compute_dtype,
    fill_rows,
    from_last,
    no_double_backward,
    nonfinite_rows,
    row_param,
    scratch,
    sum_to_shape,
    to_last,
    weighted_backward,
)
from ssaf.transforms._compiled import maybe_compiled
from ssaf.transforms._dense import (
    biased_shift,
    nan_rows,
    shifted_scores,
    sparsemax_backward,
    sparsemax_output,
    sparsemax_passes,
    sparsemax_threshold,
)

# Long rows at lam >= 0 keep few candidates, and there the candidate lists beat whole-row passes
# (4 x 12 x 384 x 384: 25 vs 33 ms forward+backward); everywhere else whole rows win (README, Performance).
LONG_ROW = 256


def sparsemax_solve(x: Tensor, row: Tensor, n_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Solve ``sum_{i in row} max(x_i - tau, 0) = 1`` for every row of a flat candidate list.

    Args:
        x: (C,) scores, each row's maximum at 0 (rows may have any number of entries, including none;
            entries at or below the threshold's lower bound -1 are harmless).
        row: (C,) row id of each entry.
        n_rows: number of rows.

    Returns:
        ``pos`` (S,), the positions in ``x`` of the support; ``p = x[pos] - tau[row[pos]] > 0`` (S,);
        and the support size per row (n_rows,).
    """
    pos = torch.arange(x.numel(), device=x.device)
    active: Tensor | None = None  # None: every listed entry is in the current set S_t
    n_active = x.numel()
    while True:
        # S_t is a superset of each row's support, so tau(S_t) is a lower bound of tau*.
        if active is None:
            k = segment_count(row, n_rows, x.dtype)
            total = segment_sum(x, row, n_rows)
        else:
            w = active.to(x.dtype)
            k, total = segment_sum(w, row, n_rows), segment_sum(x * w, row, n_rows)
        tau = (total - 1) / k.clamp(min=1)
        keep = x > gather(tau, row)
        if active is not None:
            keep &= active  # tau only grows, so a dropped entry stays out (also under rounding)
        n_keep = int(keep.sum())
        if n_keep == n_active:  # S_t is its own support: a fixed point, hence exact
            if active is not None:
                x, row, pos = select(active, x, row, pos)
            return pos, x - gather(tau, row), k
        n_active = n_keep  # strictly fewer, so the loop ends
        # Compact the list when it shrank a lot; otherwise mask, which costs no gather.
        if 4 * n_keep < 3 * x.numel():
            x, row, pos = select(keep, x, row, pos)
            active = None
        else:
            active = keep


class _SparsemaxFunction(torch.autograd.Function):
    """sparsemax(scale * z) over the last dim of a contiguous tensor on candidate lists, with a gradient
    for ``scale``."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None, scale: Tensor | float) -> Tensor:
        c = find_candidates(z, mask, scale)
        pos, p, k = sparsemax_solve(c.x, c.row, c.n_rows)
        flat, row, x = (gather(t, pos) for t in (c.flat, c.row, c.x))  # only the support matters now
        ctx.save_for_backward(flat, row, k, x, scale if isinstance(scale, Tensor) else None)
        ctx.scale, ctx.n_rows, ctx.bad = (None if isinstance(scale, Tensor) else scale), c.n_rows, c.bad
        return fill_rows(scatter_rows(p, flat, z), c.bad, float("nan"))

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, Tensor | None]:
        no_double_backward("sparsemax")
        flat, row, k, x, scale_t = ctx.saved_tensors
        scale = scale_t if scale_t is not None else ctx.scale
        # Jacobian wrt x = scale * z on the support S: I - 1 1^T / |S|; zero elsewhere.
        gx = gather(g.reshape(-1), flat).to(x.dtype)
        gx = gx - gather(segment_sum(gx, row, ctx.n_rows) / k.clamp(min=1), row)
        s_row = row_scale(scale, g)
        s = gather(s_row, row) if isinstance(s_row, Tensor) else s_row
        grad_z = fill_rows(scatter_rows(gx * s, flat, g), ctx.bad, float("nan"))
        grad_scale = None
        if scale_t is not None and ctx.needs_input_grad[2]:
            # d loss / d scale = sum_i gx_i z_i = sum_i gx_i (x_i / scale): the row max cancels
            # because gx sums to zero over each row.
            per_row = segment_sum(gx * x / s, row, ctx.n_rows)
            per_row = fill_rows(per_row.view(-1, 1), ctx.bad, float("nan"))
            grad_scale = sum_to_shape(per_row.view(*g.shape[:-1], 1), scale_t.shape).to(scale_t.dtype)
        return grad_z, None, grad_scale


class _FoldedSparsemaxFunction(torch.autograd.Function):
    """sparsemax(scale * z) on whole rows with float-only passes (see ``_folds``): the eager CPU path."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None, scale: Tensor | float) -> Tensor:
        cd = compute_dtype(z.dtype)
        x = scratch(z.shape, cd, z.device, 0)  # (..., n) shifted scores, then the solver's scratch
        # A row with no valid entry has max -inf: shift it by 0, so it stays -inf (and all zeros).
        if mask is None:
            m = z.amax(dim=-1, keepdim=True).to(cd)
            torch.sub(z, torch.where(torch.isfinite(m), m, 0.0), out=x)
        else:
            torch.add(z, additive_mask(mask, cd, float("-inf")), out=x)
            m = x.amax(dim=-1, keepdim=True)
            x.sub_(torch.where(torch.isfinite(m), m, 0.0))
        bad = nonfinite_rows(m)
        fill_rows(x, bad, float("-inf"))  # solved as empty rows, filled with NaN below
        s = scale.to(cd) if isinstance(scale, Tensor) else scale
        r, k, total = _folds.threshold(x, 1.0 / s)
        # p = scale * r, evaluated as r / sum(r) (sum(r) = 1 / scale in exact arithmetic). The passes update
        # r in place, so each entry carries the rounding of every pass: 1.2e-6 relative, and a row sum off
        # by 1.2e-6, at lam = -22025 in fp32. Dividing by the row sum leaves only each entry's deviation
        # from the row's mean rounding, and a row sum within an ulp or two of 1.
        p = r.mul_(1.0 / total.clamp(min=torch.finfo(cd).tiny))
        fill_rows(p, bad, float("nan"))
        ctx.save_for_backward(p, k, scale if isinstance(scale, Tensor) else None)
        ctx.scale, ctx.bad = (None if isinstance(scale, Tensor) else scale), bad
        return p.to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, Tensor | None]:
        no_double_backward("sparsemax")
        p, k, scale_t = ctx.saved_tensors
        scale = scale_t.to(p.dtype) if scale_t is not None else ctx.scale
        # On the support S: g minus its mean over S, times scale; 0 elsewhere. sign(p) is the support
        # as floats (the NaN rows' gradients are set to NaN below).
        on = torch.sign(p, out=scratch(p.shape, p.dtype, p.device, 0))
        grad = weighted_backward(g.to(p.dtype), on, k, scale)  # the gradient wrt z
        grad_scale = None
        if scale_t is not None and ctx.needs_input_grad[2]:
            # sum_i gx_i z_i = sum_i gx_i (p_i / scale + const) = sum_i gx_i p_i / scale (gx sums to 0),
            # with gx = grad / scale the gradient wrt x = scale * z (two divisions: scale**2 can underflow).
            # ``on`` (scratch, now q) is no longer needed and takes the product.
            per_row = torch.mul(grad, p, out=on).sum(-1, keepdim=True) / scale / scale
            per_row = fill_rows(per_row.expand(*p.shape[:-1], 1).contiguous(), ctx.bad, float("nan"))
            grad_scale = sum_to_shape(per_row, scale_t.shape).to(scale_t.dtype)
        return fill_rows(grad, ctx.bad, float("nan")).to(g.dtype), None, grad_scale


class _DenseSparsemaxFunction(torch.autograd.Function):
    """The same function on whole rows with fixed shapes (see ``_dense``): the path for accelerators and
    for ``compiled=True`` (see ``_compiled``)."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None, scale: Tensor | float, compiled: bool) -> Tensor:
        x, bad = shifted_scores(z, mask, scale, maybe_compiled(biased_shift, compiled))
        tau, _ = sparsemax_threshold(x, maybe_compiled(sparsemax_passes, compiled))
        p = maybe_compiled(sparsemax_output, compiled)(x, tau)
        # The support is read back from the fp32 probabilities, so it is exactly the solver's.
        ctx.save_for_backward(p, bad, scale if isinstance(scale, Tensor) else None)
        ctx.scale, ctx.compiled = (None if isinstance(scale, Tensor) else scale), compiled
        return nan_rows(p, bad).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, Tensor | None, None]:
        no_double_backward("sparsemax")
        p, bad, scale_t = ctx.saved_tensors
        scale = scale_t.to(p.dtype) if scale_t is not None else ctx.scale
        gx, grad_z = maybe_compiled(sparsemax_backward, ctx.compiled)(p, g, scale)
        grad_scale = None
        if scale_t is not None and ctx.needs_input_grad[2]:
            # sum_i gx_i z_i = sum_i gx_i (p_i + tau) / scale = sum_i gx_i p_i / scale (gx sums to 0).
            per_row = nan_rows((gx * p).sum(dim=-1, keepdim=True) / scale, bad)
            grad_scale = sum_to_shape(per_row, scale_t.shape).to(scale_t.dtype)
        return nan_rows(grad_z, bad), None, grad_scale, None


def _apply(z: Tensor, mask: Tensor | None, scale: Tensor | float, dim: int, compiled: bool) -> Tensor:
    d = check_dim(z, dim)
    check_mask(mask, z)
    s = row_param(scale, z, d, "scale")
    zl = to_last(z, d).contiguous()  # type: ignore[union-attr]
    m = to_last(mask, d)
    if zl.device.type == "cpu" and not compiled:
        sparse_anyway = isinstance(s, float) and s >= 1.0 and zl.shape[-1] >= LONG_ROW
        fn = _SparsemaxFunction if sparse_anyway else _FoldedSparsemaxFunction
        return from_last(fn.apply(zl, m, s), d)
    return from_last(_DenseSparsemaxFunction.apply(zl, m, s, compiled), d)


def sparsemax(
    X: Tensor, dim: int = -1, k: int | None = None, *, mask: Tensor | None = None, compiled: bool = False
) -> Tensor:
    """Euclidean projection of the scores onto the probability simplex.

    Solves ``argmin_{p in simplex} ||p - X||^2`` along ``dim``. The solution is
    ``p_i = max(X_i - tau, 0)`` with tau chosen so that the row sums to 1; entries below tau get an
    exact 0. Positional arguments as in the ``entmax`` package (1.3), so it is a drop-in replacement.

    Args:
        X: scores of any shape, any floating dtype (fp16/bf16 are solved in fp32 and returned in
            their own dtype). -inf means "may not attend"; a row holding a NaN or +inf comes back NaN.
        dim: the dimension that sums to 1.
        k: accepted for entmax compatibility (its partial-sort size, a speed knob there); no row is
            sorted here, so it changes nothing.
        mask: optional boolean tensor broadcastable to ``X``; True = may attend. Masked entries get
            exactly 0; a row with no valid entry returns all zeros (and zero gradient).
        compiled: solve with ``torch.compile``d whole-row kernels (see ``_compiled``): the same result;
            the first call compiles for tens of seconds and needs a C++ compiler (CPU) or Triton (CUDA).

    Returns:
        Probabilities with the shape and dtype of ``X``.
    """
    check_input("sparsemax", X, dim)
    check_k("sparsemax", k)
    return _apply(X, mask, 1.0, dim, compiled)


def _check_lam(lam: Tensor | float) -> None:
    check_param("sparsegen_lin", "lam", lam)


def sparsegen_lin(
    X: Tensor,
    lam: Tensor | float = 0.0,
    dim: int = -1,
    *,
    mask: Tensor | None = None,
    compiled: bool = False,
    validate: bool = True,
) -> Tensor:
    """SSAF's attention transform: sparsegen-lin with sparsity control ``lam < 1``.

    Solves ``argmin_{p in simplex} ||p - X||^2 - lam * ||p||^2`` along ``dim``, whose solution is
    ``sparsemax(X / (1 - lam))``. ``lam = 0`` is sparsemax; larger ``lam`` is never less sparse,
    ``lam -> 1`` tends to one-hot and ``lam -> -inf`` to uniform.

    Args:
        X: scores (see :func:`sparsemax`).
        lam: a float, or a tensor broadcastable to ``X`` with size 1 along ``dim`` (e.g. one value
            per head, shape (H, 1, 1) for (B, H, Q, K) scores). A tensor that requires grad gets one.
        dim: the dimension that sums to 1.
        mask: optional boolean mask, True = may attend.
        compiled: use the compiled kernels (see :func:`sparsemax`).
        validate: check that lam is finite and < 1. For a tensor on an accelerator the check makes the
            host wait for the device; ``False`` is for values valid by construction (``LearnedLambda``).
    """
    check_input("sparsegen_lin", X, dim)
    if validate:
        _check_lam(lam)
    return _apply(X, mask, 1.0 / (1.0 - lam), dim, compiled)
