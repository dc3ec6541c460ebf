"""One classifier over one split: each sentence's explanations and what deleting or keeping them does.

The explanations of a sentence, each a ranking of its content tokens (``scores.content_positions``):
- ``attention``: the [CLS] row of the last layer's attention, averaged over heads;
- ``head<h>``: that row in head h alone (the report keeps the head that is best on the split, and says so);
- ``gradient``: gradient x input, the dot product of each token's input embedding with the gradient of the
  predicted class's log-probability: how much the token pushes toward the prediction (signed: a token
  that argues against it ranks last). It is first-order in the *word embedding's scale*; deleting a token
  is another edit (positions shift, LayerNorm follows), and on a MiniLM the two can disagree in sign
  (correlation -0.3 to -0.98 with single-token deletion drops on four sentences, gradient checked by finite
  differences): it is the baseline the issue names, not a faithful one by construction;
- ``random``: k content tokens drawn at random, ``draws`` times from a generator seeded by (seed, the
  sentence's index), so a rerun draws the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ssaf.explain import scores as S


@dataclass
class SentenceScores:
    """What one sentence gives. ``comprehensiveness[method][k]`` and ``sufficiency[method][k]`` are drops in
    the predicted class's probability (``random``: the mean over the draws)."""

    n_tokens: int  # with the special tokens
    n_content: int
    predicted: int
    p: float  # the predicted class's probability on the whole sentence
    comprehensiveness: dict[str, dict[str, float]] = field(default_factory=dict)
    sufficiency: dict[str, dict[str, float]] = field(default_factory=dict)
    support: int = 0  # of the head-averaged [CLS] row, special tokens included
    entropy: float = 0.0
    head_support: float = 0.0  # the [CLS] row's support in each head, averaged over heads
    lexicon_attention: float = float("nan")  # the share of content attention on lexicon words
    lexicon_text: float = float("nan")  # the share of content tokens that are lexicon words
    top: list[int] = field(default_factory=list)  # the attention explanation's top-1 position


def encode(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int, lexicon: frozenset[str]):
    """Token ids, the special-token flags, and whether each token belongs to a lexicon word."""
    enc = tokenizer(
        text, truncation=True, max_length=max_length, return_special_tokens_mask=True, return_offsets_mapping=True
    )
    ids, special, offsets = enc["input_ids"], enc["special_tokens_mask"], enc["offset_mapping"]
    word_ids = enc.word_ids()
    spans: dict[int, tuple[int, int]] = {}
    for w, (a, b) in zip(word_ids, offsets, strict=True):
        if w is not None:
            lo, hi = spans.get(w, (a, b))
            spans[w] = (min(lo, a), max(hi, b))
    in_lexicon = [w is not None and text[spans[w][0] : spans[w][1]].lower() in lexicon for w in word_ids]
    return ids, special, in_lexicon


@torch.no_grad()
def probabilities(model: nn.Module, sequences: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of each sequence (no padding in any: each is padded here, and masked), in the
    order given."""
    # Batched by length: a sentence's deletions are nearly as long as it and its sufficiency edits a few
    # tokens, so batches in the given order would be padded to twice the work.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: list[np.ndarray] = [np.empty(0)] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start : start + batch_size]]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        probs = model(input_ids=ids, attention_mask=mask).logits.double().softmax(-1).numpy()
        for i, row in zip(order[start : start + batch_size], probs, strict=True):
            out[i] = row
    return np.stack(out)


def cls_attention_and_gradient(model: Any, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities (C,), the last layer's [CLS] attention row per head (H, L), gradient x input (L,))."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model(input_ids=x, output_attentions=True)
    probs = out.logits[0].double().softmax(-1)
    cls_row = out.attentions[-1][0, :, 0, :].double()  # (H, L)
    predicted = int(probs.argmax())
    embeddings = model.get_input_embeddings()(x).detach().requires_grad_(True)  # (1, L, E)
    log_p = model(inputs_embeds=embeddings).logits[0].log_softmax(-1)[predicted]
    (grad,) = torch.autograd.grad(log_p, embeddings)
    attribution = (grad * embeddings).sum(-1)[0].double()
    return probs.numpy(), cls_row.numpy(), attribution.detach().numpy()


def score_sentence(
    model: Any,  # a sequence classifier (transformers' interface: logits, attentions, input embeddings)
    ids: list[int],
    special: list[int],
    in_lexicon: list[bool],
    pad_id: int,
    draws: int,
    rng: np.random.Generator,
) -> SentenceScores:
    probs, heads, attribution = cls_attention_and_gradient(model, ids)
    predicted = int(probs.argmax())
    content = S.content_positions(special)
    mean_row = heads.mean(0)
    support, entropy = S.support_and_entropy(mean_row)
    attn_share, text_share = S.lexicon_share(mean_row, content, in_lexicon)
    out = SentenceScores(
        n_tokens=len(ids),
        n_content=len(content),
        predicted=predicted,
        p=float(probs[predicted]),
        support=support,
        entropy=entropy,
        head_support=float(np.mean([S.support_and_entropy(r)[0] for r in heads])),
        lexicon_attention=attn_share,
        lexicon_text=text_share,
        top=S.top_k(mean_row, content, 1) if content else [],
    )
    if not content:
        return out
    rankings: dict[str, np.ndarray] = {"attention": mean_row, "gradient": attribution}
    rankings.update({f"head{h}": row for h, row in enumerate(heads)})
    # Every edited sequence once (heads often agree, and k is clipped on short sentences), in one batch.
    plan: list[tuple[str, str, str, tuple[int, ...]]] = []  # (method, k label, comp | suff, sequence)
    for label, k in S.k_values(len(content)).items():
        picks = [(m, S.top_k(w, content, k)) for m, w in rankings.items()]
        picks += [("random", S.random_k(content, k, rng)) for _ in range(draws)]
        for method, chosen in picks:
            plan.append((method, label, "comp", tuple(S.delete(ids, chosen))))
            plan.append((method, label, "suff", tuple(S.keep(ids, chosen, special))))
    unique = list(dict.fromkeys(seq for *_, seq in plan))
    p_of = dict(zip(unique, probabilities(model, [list(s) for s in unique], pad_id)[:, predicted], strict=True))
    sums: dict[tuple[str, str, str], list[float]] = {}
    for method, label, what, seq in plan:
        sums.setdefault((method, label, what), []).append(out.p - float(p_of[seq]))
    for (method, label, what), drops in sums.items():
        target = out.comprehensiveness if what == "comp" else out.sufficiency
        target.setdefault(method, {})[label] = float(np.mean(drops))
    return out


def explain_split(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    lexicon: frozenset[str],
    max_length: int = 128,
    draws: int = 5,
    seed: int = 0,
) -> list[SentenceScores]:
    """Every sentence of ``texts`` scored (see the module docstring); the model is put in eval mode."""
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = []
    for index, text in enumerate(texts):
        ids, special, in_lexicon = encode(tokenizer, text, max_length, lexicon)
        rng = np.random.default_rng([seed, index])
        results.append(score_sentence(model, ids, special, in_lexicon, pad_id, draws, rng))
    return results
