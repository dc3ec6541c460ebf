"""softmax with a boolean mask, made safe for rows with no valid entry."""

from __future__ import annotations

import torch
from torch import Tensor

from ssaf.transforms._common import additive_mask, check_dim, check_input, check_mask, compute_dtype


def softmax(X: Tensor, dim: int = -1, *, mask: Tensor | None = None) -> Tensor:
    """The entropy-regularised projection onto the simplex: ``argmax_{p in simplex} p.X - sum_i p_i log p_i``.

    Solution ``p_i = exp(X_i) / sum_j exp(X_j)``; dense (no exact zeros) except at masked entries.
    Positional arguments as ``torch.softmax``.

    Args:
        X: scores; fp16/bf16 are computed in fp32 and returned in their own dtype. A row holding a NaN
            or +inf comes back NaN (as ``torch.softmax``).
        dim: the dimension that sums to 1.
        mask: optional boolean tensor broadcastable to ``X``; True = may attend. Masked entries get
            exactly 0 and a row with no valid entry returns all zeros (``torch.softmax`` over -inf
            would give NaN there).
    """
    check_input("softmax", X, dim)
    z = X
    d = check_dim(z, dim)
    check_mask(mask, z)
    cd = compute_dtype(z.dtype)
    if mask is None:
        return torch.softmax(z, dim=d, dtype=cd).to(z.dtype)
    # finfo.min, not -inf, keeps fully masked rows finite (uniform), and exp(finfo.min - max) is exactly 0,
    # so masked entries get exact zeros.
    p = torch.softmax(z.to(cd) + additive_mask(mask, cd, torch.finfo(cd).min), dim=d)
    has_valid = mask.any(dim=d, keepdim=True)
    # Zero the rows with no valid entry (uniform over masked otherwise). On CPU the test is cheaper than
    # the product; on an accelerator it would make the host wait for the device.
    if p.device.type != "cpu" or not bool(has_valid.all()):
        p = p * has_valid
    return p.to(z.dtype)
