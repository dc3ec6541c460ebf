"""sparsemax (Martins & Astudillo, 2016) and SSAF's sparsegen-lin (Laha et al., 2018; Cui et al., 2019).

The threshold is found without sorting (the entmax package sorts every row). Only the candidates of
each row are visited (see ``_candidates``), and on them we run Michelot's fixed-point iteration:
starting from a lower bound tau_0 of the threshold, the support S_t = {i : x_i > tau_t} is a superset
of the true support, and

    tau_{t+1} = (sum_{i in S_t} x_i - 1) / |S_t|

is again a lower bound (for any set A, (sum_A x - 1)/|A| <= tau*), with tau_{t+1} >= tau_t. Supports
shrink strictly until they stop changing, and a support that does not change is the exact one, so the
loop ends after at most n + 1 passes and is exact whatever the number of passes (2-5 for attention).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ssaf.transforms._candidates import (
    find_candidates,
    gather,
    row_scale,
    scatter_rows,
    segment_count,
    segment_sum,
    select,
)
from ssaf.transforms._common import check_dim, check_mask, from_last, row_param, sum_to_shape, to_last
from ssaf.transforms._compiled import kernel
from ssaf.transforms._dense import (
    biased_shift,
    shifted_scores,
    sparsemax_backward,
    sparsemax_output,
    sparsemax_passes,
    sparsemax_threshold,
)


def sparsemax_solve(x: Tensor, row: Tensor, n_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Solve ``sum_{i in row} max(x_i - tau, 0) = 1`` for every row of a flat candidate list.

    Args:
        x: (C,) scores, each row's maximum at 0, all of them above the lower bound -1 of tau
            (rows may have any number of entries, including none).
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
    """sparsemax(scale * z) over the last dim of a contiguous tensor, with a gradient for ``scale``."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None, scale: Tensor | float) -> Tensor:
        c = find_candidates(z, mask, scale)
        warn_if_dense(c.flat.numel(), z)
        pos, p, k = sparsemax_solve(c.x, c.row, c.n_rows)
        flat, row, x = (gather(t, pos) for t in (c.flat, c.row, c.x))  # only the support matters now
        ctx.save_for_backward(flat, row, k, x, scale if isinstance(scale, Tensor) else None)
        ctx.scale, ctx.n_rows = (None if isinstance(scale, Tensor) else scale), c.n_rows
        return scatter_rows(p, flat, z)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, Tensor | None]:
        flat, row, k, x, scale_t = ctx.saved_tensors
        scale = scale_t if scale_t is not None else ctx.scale
        # Jacobian wrt x = scale * z on the support S: I - 1 1^T / |S|; zero elsewhere.
        gx = gather(g.reshape(-1), flat).to(x.dtype)
        gx = gx - gather(segment_sum(gx, row, ctx.n_rows) / k.clamp(min=1), row)
        s_row = row_scale(scale, g)
        s = gather(s_row, row) if isinstance(s_row, Tensor) else s_row
        grad_z = scatter_rows(gx * s, flat, g)
        grad_scale = None
        if scale_t is not None and ctx.needs_input_grad[2]:
            # d loss / d scale = sum_i gx_i z_i = sum_i gx_i (x_i / scale): the row max cancels
            # because gx sums to zero over each row.
            per_row = segment_sum(gx * x / s, row, ctx.n_rows)
            grad_scale = sum_to_shape(per_row.view(*g.shape[:-1], 1), scale_t.shape).to(scale_t.dtype)
        return grad_z, None, grad_scale


DENSE_CANDIDATES = 0.25  # above this share of candidates, on long rows, the candidate lists cost more than they save
LONG_ROW = 192  # at 128 keys and lam = -8 a whole MNLI run took at most 26% longer than softmax (docs/RESULTS.md)


def warn_if_dense(n_candidates: int, z: Tensor) -> None:
    """Say so when the candidate path is the slow choice: long rows most of which may be in the support.

    That happens with lam far below 0 (SSAF lam = -8 divides the scores by 9, so a key is a candidate
    unless its score is 9 below the row's max): on SQuAD dev windows (243 tokens) of the packaged MiniLM,
    77-89% of the real keys were candidates and this path took 8x as long as ``compiled=True`` and 12-24x
    as long as softmax (``scripts/bench_scores.py``, README). Python shows the warning once per call site.
    """
    n = z.shape[-1]
    if n >= LONG_ROW and n_candidates > DENSE_CANDIDATES * z.numel():
        warnings.warn(
            f"sparsemax/sparsegen-lin: {n_candidates / z.numel():.0%} of the scores are candidates on rows of {n} "
            "keys (lam far below 0?); the eager CPU path is slow here (8x slower than the compiled one on SQuAD "
            "windows): set attn.compiled=true (needs a C++ compiler)",
            stacklevel=2,
        )


class _DenseSparsemaxFunction(torch.autograd.Function):
    """The same function on whole rows (see ``_dense``): the path for accelerators and for
    ``compiled=True`` (see ``_compiled``)."""

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor | None, scale: Tensor | float, compiled: bool) -> Tensor:
        x = shifted_scores(z, mask, scale, kernel(biased_shift, compiled))
        tau, _ = sparsemax_threshold(x, kernel(sparsemax_passes, compiled))
        p = kernel(sparsemax_output, compiled)(x, tau)
        # The support is read back from the fp32 probabilities, so it is exactly the solver's.
        ctx.save_for_backward(p, scale if isinstance(scale, Tensor) else None)
        ctx.scale, ctx.compiled = (None if isinstance(scale, Tensor) else scale), compiled
        return p.to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, Tensor | None, None]:
        p, scale_t = ctx.saved_tensors
        scale = scale_t.to(p.dtype) if scale_t is not None else ctx.scale
        gx, grad_z = kernel(sparsemax_backward, ctx.compiled)(p, g, scale)
        grad_scale = None
        if scale_t is not None and ctx.needs_input_grad[2]:
            # sum_i gx_i z_i = sum_i gx_i (p_i + tau) / scale = sum_i gx_i p_i / scale (gx sums to 0).
            per_row = (gx * p).sum(dim=-1, keepdim=True) / scale
            grad_scale = sum_to_shape(per_row, scale_t.shape).to(scale_t.dtype)
        return grad_z, None, grad_scale, None


def _apply(z: Tensor, mask: Tensor | None, scale: Tensor | float, dim: int, compiled: bool) -> Tensor:
    d = check_dim(z, dim)
    check_mask(mask, z)
    s = row_param(scale, z, d, "scale")
    zl = to_last(z, d).contiguous()  # type: ignore[union-attr]
    m = to_last(mask, d)
    if zl.device.type == "cpu" and not compiled:
        return from_last(_SparsemaxFunction.apply(zl, m, s), d)
    return from_last(_DenseSparsemaxFunction.apply(zl, m, s, compiled), d)


def sparsemax(z: Tensor, mask: Tensor | None = None, dim: int = -1, compiled: bool = False) -> Tensor:
    """Euclidean projection of the scores onto the probability simplex.

    Solves ``argmin_{p in simplex} ||p - z||^2`` along ``dim``. The solution is
    ``p_i = max(z_i - tau, 0)`` with tau chosen so that the row sums to 1; entries below tau get an
    exact 0.

    Args:
        z: scores of any shape, any floating dtype (fp16/bf16 are solved in fp32 and returned in
            their own dtype).
        mask: optional boolean tensor broadcastable to ``z``; True = may attend. Masked entries get
            exactly 0; a row with no valid entry returns all zeros (and zero gradient).
        dim: the dimension that sums to 1.
        compiled: solve with ``torch.compile``d whole-row kernels (see ``_compiled``): the fastest
            path, same result; the first call compiles for tens of seconds and needs a C++
            compiler (CPU) or Triton (CUDA).

    Returns:
        Probabilities with the shape and dtype of ``z``.
    """
    return _apply(z, mask, 1.0, dim, compiled)


def _check_lam(lam: Tensor | float) -> None:
    if isinstance(lam, Tensor):
        ok = bool(torch.isfinite(lam).all()) and bool((lam < 1).all())
        got = lam.max().item() if lam.numel() else None
    else:
        ok, got = float("-inf") < lam < 1, lam
    if not ok:
        raise ValueError(
            f"lam must be finite and < 1 (got {got}); lam = 0 is sparsemax, lam -> 1 approaches one-hot, "
            "lam -> -inf approaches uniform"
        )


def sparsegen_lin(
    z: Tensor, lam: Tensor | float = 0.0, mask: Tensor | None = None, dim: int = -1, compiled: bool = False
) -> Tensor:
    """SSAF's attention transform: sparsegen-lin with sparsity control ``lam < 1``.

    Solves ``argmin_{p in simplex} ||p - z||^2 - lam * ||p||^2`` along ``dim``, whose solution is
    ``sparsemax(z / (1 - lam))``. ``lam = 0`` is sparsemax; larger ``lam`` is never less sparse,
    ``lam -> 1`` tends to one-hot and ``lam -> -inf`` to uniform.

    Args:
        z: scores (see :func:`sparsemax`).
        lam: a float, or a tensor broadcastable to ``z`` with size 1 along ``dim`` (e.g. one value
            per head, shape (H, 1, 1) for (B, H, Q, K) scores). A tensor that requires grad gets one.
        mask: optional boolean mask, True = may attend.
        dim: the dimension that sums to 1.
        compiled: use the compiled kernels (see :func:`sparsemax`).
    """
    _check_lam(lam)
    return _apply(z, mask, 1.0 / (1.0 - lam), dim, compiled)
