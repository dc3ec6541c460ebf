"""Benchmark whole attention (scores, transform, P.V), forward and forward+backward, in one run (GPU).

Rows per shape (B, H, L, D) and padding: sdpa (FlashAttention-2: the softmax limit), eager softmax, ssaf's
torch path (``backend="torch"``: the transform on materialised scores), ssaf's fused Triton kernel, the
`entmax` package's transform inside the same eager attention, and AdaSplash (PyPI ``adasplash``) at the same
alpha (2 for sparsemax, 1.5 for entmax15). Prints median ms and the ratio to sdpa; rows whose package is
missing are skipped with a note. bf16 by default; padding keeps 50-100% of each sequence's keys.

    python scripts/bench_attention.py [--dtype bfloat16] [--repeats 20] [--shapes all|tiny] [--device cuda]

On CPU it runs only under Triton's interpreter (TRITON_INTERPRET=1, ``--shapes tiny``): a smoke test of the
script, no speed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ssaf import kernels as K
from ssaf import transforms as T
from ssaf.benchmarking import median_ms

SHAPES = [(32, 12, 128, 64), (16, 12, 384, 64), (8, 12, 512, 64)]
TINY = [(2, 2, 32, 16)]
TRANSFORMS = [("sparsemax", {}, 2.0), ("sparsegen_lin", {"lam": -8.0}, None), ("entmax15", {}, 1.5),
              ("entmax_bisect", {"alpha": 1.3}, None)]  # fmt: skip
Fn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def timed(fn: Fn, q: Tensor, k: Tensor, v: Tensor, kpm: Tensor | None, backward: bool, repeats: int) -> float:
    """Median ms of ``fn`` (and its backward) on fresh leaves each call (made untimed); 3 warm-up calls:
    compilation and autotuning."""
    do = torch.randn_like(q)

    def call(*leaves: Tensor) -> None:
        out = fn(*leaves, kpm)
        if backward:
            out.backward(do)

    def leaves() -> tuple[Tensor, ...]:
        return tuple(t.detach().requires_grad_(backward) for t in (q, k, v))

    return median_ms(call, repeats, warmup=3, setup=leaves, cuda=q.is_cuda)


def eager(transform: Callable[[Tensor, Tensor | None], Tensor]) -> Fn:
    def fn(q: Tensor, k: Tensor, v: Tensor, kpm: Tensor | None) -> Tensor:
        s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        return transform(s, None if kpm is None else kpm[:, None, None, :]).to(v.dtype) @ v

    return fn


def package(name: str, params: dict) -> Fn | None:
    try:
        import entmax
    except ImportError:
        return None
    scale = 1.0 / (1.0 - params["lam"]) if "lam" in params else 1.0
    fn = {
        "sparsemax": lambda s: entmax.sparsemax(s, -1),
        "sparsegen_lin": lambda s: entmax.sparsemax(s * scale, -1),
        "entmax15": lambda s: entmax.entmax15(s, -1),
        "entmax_bisect": lambda s: entmax.entmax_bisect(s, params.get("alpha", 1.5), -1),
    }[name]
    return eager(lambda s, m: fn((s if m is None else s.masked_fill(~m, float("-inf"))).float()))


def adasplash(alpha: float | None) -> Fn | None:
    if alpha is None:
        return None
    try:
        from adasplash import adasplash_v1
    except ImportError:
        return None

    def fn(q: Tensor, k: Tensor, v: Tensor, kpm: Tensor | None) -> Tensor:
        lengths = None if kpm is None else kpm.sum(-1).to(torch.int32)
        return adasplash_v1(q, k, v, alpha=alpha, is_causal=False, varlen=lengths, niter=10)

    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--shapes", default="all", choices=["all", "tiny"])
    args = ap.parse_args()
    if args.device == "cpu" and not K.interpreted():
        ap.error("on CPU the kernels run only under TRITON_INTERPRET=1 (a smoke test, no speed)")
    dtype = getattr(torch, args.dtype if args.device != "cpu" else "float32")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "Triton interpreter"
    print(f"torch {torch.__version__}, {where}, {dtype}, median of {args.repeats}; x = time / sdpa's")
    print("| shape (B,H,L,D) | mask | attention | fwd ms | fwd x sdpa | fwd+bwd ms | f+b x sdpa |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES if args.shapes == "all" else TINY:
        b, h, length, d = shape
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, h, length, d, generator=g).to(args.device, dtype) for _ in range(3))
        for padded in (False, True):
            kpm = None
            if padded:
                lengths = torch.randint(length // 2, length + 1, (b,), generator=g)
                kpm = (torch.arange(length)[None] < lengths[:, None]).to(args.device)

            def sdpa(q, k, v, m):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=None if m is None else m[:, None, None, :])

            rows: list[tuple[str, Fn | None]] = [
                ("sdpa (FlashAttention-2)", sdpa),
                ("eager softmax", eager(lambda s, m: T.softmax(s, mask=m))),
            ]
            for name, params, alpha in TRANSFORMS:
                label = name + "".join(f" {p}={x:g}" for p, x in params.items())
                rows += [
                    (f"{label}: ssaf torch path", lambda q, k, v, m, n=name, p=params: K.sparse_attention(
                        q, k, v, n, key_padding_mask=m, backend="torch", **p)),
                    (f"{label}: ssaf Triton", lambda q, k, v, m, n=name, p=params: K.sparse_attention(
                        q, k, v, n, key_padding_mask=m, backend="triton", **p)),
                    (f"{label}: entmax package", package(name, params)),
                    (f"{label}: AdaSplash (alpha {alpha:g})" if alpha else f"{label}: AdaSplash", adasplash(alpha)),
                ]  # fmt: skip
            base_f = base_b = None
            for label, fn in rows:
                if fn is None:
                    continue
                try:
                    f = timed(fn, q, k, v, kpm, False, args.repeats)
                    fb = timed(fn, q, k, v, kpm, True, args.repeats)
                except Exception as e:  # a row that cannot run (an unsupported shape) is named, the rest go on
                    why = f"{type(e).__name__}: {str(e)[:80]}"
                    print(f"| {shape} | {'pad' if padded else 'none'} | {label} | failed: {why} | | | |")
                    continue
                base_f, base_b = base_f or f, base_b or fb
                print(f"| {shape} | {'pad' if padded else 'none'} | {label} | {f:.2f} | {f / base_f:.2f} | {fb:.2f} "
                      f"| {fb / base_b:.2f} |", flush=True)  # fmt: skip
    missing = [n for n, ok in (("entmax", package("sparsemax", {})), ("adasplash", adasplash(2.0))) if ok is None]
    if missing:
        print(f"not installed, rows skipped: {', '.join(missing)}")


if __name__ == "__main__":
    main()
