"""A small demo data set per task, written by the project itself, for a first run with nothing else reachable.

The sentences are generated from templates (seeded), so that a model can learn something from a few
hundred examples; they are a demonstration, not a benchmark. Real data: ``data.source=local``
with ``SSAF_DATA_DIR`` (e.g. ``../shared/data``) or ``data.source=hub``.
"""

from __future__ import annotations

import random

from ssaf.data.local import Row

SIZES = {"train": 480, "validation": 120, "test": 120}
SAMPLE_VERSION = 1  # bump when the generated rows change: it is part of the data's fingerprint

_POS = ["wonderful", "moving", "brilliant", "funny", "charming", "gripping", "beautiful", "smart"]
_NEG = ["dull", "boring", "clumsy", "tedious", "lifeless", "painful", "shallow", "messy"]
_NOUNS = ["film", "movie", "story", "script", "cast", "ending", "performance", "soundtrack"]
_STRONG = ["utterly", "truly", "remarkably", "incredibly"]
_MILD = ["somewhat", "fairly", "mostly", "a bit"]
_PEOPLE = ["a man", "a woman", "a child", "an old man", "a girl", "two dogs", "a teacher", "a chef"]
_ACTS = [
    ("running", "moving"),
    ("singing", "making noise"),
    ("cooking", "making food"),
    ("reading", "looking at a book"),
]
_PLACES = ["in the park", "at home", "on a beach", "in a kitchen", "near a lake"]


def _sentiment(rng: random.Random, labels: tuple[str, ...]) -> Row:
    k = len(labels)
    y = rng.randrange(k)
    noun = rng.choice(_NOUNS)
    if k == 2:
        adj = rng.choice(_POS if y == 1 else _NEG)
        return f"the {noun} is {adj} .", None, labels[y]
    if k == 3:  # negative / neutral / positive
        adj = [rng.choice(_NEG), "", rng.choice(_POS)][y]
        text = f"the {noun} is {adj} ." if adj else f"the {noun} opens on friday ."
        return text, None, labels[y]
    # five classes: strong / mild negative, neutral, mild / strong positive
    word = [rng.choice(_NEG), rng.choice(_NEG), "", rng.choice(_POS), rng.choice(_POS)][y]
    adv = [rng.choice(_STRONG), rng.choice(_MILD), "", rng.choice(_MILD), rng.choice(_STRONG)][y]
    text = f"the {noun} is {adv} {word} ." if word else f"the {noun} runs two hours ."
    return text, None, labels[y]


def _nli(rng: random.Random, labels: tuple[str, ...]) -> Row:
    who, (act, general) = rng.choice(_PEOPLE), rng.choice(_ACTS)
    premise = f"{who} is {act} {rng.choice(_PLACES)} ."
    label = rng.choice(labels)
    if label in ("entailment", "entails"):
        hyp = f"{who} is {general} ."
    elif label == "contradiction":
        hyp = f"{who} is sleeping ."
    else:  # neutral
        hyp = f"{who} is {act} with friends ."
    return premise, hyp, label


def sample_split(task: str, labels: tuple[str, ...], pair: bool, split: str, seed: int = 0) -> list[Row]:
    """Deterministic demo rows for one split of a task."""
    rng = random.Random(f"{task}/{split}/{seed}")
    make = _nli if pair else _sentiment
    return [make(rng, labels) for _ in range(SIZES.get(split, 120))]
