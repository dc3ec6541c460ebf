"""Extractive QA post-processing: window logits -> the best answer span of each question, as text."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[Any], n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """The highest-scoring valid (score, start_char, end_char) of one window, or None.

    Valid: both tokens inside the context (offset not None), end >= start, at most ``max_answer_length``
    tokens; candidates are the ``n_best`` largest start and end logits; score = start + end logit.
    """
    n = min(len(offsets), len(start_logits))
    starts = np.argsort(start_logits[:n])[::-1][:n_best]
    ends = np.argsort(end_logits[:n])[::-1][:n_best]
    best = None
    for s in starts:
        if offsets[s] is None:
            continue
        for e in ends:
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, int(offsets[s][0]), int(offsets[e][1]))
    return best


def postprocess_predictions(
    examples: Any,
    features: Any,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Question id -> answer text: the best span over all windows of the question ('' if none is valid).

    Args:
        examples: rows with ``id`` and ``context``.
        features: rows with ``example_id`` and ``offset_mapping`` (None outside the context), in the
            order of the logits.
        start_logits, end_logits: (num_features, seq_len); padding positions beyond a window's length
            are ignored.
    """
    if len(features["example_id"]) != len(start_logits):
        raise ValueError(f"{len(features['example_id'])} features but {len(start_logits)} rows of logits")
    windows: dict[str, list[int]] = defaultdict(list)
    for i, ex_id in enumerate(features["example_id"]):
        windows[ex_id].append(i)
    offsets = features["offset_mapping"]
    predictions = {}
    for ex_id, context in zip(examples["id"], examples["context"], strict=True):
        best = None
        for i in windows.get(ex_id, []):
            cand = best_span(start_logits[i], end_logits[i], offsets[i], n_best, max_answer_length)
            if cand is not None and (best is None or cand[0] > best[0]):
                best = cand
        predictions[ex_id] = "" if best is None else context[best[1] : best[2]]
    return predictions
