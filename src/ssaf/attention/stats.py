"""Per-(layer, head) sparsity statistics of the attention probabilities, measured inside the attention
function (no extra forward pass) while :func:`record_attention_stats` is open."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ssaf import keys
from ssaf.attention.families import attention_modules


class AttentionStats:
    """Running per-(layer, head) sparsity statistics of the attention probabilities.

    For every valid query row (a non-padding position) and its valid keys: the fraction of exact
    zeros, the support size (number of non-zero probabilities) and the entropy ``-sum p log p``.
    Collected inside the attention forward (no extra forward pass), before dropout.

    ``every=k`` measures every k-th forward pass of each layer only: at 384 tokens the statistics cost
    about a third of an evaluation forward pass, and a systematic sample of batches estimates the same
    means (``batches_seen`` / ``batches_measured`` say how many were used).
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"attention statistics: every must be >= 1 (1 = every batch), got {every}")
        self.every = every
        self._calls: dict[int, int] = {}  # layer -> forward passes seen
        self._position = 0  # attention calls so far in the current forward pass
        self._sums: dict[int, Tensor] = {}  # layer -> (3, H): zero fraction, support, entropy sums
        self._rows: dict[int, Tensor] = {}  # layer -> (H,) rows counted

    @torch.no_grad()
    def new_forward(self) -> None:
        """A forward pass of the model starts: the next attention call is layer 0."""
        self._position = 0

    def update(self, module: nn.Module, probs: Tensor, mask: Tensor | None) -> None:
        # The layer is the call's place in the forward pass, not the module: ALBERT calls one shared module
        # for every layer.
        layer = self._position
        self._position += 1
        seen = self._calls[layer] = self._calls.get(layer, 0) + 1
        if (seen - 1) % self.every:
            return
        p = probs.float()
        b, h, q, k = p.shape
        if mask is None:
            valid_keys = torch.full((b, 1, q, 1), float(k), device=p.device)
            row_ok = torch.ones(b, 1, q, device=p.device, dtype=torch.bool)
        else:
            m = mask.expand(b, mask.shape[1], q, k)
            valid_keys = m.sum(-1, keepdim=True).float()
            key_valid = m.any(dim=-2)  # (B, h', K)
            row_ok = (key_valid if q == k else torch.ones_like(m[..., 0])) & (valid_keys[..., 0] > 0)
        # Two passes over the (B, H, Q, K) probabilities; everything else is per row. xlogy(0, 0) = 0.
        support = torch.count_nonzero(p, dim=-1).unsqueeze(-1).float()
        zero_frac = 1 - support / valid_keys.clamp(min=1)
        entropy = -torch.special.xlogy(p, p).sum(-1, keepdim=True)
        w = row_ok.expand(b, h, q).float().unsqueeze(-1)  # (B, H, Q, 1)
        stats = torch.stack([(s * w).sum(dim=(0, 2, 3)) for s in (zero_frac, support, entropy)])  # (3, H)
        self._sums[layer] = self._sums.get(layer, 0) + stats.cpu()
        self._rows[layer] = self._rows.get(layer, 0) + w.sum(dim=(0, 2, 3)).cpu()

    def combine(self, total: Callable[[Tensor], Tensor]) -> None:
        """Turn each process's share into the statistics of the whole evaluation (torchrun: every process
        measured its own batches). ``total`` sums a tensor over the processes; every process calls this, with
        the same layers and heads."""
        measured, seen = sorted(self._sums), sorted(self._calls)
        if measured:
            packed = total(torch.stack([torch.cat([self._sums[i], self._rows[i][None]]) for i in measured]))
            for j, i in enumerate(measured):  # packed: (layers, 3 sums + rows, H)
                self._sums[i], self._rows[i] = packed[j, :3], packed[j, 3]
        if seen:
            calls = total(torch.tensor([float(self._calls[i]) for i in seen], dtype=torch.float64))
            self._calls = {i: int(c) for i, c in zip(seen, calls.tolist(), strict=True)}

    def summary(self) -> dict[str, list[list[float]]]:
        """``{"zero_fraction" | "support" | "entropy": [[value per head] per layer]}`` (means over rows)."""
        out: dict[str, list[list[float]]] = {name: [] for name in keys.STATS}  # the order stacked in update()
        for layer in sorted(self._sums):
            mean = self._sums[layer] / self._rows[layer].clamp(min=1)
            for i, name in enumerate(out):
                out[name].append([round(v, 6) for v in mean[i].tolist()])
        return out

    @property
    def batches_seen(self) -> int:
        return max(self._calls.values(), default=0)

    @property
    def batches_measured(self) -> int:
        return (self.batches_seen + self.every - 1) // self.every

    def means(self) -> dict[str, float]:
        """Means over all layers and heads."""
        s = self.summary()
        return {k: float(sum(map(sum, v)) / max(1, sum(map(len, v)))) for k, v in s.items()}


@contextmanager
def record_attention_stats(model: nn.Module, every: int = 1) -> Iterator[AttentionStats]:
    """Collect :class:`AttentionStats` over every (``every``-th) forward pass run inside the block."""
    stats = AttentionStats(every)
    modules = attention_modules(model)
    for m in modules:
        m._ssaf_recorder = stats  # type: ignore[assignment]
    hook = model.register_forward_pre_hook(lambda *_: stats.new_forward())
    try:
        yield stats
    finally:
        hook.remove()
        for m in modules:
            m._ssaf_recorder = None  # type: ignore[assignment]
