"""Shared plumbing for the transforms: argument checks, dtype policy and masking.

Every transform works on the last dimension. Public functions move ``dim`` to the end, call the
kernel, and move it back, so the kernels only ever see rows.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are solved in fp32 (thresholds need the mantissa); fp64 stays fp64."""
    if not dtype.is_floating_point:
        raise ValueError(f"scores must be a floating-point tensor, got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


def check_mask(mask: Tensor | None, z: Tensor) -> None:
    """A mask is boolean (True = may attend) and broadcasts to the scores without growing them."""
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
            "convert an additive float mask with `mask = additive_mask == 0`"
        )
    try:
        shape = torch.broadcast_shapes(mask.shape, z.shape)
    except RuntimeError:
        shape = None
    if shape != z.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to scores of shape {tuple(z.shape)}; "
            "give it the scores' shape or size-1 dimensions where it is shared, e.g. (B, 1, 1, K)"
        )


def additive_mask(mask: Tensor, dtype: torch.dtype, value: float) -> Tensor:
    """A bias with ``value`` where ``mask`` is False and 0 elsewhere, at the mask's (often broadcast) size.

    Adding it to the scores is ~3x cheaper than ``masked_fill`` with a broadcast (B, 1, 1, K) mask.
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, value)


def check_dim(z: Tensor, dim: int) -> int:
    if not -z.dim() <= dim < z.dim():
        raise ValueError(f"dim={dim} is out of range for scores with {z.dim()} dimensions")
    return dim % z.dim()


def to_last(t: Tensor | None, dim: int) -> Tensor | None:
    """Move ``dim`` to the end (a view); size-1 broadcast dims move too, so shapes stay compatible."""
    if t is None or dim == t.dim() - 1:
        return t
    return t.movedim(dim, -1)


def from_last(t: Tensor, dim: int) -> Tensor:
    if dim == t.dim() - 1:
        return t
    return t.movedim(-1, dim)


def row_param(param: Tensor | float, z: Tensor, d: int, name: str) -> Tensor | float:
    """A per-row parameter (lam, alpha, ...) laid out like the scores after ``to_last(z, d)``.

    A tensor must broadcast to ``z`` with size 1 along ``d`` (one value per row, e.g. per head:
    (H, 1, 1) for (B, H, Q, K) scores); it gets ``z``'s number of dimensions and its ``d`` moved last.
    """
    if not isinstance(param, Tensor):
        return float(param)
    if param.dim() > z.dim():
        raise ValueError(f"{name} of shape {tuple(param.shape)} has more dimensions than scores {tuple(z.shape)}")
    a = param.reshape((1,) * (z.dim() - param.dim()) + tuple(param.shape))
    try:
        ok = a.shape[d] == 1 and torch.broadcast_shapes(a.shape, z.shape) == z.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} of shape {tuple(param.shape)} must broadcast to scores {tuple(z.shape)} with size 1 "
            f"along dim {d} (one value per row, e.g. per head: (H, 1, 1))"
        )
    return a.movedim(d, -1)


def sum_to_shape(g: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient back to the shape of the parameter it belongs to."""
    if g.shape == shape:
        return g
    lead = g.dim() - len(shape)
    g = g.sum(dim=tuple(range(lead))) if lead > 0 else g
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(dim=dims, keepdim=True) if dims else g
