"""Correctness of the transforms and of the attention adapter on an accelerator (CUDA), in one run.

The unit tests pin every transform to the `entmax` package and to gradcheck on CPU; this script checks
that the same code gives the same answers on another device: outputs and gradients against the float64
CPU result of the same inputs, the simplex and mask invariants, fully masked rows, bf16 (also under
autocast), and a bert-base-shaped model whose padded and unpadded batches agree. Prints one line per
check and exits 1 if any fails.

    python scripts/check_device.py [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import torch
from torch import Tensor

import ssaf.transforms as T

FNS: dict[str, Callable[..., Tensor]] = {
    "softmax": T.softmax,
    "sparsemax": T.sparsemax,
    "sparsegen_lin(-2)": functools.partial(T.sparsegen_lin, lam=-2.0),
    "sparsegen_lin(0.5)": functools.partial(T.sparsegen_lin, lam=0.5),
    "entmax15": T.entmax15,
    "entmax_bisect(1.3)": functools.partial(T.entmax_bisect, alpha=1.3),
    "entmax_bisect(1.75)": functools.partial(T.entmax_bisect, alpha=1.75),
    # compiled=True: the torch.compile'd kernels (Triton on CUDA); the first call compiles
    "sparsemax compiled": functools.partial(T.sparsemax, compiled=True),
    "sparsegen_lin(-2) compiled": functools.partial(T.sparsegen_lin, lam=-2.0, compiled=True),
}
# Forward tolerance (fp32 vs the float64 result); entmax_bisect stops at a 1e-6 row-sum tolerance.
TOL = {"entmax_bisect(1.3)": 2e-6, "entmax_bisect(1.75)": 2e-6}

failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} | {name} | {detail}", flush=True)
    if not ok:
        failures.append(name)


def guarded(name: str, fn: Callable[..., None], *args: object) -> None:
    """Run one check; an exception is a failure with its message, and the other checks still run."""
    try:
        fn(*args)
    except Exception as e:
        check(name, False, f"{type(e).__name__}: {e}")


def inputs(shape: tuple[int, int, int, int], empty: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    z[0, 0, 0, :4] = 2.5  # ties
    b, _, _, k = shape
    lengths = torch.randint(1, k + 1, (b,), generator=g)
    lengths[:empty] = 0  # fully masked sequences
    return z, (torch.arange(k) < lengths[:, None]).view(b, 1, 1, k)


def check_transform(name: str, fn: Callable[..., Tensor], device: str, shape: tuple[int, int, int, int]) -> None:
    z64, m = inputs(shape, empty=1)
    z64 = z64.float().double()  # the same (fp32-representable) input on both sides
    g64 = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = z64.clone().requires_grad_(True)
    ref = fn(x, mask=m)
    ref.backward(g64)
    zd = z64.float().to(device).requires_grad_(True)
    md = m.to(device)
    p = fn(zd, mask=md)
    p.backward(g64.float().to(device))
    err = (p.double().cpu() - ref.detach()).abs().max().item()
    gerr = (zd.grad.double().cpu() - x.grad).abs().max().item() / max(1.0, x.grad.abs().max().item())
    sums = p.detach().sum(-1)
    valid = md.expand_as(p).any(-1)
    sum_err = (sums[valid] - 1).abs().max().item()
    finite = bool(torch.isfinite(p).all() and torch.isfinite(zd.grad).all())
    masked_zero = bool((p.detach()[~md.expand_as(p)] == 0).all())
    empty_zero = bool((p.detach()[0] == 0).all() and (zd.grad[0] == 0).all())
    tol = TOL.get(name, 1e-6)
    ok = err <= tol and gerr <= 1e-4 and sum_err <= 1e-5 and finite and masked_zero and empty_zero
    check(
        f"{name} {shape} fp32",
        ok,
        f"max|p - p64| {err:.1e}, grad rel err {gerr:.1e}, row-sum err {sum_err:.1e}, finite {finite}, "
        f"masked=0 {masked_zero}, empty rows=0 {empty_zero}",
    )


def check_low_precision(name: str, fn: Callable[..., Tensor], device: str) -> None:
    z64, m = inputs((4, 12, 128, 128), empty=1, seed=3)
    md = m.to(device)
    z = z64.to(device)
    for dtype, tol in ((torch.bfloat16, 1e-2), (torch.float16, 1e-3)):
        x = (z * 100).clamp(-1e4, 1e4).to(dtype).requires_grad_(True)  # large values
        p = fn(x, mask=md)
        p.float().sum().backward()
        valid = md.expand_as(p).any(-1)
        sum_err = (p.float().sum(-1)[valid] - 1).abs().max().item()
        ok = p.dtype == dtype and sum_err <= tol and bool(torch.isfinite(p).all() and torch.isfinite(x.grad).all())
        check(f"{name} {str(dtype).removeprefix('torch.')} x100", ok, f"dtype {p.dtype}, row-sum err {sum_err:.1e}")
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
        s = z.float() @ torch.eye(z.shape[-1], device=device, dtype=torch.float32)  # bf16 under autocast
        p = fn(s, mask=md)
    valid = md.expand_as(p).any(-1)
    sum_err = (p.float().sum(-1)[valid] - 1).abs().max().item()
    check(f"{name} autocast bf16", sum_err <= 1e-2 and bool(torch.isfinite(p).all()), f"{s.dtype} -> {p.dtype}")


def check_model(device: str) -> None:
    from transformers import AutoModelForSequenceClassification, BertConfig

    import ssaf

    ssaf.register()  # the attention and the model classes
    from ssaf.attention import AttentionSpec, ssaf_config

    base = BertConfig(num_labels=2)  # bert-base shape, random init
    ids = torch.randint(1000, 29000, (4, 96), generator=torch.Generator().manual_seed(0))
    lengths = [96, 70, 33, 5]
    for spec in (AttentionSpec("softmax"), AttentionSpec("sparse", lam=-1.0), AttentionSpec("entmax15")):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(ssaf_config(base, spec)).to(device).eval()
        mask = (torch.arange(96)[None] < torch.tensor(lengths)[:, None]).long()
        with torch.no_grad():
            padded = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.cpu()
            alone = torch.cat(
                [model(input_ids=ids[i : i + 1, :n].to(device)).logits.cpu() for i, n in enumerate(lengths)]
            )
        err = (padded - alone).abs().max().item()
        check(f"bert-base {spec.transform} padded == unpadded", err < 1e-4, f"max logit diff {err:.1e}")
        if spec.transform == "softmax":
            base.num_labels = 2
            torch.manual_seed(0)
            stock = AutoModelForSequenceClassification.from_config(base, attn_implementation="sdpa").to(device)
            stock.load_state_dict(model.state_dict())
            with torch.no_grad():
                sdpa = stock.eval()(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.cpu()
            err = (padded - sdpa).abs().max().item()
            check("bert-base ssaf softmax == stock sdpa", err < 1e-4, f"max logit diff {err:.1e}")


def check_kernels(device: str) -> None:
    """ssaf.kernels' fused attention against the torch path (float64) at real shapes, fp32 and bf16, padding
    and a fully masked sequence, the gradients of q, k, v, lam and alpha; and a bert-base training step on it."""
    from ssaf import kernels as K

    cases = [("sparsemax", {}), ("sparsegen_lin", {"lam": -8.0}), ("entmax15", {}), ("entmax_bisect", {"alpha": 1.3})]
    for shape in ((32, 12, 128, 64), (16, 12, 384, 64), (4, 12, 512, 128), (8, 12, 128, 32)):
        b, h, length, d = shape
        g = torch.Generator().manual_seed(0)
        q, k, v, do = (torch.randn(b, h, length, d, generator=g, dtype=torch.float64).to(device) for _ in range(4))
        kpm = torch.ones(b, length, dtype=torch.bool)
        kpm[0, length // 2 :] = False
        kpm[1] = False
        kpm = kpm.to(device)
        for transform, params in cases:
            for dtype in (torch.float32, torch.bfloat16):
                outs = []
                for dt, backend in ((torch.float64, "torch"), (dtype, "triton")):
                    leaves = [t.to(dt).requires_grad_() for t in (q, k, v)]
                    kw = {
                        n: torch.full((h,), x, dtype=dt, device=device, requires_grad=True) for n, x in params.items()
                    }
                    out = K.sparse_attention(*leaves, transform, key_padding_mask=kpm, backend=backend, **kw)
                    out.backward(do.to(dt))
                    outs.append([out.detach(), *(t.grad for t in leaves), *(t.grad for t in kw.values())])
                tol = 3e-2 if dtype == torch.bfloat16 else 2e-4
                errs = [
                    ((a.double() - e).abs() / (1 + e.abs())).max().item() for a, e in zip(outs[1], outs[0], strict=True)
                ]
                finite = all(bool(torch.isfinite(a).all()) for a in outs[1])
                name = f"kernel {transform} {str(dtype).removeprefix('torch.')} {shape}"
                check(
                    name,
                    finite and max(errs) <= tol,
                    "rel err out/dq/dk/dv/dparam " + " ".join(f"{e:.1e}" for e in errs),
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({name})")
    torch.backends.cuda.matmul.allow_tf32 = False  # compare fp32 with fp32
    for fname, fn in FNS.items():
        for shape in ((3, 4, 17, 33), (4, 12, 128, 128), (2, 12, 384, 384)):
            guarded(f"{fname} {shape}", check_transform, fname, fn, args.device, shape)
        guarded(f"{fname} low precision", check_low_precision, fname, fn, args.device)
    guarded("bert-base model", check_model, args.device)
    if args.device.startswith("cuda"):
        guarded("fused kernels", check_kernels, args.device)
    print(f"{len(failures)} failed" + (": " + ", ".join(failures) if failures else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
