"""Candidate extraction: the few entries of each row that can be in a sparse transform's support.

Every threshold transform here has the form ``p_i = h(x_i - tau)`` with ``x = s * z`` and ``h(r) = 0``
for ``r <= 0``, and no probability exceeds 1, which gives ``tau >= max(x) - 1``. Entries with
``x_i <= max(x) - 1`` are therefore zero whatever the rest of the row. For attention scores this
rules out most of the row after one comparison, so the threshold search, the output and the backward
pass all run on a short flat list of candidates (segment sums keyed by row) instead of the full
(B, H, Q, K) tensor, and the output is written by a single scatter into zeros. There is no sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssaf.transforms._common import additive_mask, compute_dtype, nonfinite_rows


@dataclass
class Candidates:
    """Entries of a (..., n) tensor that may be non-zero after the transform, as a flat list.

    ``flat`` indexes the contiguous input viewed as 1-D and is sorted, so ``row`` (the row of each
    entry) is sorted too; ``x`` is the scaled score relative to its row max (row max = 0). ``bad``
    lists the rows with a NaN or +inf (no candidates; the caller fills them with NaN).
    """

    flat: Tensor  # (C,) int64
    row: Tensor  # (C,) int64
    x: Tensor  # (C,) compute dtype, s * (z - max)
    n_rows: int
    bad: Tensor | None = None  # (R,) int64 flat row indices, or None


def row_scale(scale: Tensor | float, z: Tensor) -> Tensor | float:
    """A per-row scale flattened to (n_rows,), or the float unchanged."""
    if isinstance(scale, Tensor):
        return scale.to(compute_dtype(z.dtype)).expand(*z.shape[:-1], 1).reshape(-1)
    return scale


def find_candidates(z: Tensor, mask: Tensor | None, scale: Tensor | float) -> Candidates:
    """Entries with ``scale * (z_i - max_valid(z)) > -1`` (the rest are provably zero).

    Args:
        z: (..., n) scores, contiguous.
        mask: optional boolean mask broadcastable to ``z`` (True = valid); masked entries are never
            candidates, and a row without valid entries has none.
        scale: positive float or tensor broadcastable to (..., 1).

    The test compares the scores themselves with a per-row bound ``t`` (no full-size subtraction), so
    ``t`` must not round above the true bound ``max - 1/scale``: at the magnitude of a large maximum
    (4e7 in fp32) ``1/scale`` can be below half an ulp and ``max - 1/scale`` rounds to ``max`` itself,
    which would exclude the maximum and return a zero row. ``t`` is therefore taken one ulp below
    ``fl(max - reach)``; extra candidates below the bound are harmless to the solvers.
    """
    n = z.shape[-1]
    n_rows = z.numel() // max(n, 1)
    cd = compute_dtype(z.dtype)
    zz = z if mask is None else z + additive_mask(mask, cd, float("-inf"))
    m = zz.amax(dim=-1, keepdim=True).to(cd)  # (..., 1); -inf for fully masked rows
    bad = nonfinite_rows(m)
    s = scale.to(cd) if isinstance(scale, Tensor) else scale
    reach = (1.0 / s) * (1 + 1e-5)  # slack for rounding in x = s * (z - m) below
    t = torch.nextafter(m - reach, torch.tensor(float("-inf"), dtype=cd))
    # No candidates in a fully masked row (-inf) or a NaN / +inf row (its candidates would be NaN).
    t = torch.where(torch.isfinite(m), t, float("inf"))  # in cd: a half-precision bound could round up
    flat = nonzero_flat(zz > t)  # (C,) sorted
    # Integer division is slow on CPU; a shift does it when n is a power of two (64, 128, ...).
    row = flat >> (n.bit_length() - 1) if n & (n - 1) == 0 else torch.div(flat, n, rounding_mode="floor")
    s_row = row_scale(s, z)
    x = zz.view(-1).index_select(0, flat).to(cd) - gather(m.view(-1), row)
    x = x * (gather(s_row, row) if isinstance(s_row, Tensor) else s_row)
    return Candidates(flat=flat, row=row, x=x, n_rows=n_rows, bad=bad)


def nonzero_flat(b: Tensor) -> Tensor:
    """Sorted flat indices of the True entries of a contiguous boolean tensor.

    Candidates are few, so most 8-byte words of the mask are zero: finding the non-zero words first
    (an int64 view, 8x fewer elements) and then the True bytes inside them is ~2x faster on CPU than
    ``nonzero`` over every byte.
    """
    v = b.reshape(-1)
    if v.numel() % 8 or not v.is_contiguous():
        return v.nonzero().squeeze(1)
    words = v.view(torch.int64).nonzero().squeeze(1)  # (W,) words holding at least one True
    j = v.view(-1, 8).index_select(0, words).view(-1).nonzero().squeeze(1)  # (C,) into those words
    return gather(words, j >> 3) * 8 + (j & 7)


def select(keep: Tensor, *ts: Tensor) -> list[Tensor]:
    """The entries of each 1-D tensor where ``keep`` is True (one nonzero for all of them)."""
    idx = keep.nonzero().squeeze(1)
    return [torch.take(t, idx) for t in ts]


def gather(t: Tensor, idx: Tensor) -> Tensor:
    """``t[idx]`` for 1-D tensors (take is ~2x faster than index_select and ~4x than ``t[idx]`` on CPU)."""
    return torch.take(t, idx)


def segment_sum(values: Tensor, row: Tensor, n_rows: int) -> Tensor:
    """Sum of ``values`` per row id: (C,) -> (n_rows,)."""
    if values.device.type == "cpu" and values.numel():
        # ~2x faster than index_add_ on CPU; on CUDA bincount syncs, index_add_ does not.
        return torch.bincount(row, weights=values, minlength=n_rows)
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add_(0, row, values)


def segment_count(row: Tensor, n_rows: int, dtype: torch.dtype) -> Tensor:
    """Number of entries per row id: (C,) -> (n_rows,) in ``dtype``."""
    if row.device.type == "cpu":
        return torch.bincount(row, minlength=n_rows).to(dtype)
    return torch.zeros(n_rows, dtype=dtype, device=row.device).index_add_(0, row, torch.ones_like(row, dtype=dtype))


def scatter_rows(values: Tensor, flat: Tensor, like: Tensor) -> Tensor:
    """A tensor shaped and typed like ``like``, zero except ``values`` at the flat indices."""
    out = torch.zeros_like(like, memory_format=torch.contiguous_format)
    out.view(-1).index_copy_(0, flat, values.to(out.dtype))
    return out
