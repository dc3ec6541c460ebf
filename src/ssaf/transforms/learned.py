"""Learnable per-head sparsity parameters, parameterised so that no optimiser step can leave the valid range.

Each module holds one unconstrained number per head and maps it to the constrained value. They return
shape (H, 1, 1), which broadcasts against attention scores of shape (B, H, Q, K).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssaf.registry import LEARNED_ALPHA_FLOOR, PARAMS


class LearnedAlpha(nn.Module):
    """Per-head entmax alpha in (1, 2]: ``alpha = A + (2 - A) * sigmoid(a)`` with ``A = 1.01``.

    alpha near 1 is softmax-like, 1.5 is entmax15, 2 is sparsemax. Without a bound, learned alpha
    drifts below 1 where entmax is undefined; the floor A keeps alpha > 1 even when the sigmoid
    saturates in fp32 (1 + sigmoid(-100) == 1 exactly) and keeps 1/(alpha - 1) <= 100.
    """

    A_MIN = LEARNED_ALPHA_FLOOR

    def __init__(self, num_heads: int, init: float = 1.5) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        PARAMS["alpha"].check_start(init)  # (A_MIN, 2): the open interval the parameterisation reaches
        self.init = init
        self.raw = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        frac = (self.init - self.A_MIN) / (2.0 - self.A_MIN)
        with torch.no_grad():
            self.raw.fill_(math.log(frac / (1 - frac)))

    def forward(self) -> Tensor:
        return (self.A_MIN + (2.0 - self.A_MIN) * torch.sigmoid(self.raw)).view(-1, 1, 1)


class LearnedLambda(nn.Module):
    """Per-head sparsegen-lin lam < 1, parameterised by the log temperature: ``lam = 1 - exp(s)``.

    ``sparsegen_lin(z, lam) = sparsemax(z * exp(-s))``: any real s is valid. s is clamped to
    [-10, 10] (lam in [1 - e^10, 1 - e^-10] = [-22025, 0.99995]) so the scale stays finite in fp32.
    """

    S_MIN, S_MAX = -10.0, 10.0

    def __init__(self, num_heads: int, init: float = 0.0) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        PARAMS["lam"].check_start(init)
        self.init = init
        self.log_temp = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_temp.fill_(min(max(math.log(1.0 - self.init), self.S_MIN), self.S_MAX))

    def forward(self) -> Tensor:
        return (1 - torch.exp(self.log_temp.clamp(self.S_MIN, self.S_MAX))).view(-1, 1, 1)
