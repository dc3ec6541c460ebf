"""The names ssaf logs metrics under: metrics.json, W&B, TensorBoard, ``ssaf-compare`` and the dashboards all
use these functions, so a rename reaches every reader (and ``tests/integration/test_dashboard.py`` checks
the dashboards against what a run really logs)."""

from __future__ import annotations

from ssaf import registry

STATS = ("zero_fraction", "support", "entropy")  # AttentionStats.summary(), in the order update() stacks them
LEARNED = tuple(registry.PARAMS)  # the parameters a transform may learn (ssaf.attention.learned_values())
HEATMAP = "attention_heatmap"  # the image of a fixed example's attention, at each evaluation
TRAIN = ("loss", "learning_rate", "grad_norm")  # transformers' Trainer logs, every trainer.report_every steps


def prefix(split: str) -> str:
    """An eval split's prefix: transformers' own (``evaluate(eval_dataset={split: ...})`` -> ``eval_<split>``)."""
    return f"eval_{split}"


def metric(split: str, name: str) -> str:
    """A metric of an eval or test split, e.g. ``eval_validation_accuracy``."""
    return f"{prefix(split)}_{name}"


def stat_mean(eval_prefix: str, stat: str) -> str:
    """An attention statistic averaged over layers and heads, e.g. ``eval_validation_attn_zero_fraction``."""
    return f"{eval_prefix}_attn_{stat}"


def head_stat(eval_prefix: str, stat: str, layer: int | str, head: int | str) -> str:
    """An attention statistic of one layer and head, e.g. ``eval_validation/attn_support/layer0/head3``."""
    return f"{eval_prefix}/attn_{stat}/layer{layer}/head{head}"


def learned(name: str, layer: int | str, head: int | str) -> str:
    """A learned alpha or lam of one layer and head, e.g. ``learned_lam/layer2/head0``."""
    return f"learned_{name}/layer{layer}/head{head}"


def learned_mean(eval_prefix: str, name: str) -> str:
    """A learned parameter's mean over layers and heads at an evaluation, e.g. ``eval_validation_learned_lam_mean``."""
    return f"{eval_prefix}_learned_{name}_mean"


def final(name: str) -> str:
    """A metric of the selected checkpoint's final evaluation, e.g. ``final/eval_validation_accuracy``: the
    W&B summary and TensorBoard key, never a point of the curve logged under ``name`` during training."""
    return f"final/{name}"
