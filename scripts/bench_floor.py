"""How fast could an eager (uncompiled) exact sparsegen-lin forward be? A measured floor, against ssaf's.

The "ideal" row is what ssaf's kind of search (Michelot's passes over whole rows, eager torch) costs when
it is handed the answer: the row maximum and the shift, then two passes (subtract, clamp, sum, sign, sum)
from a lower bound just below the exact threshold (the first finds the support, the second confirms it),
then the output and the scale. It writes into preallocated buffers and skips the mask and NaN-row
handling. A real search must also find its bound and finish the rows that two passes do not settle, so
this row is a floor for that schedule (not for every conceivable eager program). All three
calls run interleaved on the same scores; medians of ``--repeats``, ratios to softmax's forward; the
last column (the largest absolute difference from ssaf's output) checks that the ideal row computes the
same probabilities.
Run: ``python scripts/bench_floor.py [--threads 2] [--repeats 15] [--lam -8,-2,0.5]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import Tensor

import ssaf.transforms as T
from ssaf.allocator import keep_freed_memory
from ssaf.benchmarking import SHAPES, scores, table_head, timings


def exact_threshold(z: Tensor, lam: float) -> Tensor:
    """tau (..., 1) in shifted coordinates: ``p = scale * max(z - max(z) - tau, 0)``, read off ssaf's answer."""
    scale = 1 / (1 - lam)
    p = T.sparsegen_lin(z, lam)
    x = z - z.amax(-1, keepdim=True)
    return torch.where(p > 0, x - p / scale, float("inf")).amin(-1, keepdim=True)


def ideal_forward(z: Tensor, lam: float, tau: Tensor, x: Tensor, r: Tensor) -> Tensor:
    """Two Michelot passes from a bound just below the known threshold ``tau``, with preallocated buffers."""
    scale = 1 / (1 - lam)
    target = 1 / scale
    torch.sub(z, z.amax(-1, keepdim=True), out=x)
    t = tau - 1e-3
    for _ in range(2):
        torch.sub(x, t, out=r).clamp_(min=0)
        total = r.sum(-1, keepdim=True)
        k = torch.sign(r, out=r).sum(-1, keepdim=True)
        t = t + (total - target) / k
    return torch.sub(x, t, out=r).clamp_(min=0).mul_(scale)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--lam", default="-8,-2,0.5")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as bench_transforms.py: time arithmetic, not page faults
    print(f"torch {torch.__version__}, cpu (threads {args.threads}), float32, forward only, median of {args.repeats}")
    print(
        table_head(
            "shape (B,H,L,L)", "lam", "softmax ms", "ssaf ms", "ideal ms", "ssaf x softmax", "ideal x softmax",
            "max abs diff ideal - ssaf",
        )
    )  # fmt: skip
    for shape in SHAPES:
        z = scores(shape, "cpu")
        x, r = torch.empty_like(z), torch.empty_like(z)
        for lam in (float(v) for v in args.lam.split(",")):
            tau = exact_threshold(z, lam)
            times = timings(
                {
                    "softmax": lambda z=z: torch.softmax(z, -1),
                    "ssaf": lambda z=z, lam=lam: T.sparsegen_lin(z, lam),
                    "ideal": lambda z=z, lam=lam, tau=tau, x=x, r=r: ideal_forward(z, lam, tau, x, r),
                },
                args.repeats,
            )
            ms = {name: statistics.median(t) for name, t in times.items()}
            sm = ms["softmax"]
            diff = float((ideal_forward(z, lam, tau, x, r) - T.sparsegen_lin(z, lam)).abs().max())
            print(
                f"| {shape} | {lam:g} | {sm:.2f} | {ms['ssaf']:.2f} | {ms['ideal']:.2f} | "
                f"{ms['ssaf'] / sm:.1f} | {ms['ideal'] / sm:.1f} | {diff:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
