"""Shared plumbing for the transforms: argument checks, dtype policy, masking and the non-finite rule.

Every transform works on the last dimension. Public functions move ``dim`` to the end, call the
kernel, and move it back, so the kernels only ever see rows.

Non-finite scores, one rule for every transform and path: ``-inf`` means "may not attend" (like a False
in ``mask``); a row holding a NaN or ``+inf`` anywhere (also at a masked position, as an additive mask
would carry it) comes back as NaN in every entry, with a NaN gradient, as ``torch.softmax`` gives. A
zero row would hide a diverging model from a NaN-loss check.
"""

from __future__ import annotations

import threading
import warnings

import torch
from torch import Tensor

from ssaf.registry import PARAMS

_warned: set[str] = set()
_scratch = threading.local()


def scratch(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device, slot: int) -> Tensor:
    """A temporary tensor of ``shape`` from a per-thread cache of one buffer per ``slot`` (and dtype, device).

    Why: a fresh CPU tensor of a few MB is new memory from the OS, and touching it costs page faults
    that took as long as the arithmetic (an out-of-place op on a 6 MB attention tensor: ~1 ms, in place:
    ~0.15 ms). Temporaries of the CPU path reuse these buffers instead; the cache holds the largest of
    each slot seen so far (at most a few attention tensors per thread; ``release_scratch`` frees them).
    Never returned, never saved for backward: the next call overwrites it.
    """
    cache = getattr(_scratch, "buffers", None)
    if cache is None:
        cache = _scratch.buffers = {}
    numel = 1
    for d in shape:
        numel *= d
    key = (slot, dtype, device)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def release_scratch() -> None:
    """Free this thread's cached temporaries (see :func:`scratch`)."""
    _scratch.buffers = {}


def warn_once(key: str, message: str) -> None:
    """Warn the first time ``key`` comes up in this process (Python's own filter repeats a warning whose
    text changes, e.g. one that names a measured value)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def check_input(name: str, z: object, dim: object) -> None:
    """The scores are a floating tensor and ``dim`` an int (``sparsemax(x, mask)``, the pre-entmax order of
    arguments, would otherwise fail deep inside with an unrelated message)."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{name}: X must be a torch.Tensor, got {type(z).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        hint = "; pass a mask as mask=..." if isinstance(dim, Tensor) else ""
        raise TypeError(f"{name}: dim must be an int, got {type(dim).__name__}{hint}")


def check_k(name: str, k: object) -> None:
    """entmax's ``k`` (the size of its partial sort) only tunes speed there; ssaf sorts nothing."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise TypeError(f"{name}: k must be None or a positive int (entmax's partial-sort size), got {k!r}")


def no_double_backward(name: str) -> None:
    """Called at the top of a hand-written backward: under ``create_graph=True`` its result would silently
    carry no second-order terms, so it says so instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{name}: double backward (create_graph=True, e.g. a gradient penalty or a Hessian-vector "
            "product) is not supported by ssaf's hand-written gradients; use softmax there, or compute "
            "second-order terms by finite differences"
        )


def weighted_backward(g: Tensor, w: Tensor, wsum: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """``scale * w * (g - sum(g w) / sum(w))`` per row (..., n): the vector-Jacobian product through
    ``diag(w) - w w^T / sum(w)``, the Jacobian of sparsemax (w = 1 on the support) and of alpha-entmax
    (w = p^(2 - alpha)) with respect to its scaled scores.

    Why softmax's backward: for ``q = w / sum(w)`` it computes ``q * (g - sum(g q))``, this map divided by
    ``sum(w)``, in one fused pass per row; written elementwise (product, row sum, subtraction, product,
    scale) the same map took 1.44-1.61x as long on 2 CPU cores (``scripts/bench_backward.py``). Rows with
    ``sum(w) = 0`` get zeros.

    Args:
        g: the incoming gradient, already in ``w``'s dtype (softmax's backward accepts no other).
        w: (..., n) nonnegative weights, 0 off the support; overwritten (it becomes ``q``).
        wsum: (..., 1) the row sums of ``w``.
        scale: a float or (..., 1) factor (the chain rule through scores scaled before the transform),
            applied in the same pass as ``sum(w)``.
    """
    wsum = wsum.clamp(min=torch.finfo(w.dtype).tiny)
    q = w.div_(wsum)
    return torch.ops.aten._softmax_backward_data(g, q, -1, w.dtype).mul_(wsum * scale)


def bad_rows(m: Tensor) -> Tensor:
    """Rows whose (masked) maximum ``m`` (..., 1) is NaN or +inf: a NaN or +inf among their scores."""
    return torch.isnan(m) | (m == float("inf"))


def fill_rows(t: Tensor, rows: Tensor | None, value: float) -> Tensor:
    """``t`` (..., n) with the rows listed in ``rows`` (flat row indices, or None) set to ``value``, in place."""
    if rows is not None and rows.numel():
        t.view(-1, t.shape[-1]).index_fill_(0, rows, value)
    return t


def nonfinite_rows(m: Tensor) -> Tensor | None:
    """Flat indices of the rows that follow the NaN rule (see module doc), or None when there are none.

    On CPU the test is free; on an accelerator it would make the host wait, so there the dense paths
    mark such rows with ``torch.where`` instead.
    """
    bad = bad_rows(m).view(-1)
    return bad.nonzero().squeeze(1) if bool(bad.any()) else None


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


def check_param(function: str, name: str, value: Tensor | float) -> None:
    """A transform parameter's range, as the config checks it (``ssaf.registry.PARAMS[name]``); a tensor by
    its extremes (NaN among them if it holds one), with one wait for the device."""
    if isinstance(value, Tensor):
        if value.numel():
            for extreme in torch.stack(value.detach().aminmax()).tolist():
                PARAMS[name].check(extreme)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{function}: {name} must be a float or a tensor, got {type(value).__name__}")
    PARAMS[name].check(value)
