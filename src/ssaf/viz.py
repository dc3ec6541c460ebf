"""Attention pictures: per-head heatmaps of one example, with exact zeros shown as such."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
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
