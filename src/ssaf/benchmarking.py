"""What the benchmark scripts (``scripts/bench_*.py``) share: the timing loop, attention-like inputs and the
markdown table's head. Scripts import this module, never each other.

``timings`` is the one place that reads the clock: warm-up calls first (compilation, autotuning, the
allocator's first requests), then ``repeats`` rounds in which every candidate runs once, in an order
rotated every round, so that this machine's drift (2-5x over minutes) hits every candidate alike and the
ratios of one table compare like with like. A single candidate is the same loop with nothing to rotate.
On CUDA the device is synchronised around each timed call, so a time is the kernel's, not its launch's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

# Attention shapes (B, H, L, L) of the CPU tables: batch 32 at 64 tokens, 8 at 128, 4 at 384 (SQuAD)
SHAPES = [(32, 12, 64, 64), (8, 12, 128, 128), (4, 12, 384, 384)]


def timings(
    calls: Mapping[str, Callable[..., object]],
    repeats: int,
    *,
    warmup: int = 2,
    setup: Callable[[], tuple[Any, ...]] | None = None,
    cuda: bool = False,
) -> dict[str, list[float]]:
    """Milliseconds of ``repeats`` calls of each of ``calls``, by name, after ``warmup`` untimed calls of each.

    Round i runs the candidates in their given order rotated by i. ``setup``, when given, runs before every
    call, untimed, and its result is passed to the call as positional arguments (fresh autograd leaves for
    a backward, say). ``cuda``: synchronise the device before starting and after stopping the clock.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    sync = torch.cuda.synchronize if cuda else _nothing

    def run(call: Callable[..., object]) -> float:
        args = setup() if setup is not None else ()
        sync()
        start = time.perf_counter()
        call(*args)
        sync()
        return (time.perf_counter() - start) * 1e3

    for _ in range(warmup):
        for call in calls.values():
            run(call)
    order = list(calls.items())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats):
        j = i % len(order)
        for name, call in order[j:] + order[:j]:
            times[name].append(run(call))
    return times


def median_ms(call: Callable[..., object], repeats: int, **kwargs: Any) -> float:
    """The median of ``timings`` for one call (keywords as there)."""
    return statistics.median(timings({"call": call}, repeats, **kwargs)["call"])


def _nothing() -> None:
    return None


def table_head(*columns: str) -> str:
    """A markdown table's header and separator lines, one cell per column."""
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def scores(shape: tuple[int, ...], device: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> Tensor:
    """Attention-like scores q.k / sqrt(d) with d = 64 and q, k ~ N(0, 2^2): std about 4."""
    g = torch.Generator().manual_seed(seed)
    b, h, lq, lk = shape
    q = torch.randn(b, h, lq, 64, generator=g) * 2
    k = torch.randn(b, h, lk, 64, generator=g) * 2
    return (q @ k.transpose(-1, -2) / 8).to(device=device, dtype=dtype)


def padding_mask(shape: tuple[int, ...], device: str, seed: int = 1) -> Tensor:
    """(B, 1, 1, K) key mask: each sequence keeps between half and all of its positions."""
    g = torch.Generator().manual_seed(seed)
    b, _, _, lk = shape
    lengths = torch.randint(lk // 2, lk + 1, (b,), generator=g)
    return (torch.arange(lk)[None, :] < lengths[:, None]).view(b, 1, 1, lk).to(device)
