"""Benchmark the sparse transforms' CPU backward: softmax's fused kernel against the same map elementwise.

The folded path's backward takes the support ``w = sign(p)``, then ``weighted_backward`` computes
``scale * w * (g - sum(g w) / sum(w))`` with one call of softmax's backward on ``w / sum(w)``; written
out, the same map is a product, a row sum, a subtraction, a product and a scale, a pass over the whole
tensor each. Both run interleaved on the same inputs (the support of
``sparsegen_lin(-8)`` on attention-like scores), in alternating order, so the machine's drift hits both
alike; the table gives the minimum and median of ``--repeats`` calls and the ratio of the medians. Both
include taking the support; neither includes autograd's own overhead or the NaN-row fill, which are the
same for both.
Run: ``python scripts/bench_backward.py [--threads 2] [--repeats 40] [--lam -8]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import Tensor

import ssaf.transforms as T
from ssaf.allocator import keep_freed_memory
from ssaf.benchmarking import SHAPES, scores, table_head, timings
from ssaf.transforms._common import weighted_backward


def elementwise(g: Tensor, p: Tensor, k: Tensor, scale: float, on: Tensor, tmp: Tensor) -> Tensor:
    """The folded path's backward before 2026-12-02: the support, then the map written out."""
    torch.sign(p, out=on)
    mean = torch.mul(g, on, out=tmp).sum(-1, keepdim=True) / k.clamp(min=1)
    grad = torch.sub(g, mean).mul_(on)
    return grad if scale == 1.0 else grad.mul_(scale)


def fused(g: Tensor, p: Tensor, k: Tensor, scale: float, on: Tensor) -> Tensor:
    """Its backward now (``_FoldedSparsemaxFunction.backward``)."""
    return weighted_backward(g, torch.sign(p, out=on), k, scale)


def measure(shape: tuple[int, ...], lam: float, repeats: int) -> str:
    """One table row: both forms of the backward, interleaved, on the support of ``sparsegen_lin(lam)``."""
    scale = 1 / (1 - lam)
    p = T.sparsegen_lin(scores(shape, "cpu"), lam)
    g = torch.randn(p.shape, generator=torch.Generator().manual_seed(2))
    k = torch.sign(p).sum(-1, keepdim=True)
    on, tmp = torch.empty_like(p), torch.empty_like(p)
    calls = {
        "elementwise": lambda: elementwise(g, p, k, scale, on, tmp),
        "fused": lambda: fused(g, p, k, scale, on),
    }
    times = timings(calls, repeats, warmup=3)
    diff = float((calls["elementwise"]() - calls["fused"]()).abs().max())
    e, f = times["elementwise"], times["fused"]
    ratio = statistics.median(e) / statistics.median(f)
    return (
        f"| {shape} | {min(e):.2f} / {statistics.median(e):.2f} | {min(f):.2f} / {statistics.median(f):.2f} "
        f"| {ratio:.2f} | {diff:.1e} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--lam", type=float, default=-8.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as bench_transforms.py: time arithmetic, not page faults
    print(f"torch {torch.__version__}, cpu (threads {args.threads}), float32, support of sparsegen_lin({args.lam:g})")
    columns = "elementwise ms (min / median)", "fused ms (min / median)", "elementwise / fused", "max abs diff"
    print(table_head("shape (B,H,L,L)", *columns))
    for shape in SHAPES:
        print(measure(shape, args.lam, args.repeats), flush=True)


if __name__ == "__main__":
    main()
