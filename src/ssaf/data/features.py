"""Tokenisation of classification examples (top-level, so datasets can fingerprint and cache it)."""

from __future__ import annotations

from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase


def tokenize_batch(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, Any]:
    """Tokenise ``text_a`` (and ``text_b`` for pairs), truncated to ``max_length``; padding happens per batch."""
    pair = batch.get("text_b")
    return tokenizer(batch["text_a"], pair, truncation=True, max_length=max_length)


def tokenize_split(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    drop = [c for c in ("text_a", "text_b") if c in ds.column_names]
    return ds.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
        remove_columns=drop,
        desc="tokenize",
    )
