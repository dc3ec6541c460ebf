"""Draw the attention of one or two saved models on a sentence (or sentence pair).

    python scripts/visualize_attention.py outputs/sst2/softmax/<run>/model outputs/sst2/sparse/<run>/model \
        --text "a gripping , beautifully acted film" --out reports/attention

Writes, per model, ``<name>_all_heads.png`` (every layer x head, exact zeros white), and for all models
together ``side_by_side.png`` (one layer, readable tokens) and ``zeros_summary.png`` (zero fraction per
layer and head).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: chosen here, in the CLI, not when ssaf.viz is imported
import matplotlib.pyplot as plt

from ssaf.viz import (
    all_heads_figure,
    example_attention,
    load_checkpoint,
    side_by_side_figure,
    zero_fraction_figure,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="one or two saved model directories (run_dir/model)")
    ap.add_argument("--text", required=True, help="the sentence (or premise / question)")
    ap.add_argument("--text-pair", default=None, help="the second sentence (hypothesis / context)")
    ap.add_argument("--names", nargs="*", help="labels for the models (default: their folder names)")
    ap.add_argument("--layer", type=int, default=-1, help="layer for the side-by-side view (default: last)")
    ap.add_argument(
        "--head", type=int, default=0, help="head for the side-by-side view (default 0; -1: mean over heads, "
        "which hides the exact zeros of a sparse model)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("reports/attention"))
    args = ap.parse_args(argv)
    if len(args.checkpoints) > 2:
        ap.error("give one checkpoint, or two to compare side by side")
    for ckpt in args.checkpoints:
        if not (Path(ckpt) / "config.json").is_file():
            ap.error(
                f"no such model folder: {ckpt} (expected a saved model with config.json, e.g. a run's "
                "outputs/<task>/<attn>/<time>/model)"
            )
    names = args.names or [
        Path(c).resolve().parent.parent.name + "/" + Path(c).resolve().parent.name for c in args.checkpoints
    ]
    if len(names) != len(args.checkpoints):
        ap.error("--names needs one label per checkpoint")
    args.out.mkdir(parents=True, exist_ok=True)
    all_probs, tokens = [], None
    for ckpt, name in zip(args.checkpoints, names, strict=True):
        model, tok = load_checkpoint(ckpt)
        toks, probs = example_attention(model, tok, args.text, args.text_pair)
        if tokens is not None and toks != tokens:
            raise SystemExit(f"{ckpt} tokenises the text differently; compare models that share a tokenizer")
        tokens = toks
        all_probs.append(probs)
        fig = all_heads_figure(toks, probs, name)
        path = args.out / f"{name.replace('/', '_')}_all_heads.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}")
    assert tokens is not None
    for fig, stem in (
        (
            side_by_side_figure(tokens, all_probs, names, args.layer, None if args.head < 0 else args.head),
            "side_by_side",
        ),
        (zero_fraction_figure(all_probs, names), "zeros_summary"),
    ):
        path = args.out / f"{stem}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
