"""Benchmark the attention transforms against torch softmax and the `entmax` package, in one run.

Prints, per attention shape (B, H, L, L) and with/without a padding mask: median milliseconds of the
forward and of forward+backward, the ratio to softmax and to the entmax package's version of the same
transform, and the largest deviation from a float64 reference (a correctness check on the same
inputs). Rows marked "compiled" use ``compiled=True`` (their compilation happens in the warm-up calls).
Run: ``python scripts/bench_transforms.py [--threads 2] [--repeats 15] [--device cpu] [--no-compiled]
[--lam -8,-2,0.5] [--only softmax,sparsegen_lin] [--allocator keep|system]``.

On CPU the allocator is set to keep freed blocks (``ssaf.allocator``) unless ``--allocator system``:
with glibc's default a fresh attention-sized tensor costs page faults or not depending on what was freed
just before, which moved a softmax baseline by 2-5x between cells of one run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor

import ssaf.transforms as T
from ssaf.allocator import keep_freed_memory
from ssaf.benchmarking import SHAPES, median_ms, padding_mask, scores, table_head

try:
    import entmax as E
except ImportError:  # the oracle lives in the dev extra
    E = None

# bert-base fine-tuning on a GPU: batch 32 at 128 tokens, batch 16 at 384 (SQuAD)
GPU_SHAPES = [(32, 12, 128, 128), (16, 12, 384, 384)]
Fn = Callable[[Tensor, Tensor | None], Tensor]


COMPILED = " compiled"  # suffix of the rows run with compiled=True; compared with the same reference


def gen(lam: float) -> str:
    return f"sparsegen_lin({lam:g})"


def ours(compiled: bool, lams: list[float]) -> dict[str, Fn]:
    fns: dict[str, Fn] = {
        "softmax": lambda z, m: T.softmax(z, mask=m),
        "sparsemax": lambda z, m: T.sparsemax(z, mask=m),
        **{gen(lam): (lambda z, m, lam=lam: T.sparsegen_lin(z, lam, mask=m)) for lam in lams},
        "entmax15": lambda z, m: T.entmax15(z, mask=m),
        "entmax_bisect(1.3)": lambda z, m: T.entmax_bisect(z, 1.3, mask=m),
    }
    if compiled:
        fns["sparsemax" + COMPILED] = lambda z, m: T.sparsemax(z, mask=m, compiled=True)
        for lam in lams:
            fns[gen(lam) + COMPILED] = lambda z, m, lam=lam: T.sparsegen_lin(z, lam, mask=m, compiled=True)
    return fns


def reference(lams: list[float]) -> dict[str, Fn]:
    """The baselines: eager-BERT softmax (additive mask) and the entmax package (-inf mask)."""

    def fill(z: Tensor, m: Tensor | None, value: float) -> Tensor:
        return z if m is None else z.masked_fill(~m, value)

    ref: dict[str, Fn] = {"softmax": lambda z, m: torch.softmax(fill(z, m, torch.finfo(z.dtype).min), -1)}
    if E is not None:
        ref["sparsemax"] = lambda z, m: E.sparsemax(fill(z, m, float("-inf")), -1)
        for lam in lams:
            ref[gen(lam)] = lambda z, m, lam=lam: E.sparsemax(fill(z / (1 - lam), m, float("-inf")), -1)
        ref["entmax15"] = lambda z, m: E.entmax15(fill(z, m, float("-inf")), -1)
        ref["entmax_bisect(1.3)"] = lambda z, m: E.entmax_bisect(fill(z, m, float("-inf")), 1.3, -1)
    return ref


def timed(fn: Fn, z: Tensor, m: Tensor | None, backward: bool, repeats: int) -> float:
    """Median ms of ``fn(z, m)`` (and its backward), on a fresh leaf each call (made untimed)."""
    g = torch.randn_like(z)

    def call(x: Tensor) -> None:
        out = fn(x, m)
        if backward:
            out.backward(g)

    return median_ms(call, repeats, setup=lambda: (z.detach().requires_grad_(backward),), cuda=z.is_cuda)


def max_error(fn: Fn, z: Tensor, m: Tensor | None, oracle: Fn) -> float:
    with torch.no_grad():
        exact = oracle(z.double(), m)
        return (fn(z, m).double() - exact).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="all", help="'all', 'gpu' or indices into the shape list, e.g. 0,1")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled=True rows (they compile first)")
    ap.add_argument(
        "--lam", default="-8,-2,0.5", help="SSAF's lams for the sparsegen_lin rows (< 1; -8 is attn=sparse's default)"
    )
    ap.add_argument("--only", default="", help="comma-separated name prefixes of the transforms to run")
    ap.add_argument(
        "--allocator",
        default="keep",
        choices=["keep", "system"],
        help="keep: glibc reuses freed blocks (steady timings); system: the C library's default behaviour",
    )
    args = ap.parse_args()
    kept = args.allocator == "keep" and keep_freed_memory()
    try:
        lams = [float(v) for v in args.lam.split(",")]
    except ValueError:
        ap.error(f"--lam must be comma-separated numbers, got {args.lam!r}")
    if not all(lam < 1 for lam in lams):
        ap.error(f"--lam values must be < 1 (got {args.lam})")
    torch.set_num_threads(args.threads)
    if args.shapes in ("all", "gpu"):
        shapes = SHAPES if args.shapes == "all" else GPU_SHAPES
    else:
        shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    dtype = getattr(torch, args.dtype)
    mine, ref = ours(not args.no_compiled, lams), reference(lams)
    if args.only:
        mine = {k: v for k, v in mine.items() if k == "softmax" or k.startswith(tuple(args.only.split(",")))}
    if E is None:
        print("entmax package not installed (pip install -e '.[dev]'): ratios to it are omitted")
    # The float64 oracle: the package where it exists (independent code), ours otherwise.
    base = {name: name.removesuffix(COMPILED) for name in mine}
    oracle = {name: ref.get(base[name], mine[name]) for name in mine}

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"threads {args.threads}"
    alloc = "freed blocks kept" if kept else "system default"
    print(
        f"torch {torch.__version__}, device {args.device} ({where}), {args.dtype}, median of {args.repeats}, "
        f"allocator: {alloc}"
    )
    print(
        table_head(
            "shape (B,H,L,L)", "mask", "transform", "fwd ms", "fwd x softmax", "fwd x entmax", "fwd+bwd ms",
            "f+b x softmax", "f+b x entmax", "entmax f+b ms", "max abs err vs f64",
        )
    )  # fmt: skip
    for shape in shapes:
        z = scores(shape, args.device, dtype)
        for masked in (False, True):
            m = padding_mask(shape, args.device) if masked else None
            base_f = timed(ref["softmax"], z, m, False, args.repeats)
            base_b = timed(ref["softmax"], z, m, True, args.repeats)
            for name, fn in mine.items():
                f = timed(fn, z, m, False, args.repeats)
                b = timed(fn, z, m, True, args.repeats)
                if base[name] in ref and name != "softmax":
                    rf = timed(ref[base[name]], z, m, False, args.repeats)
                    rb = timed(ref[base[name]], z, m, True, args.repeats)
                    vs_f, vs_b, rb_s = f"{rf / f:.1f}x faster", f"{rb / b:.1f}x faster", f"{rb:.1f}"
                else:
                    vs_f = vs_b = rb_s = "-"
                err = max_error(fn, z, m, oracle[name])
                print(
                    f"| {shape} | {'pad' if masked else 'none'} | {name} | {f:.2f} | {f / base_f:.2f} | {vs_f} "
                    f"| {b:.2f} | {b / base_b:.2f} | {vs_b} | {rb_s} | {err:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
