"""The pure parts of scoring an explanation: token choices, edits of a sequence, row statistics, intervals.

An *explanation* ranks the content tokens of one sequence (every token but the tokenizer's special ones,
which are never removed: [CLS] is where the prediction is read, [SEP] closes the text). Faithfulness as in
ERASER (DeYoung et al., 2020): *comprehensiveness* is p(y | x) - p(y | x without the top k tokens), the
drop in the predicted class's probability when the explanation's tokens are deleted; *sufficiency* is
p(y | x) - p(y | only the top k tokens and the special ones). A faithful explanation has a large
comprehensiveness and a small sufficiency, compared with k random tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Weights = Sequence[float] | np.ndarray  # one weight per position of the sequence

K_FIXED = (1, 3, 5)
K_SHARE = 0.2  # and 20% of the content tokens


def k_values(n_content: int) -> dict[str, int]:
    """The k of each reported column for a sequence of ``n_content`` content tokens: 1, 3, 5 and 20%
    (rounded, at least 1), each at most ``n_content``."""
    ks = {str(k): min(k, n_content) for k in K_FIXED}
    ks["20%"] = min(n_content, max(1, round(K_SHARE * n_content)))
    return ks


def content_positions(special: Sequence[int]) -> list[int]:
    """The positions an explanation may pick: those whose ``special`` flag (the tokenizer's
    ``special_tokens_mask``) is 0."""
    return [i for i, s in enumerate(special) if not s]


def top_k(weights: Weights, positions: Sequence[int], k: int) -> list[int]:
    """The ``k`` positions among ``positions`` with the largest weight, ties broken by the earlier position;
    returned in sequence order."""
    ranked = sorted(positions, key=lambda i: (-float(weights[i]), i))
    return sorted(ranked[:k])


def random_k(positions: Sequence[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` positions drawn without replacement by ``rng`` (seeded by the caller), in sequence order."""
    return sorted(int(i) for i in rng.choice(np.asarray(positions), size=k, replace=False))


def delete(ids: Sequence[int], chosen: Sequence[int]) -> list[int]:
    """``ids`` without the tokens at ``chosen`` (comprehensiveness)."""
    drop = set(chosen)
    return [t for i, t in enumerate(ids) if i not in drop]


def keep(ids: Sequence[int], chosen: Sequence[int], special: Sequence[int]) -> list[int]:
    """Only the tokens at ``chosen`` and the special tokens, in their order (sufficiency)."""
    kept = set(chosen)
    return [t for i, t in enumerate(ids) if i in kept or special[i]]


def support_and_entropy(row: Weights) -> tuple[int, float]:
    """The number of keys with non-zero weight, and the entropy (nats, 0 log 0 = 0) of a distribution."""
    p = np.asarray(row, dtype=np.float64)
    nz = p[p > 0]
    return int(nz.size), float(-(nz * np.log(nz)).sum())


def lexicon_share(row: Weights, content: Sequence[int], in_lexicon: Sequence[bool]) -> tuple[float, float]:
    """(share of the attention on content tokens that falls on lexicon words, share of the content tokens
    that are lexicon words). Attention on special tokens is left out of both: [CLS] and [SEP] take much of
    it and are no words. A row with no attention on content tokens gives NaN for the first."""
    weights = np.asarray([row[i] for i in content], dtype=np.float64)
    hits = np.asarray([bool(in_lexicon[i]) for i in content])
    total = weights.sum()
    attn = float(weights[hits].sum() / total) if total > 0 else math.nan
    return attn, float(hits.mean()) if hits.size else math.nan


def bootstrap_ci(values: Sequence[float], draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and the percentile bootstrap 95% interval of the mean, over ``values``
    resampled with replacement ``draws`` times by a seeded generator; NaNs are left out."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(draws, v.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(low), float(high)
