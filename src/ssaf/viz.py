"""Attention pictures: per-head heatmaps of one example, with exact zeros shown as such."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Colormap


def example_attention(model: Any, tokenizer: Any, text_a: str, text_b: str | None = None) -> tuple[list[str], Any]:
    """Tokens and attention probabilities (layers, heads, L, L) of one example, in eval mode."""
    enc = tokenizer(text_a, text_b, return_tensors="pt", truncation=True, max_length=64)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    model.train(was_training)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    probs = torch.stack([a[0].float().cpu() for a in out.attentions]).numpy()  # (layers, heads, L, L)
    return tokens, probs


def zero_aware_cmap() -> Colormap:
    """Viridis with exact zeros drawn in white (``set_under`` below the smallest positive value)."""
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_under("white")
    return cmap


def draw_heads(ax_grid: Any, tokens: list[str], probs: np.ndarray, title: str = "") -> Any:
    """One heatmap per head of one layer's (H, L, L) probabilities; exact zeros white."""
    cmap = zero_aware_cmap()
    im = None
    for h, ax in enumerate(ax_grid.flat):
        if h >= probs.shape[0]:
            ax.axis("off")
            continue
        im = ax.imshow(probs[h], cmap=cmap, vmin=1e-9, vmax=1.0)
        zeros = (probs[h] == 0).mean()
        ax.set_title(f"{title}head {h} ({zeros:.0%} zeros)", fontsize=7)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=5)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=5)
    return im


def heatmap_figure(model: Any, tokenizer: Any, text_a: str, text_b: str | None = None, layer: int = -1) -> Any:
    """A figure with every head of one layer for one example (W&B logs it at each evaluation)."""
    tokens, probs = example_attention(model, tokenizer, text_a, text_b)
    layer_probs = probs[layer]
    heads = layer_probs.shape[0]
    cols = min(4, heads)
    rows = (heads + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    im = draw_heads(axes, tokens, layer_probs)
    n_layers = probs.shape[0]
    fig.suptitle(f"layer {layer % n_layers} attention (white = exactly 0)", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6)
    return fig


def load_checkpoint(path: str) -> tuple[Any, Any]:
    """A saved ssaf (or stock) model directory -> (model in eval mode, tokenizer)."""
    from transformers import AutoConfig, AutoTokenizer

    import ssaf
    from ssaf import kinds

    ssaf.register()  # the ssaf model classes, for a model saved by ssaf

    cfg = AutoConfig.from_pretrained(path)
    head = kinds.of_architectures(cfg.architectures).load("head")  # the head it was saved with
    return head.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def all_heads_figure(tokens: list[str], probs: np.ndarray, title: str) -> Any:
    """Every layer (rows) x head (columns) of one example; exact zeros white, tokens on the outer axes."""
    n_layers, n_heads = probs.shape[:2]
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.6 * n_heads + 1.5, 1.6 * n_layers + 1.2), squeeze=False)
    cmap = zero_aware_cmap()
    im = None
    for li in range(n_layers):
        for hi in range(n_heads):
            ax = axes[li, hi]
            im = ax.imshow(probs[li, hi], cmap=cmap, vmin=1e-9, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if li == 0:
                ax.set_title(f"head {hi}", fontsize=8)
            if hi == 0:
                ax.set_ylabel(f"layer {li}", fontsize=8)
            zeros = (probs[li, hi] == 0).mean()
            ax.text(
                0.98,
                0.02,
                f"{zeros:.0%}",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=6,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
            )  # fmt: skip  (a white box: readable on dark and white cells alike)
    fig.suptitle(f"{title}: {' '.join(tokens)}\n(white = exactly 0; corner: fraction of zeros)", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.5)
    return fig


def side_by_side_figure(
    tokens: list[str], probs: list[np.ndarray], names: list[str], layer: int, head: int | None = None
) -> Any:
    """One layer of each model next to each other, readable token labels (head None: mean over heads)."""
    # constrained layout: the second panel's query label would otherwise sit on the first one's tokens
    fig, axes = plt.subplots(1, len(probs), figsize=(5.2 * len(probs), 5), squeeze=False, layout="constrained")
    cmap = zero_aware_cmap()
    im = None
    for ax, p, name in zip(axes[0], probs, names, strict=True):
        m = p[layer].mean(0) if head is None else p[layer, head]
        im = ax.imshow(m, cmap=cmap, vmin=1e-9, vmax=1.0)
        what = "mean over heads" if head is None else f"head {head}"
        ax.set_title(f"{name}\nlayer {layer % p.shape[0]}, {what}, {(m == 0).mean():.0%} zeros", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.7)
    return fig


def zero_fraction_figure(probs: list[np.ndarray], names: list[str]) -> Any:
    """Compact summary: fraction of exact zeros per layer x head for each model."""
    # constrained layout makes room for the colorbar beside the panels; added to the default layout, it
    # was laid over the right-hand panel's title
    fig, axes = plt.subplots(1, len(probs), figsize=(4.2 * len(probs) + 1, 3.4), squeeze=False, layout="constrained")
    im = None
    for ax, p, name in zip(axes[0], probs, names, strict=True):
        z = (p == 0).mean(axis=(2, 3))  # (layers, heads)
        im = ax.imshow(z, cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"{name}: zeros per head (mean {z.mean():.0%})", fontsize=9)
        ax.set_xticks(range(z.shape[1]))
        ax.set_yticks(range(z.shape[0]))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of exact zeros")
    return fig
