"""Attention transforms: maps from scores to probability rows, dense (softmax) or sparse.

All are pure functions over ``dim`` (default last) with an optional boolean ``mask`` (True = may
attend): masked entries get exactly 0, a row with no valid entry is all zeros, half-precision inputs
are solved in fp32 and returned in their own dtype.
"""

from ssaf.transforms.entmax import entmax15, entmax_bisect
from ssaf.transforms.learned import LearnedAlpha, LearnedLambda
from ssaf.transforms.softmax import softmax
from ssaf.transforms.sparsegen import sparsegen_lin, sparsemax

__all__ = [
    "LearnedAlpha",
    "LearnedLambda",
    "entmax15",
    "entmax_bisect",
    "softmax",
    "sparsegen_lin",
    "sparsemax",
]
