"""The public sentiment lexicon that plausibility is measured against: VADER's (Hutto & Gilbert, 2014),
as shipped by the maintained ``vaderSentiment`` package (``vader_lexicon.txt``: 7,520 entries, each a token
and its mean valence rated by ten people). Only alphabetic entries count: the emoticons are no words of
our data."""

from __future__ import annotations

from importlib import resources

NAME = "VADER (vaderSentiment 3.3.2, vader_lexicon.txt)"


def vader_words() -> frozenset[str]:
    """The lower-cased alphabetic words of VADER's lexicon."""
    try:
        text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    except ModuleNotFoundError as e:
        raise SystemExit(
            "ssaf-explain needs the vaderSentiment package for its lexicon: pip install 'ssaf[explain]'"
        ) from e
    words = (line.split("\t", 1)[0].lower() for line in text.splitlines() if line.strip())
    return frozenset(w for w in words if w.isalpha())
