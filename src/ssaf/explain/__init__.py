"""Attention as an explanation of a classifier's prediction, scored (``ssaf-explain``).

The SSAF paper says sparse attention "leads to a more interpretable representation" and shows pictures.
This package turns that into numbers, per model, over a labelled split:

- ``scores``: the pure parts (which tokens an explanation picks, deleting or keeping them, support and
  entropy of an attention row, the lexicon share, bootstrap intervals);
- ``lexicon``: the public sentiment lexicon (VADER's, shipped by the ``vaderSentiment`` package);
- ``explain``: one model over one split: the [CLS] attention of the last layer, gradient x input, and the
  predicted class's probability after each deletion / keep;
- ``report``: tables (mean with a bootstrap 95% interval) and the deletion-curve figure;
- ``cli``: ``ssaf-explain <model dir> [...] --task sst2_sentences --split test --out DIR``.
"""
