"""``torch.compile``d versions of the dense-row kernels (``_dense``), for ``compiled=True``.

Eager, each op of a dense pass reads and writes the whole (B, H, Q, K) tensor; compiled, a pass is one
loop per row over a row that stays in cache (Inductor's C++ on CPU, Triton on CUDA), so the dense
iteration costs little more than the memory it must touch once. Kernels are compiled one by one on
purpose: compiling the score shift together with the passes gave one fused CPU kernel 3x slower than
the two separate ones (measured on torch 2.13).

The first call of each kernel compiles it (tens of seconds; a C++ compiler on CPU, Triton on CUDA);
``dynamic=True`` lets later shapes reuse it. The eager kernels stay the default and need no compiler.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


@functools.cache  # one compiled wrapper per kernel for the process: compiling again would redo the work
def _compile(fn: Callable) -> Callable:
    return torch.compile(fn, dynamic=True)


def maybe_compiled(fn: Callable, compiled: bool) -> Callable:
    """``fn`` itself, or its compiled version when ``compiled``."""
    return _compile(fn) if compiled else fn
