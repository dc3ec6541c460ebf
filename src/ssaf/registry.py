"""What an attention transform is, once: the table every other part of ssaf reads.

Config validation, the transformers adapter, the learned per-head parameters, the kernels, the run
summary and the comparison report all look a transform up here by its config name
(``attn.transform``); adding a transform is one entry (and its maths in ``ssaf.transforms``).
Pure Python on purpose: the config schema and the report import it without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# LearnedAlpha keeps alpha in (LEARNED_ALPHA_FLOOR, 2]: above 1, where entmax is defined, with
# 1 / (alpha - 1) <= 100 (see ssaf.transforms.learned).
LEARNED_ALPHA_FLOOR = 1.01

# attn.backend: which path serves the attention calls (ssaf.settings.AttentionSpec.backend says what each does).
# "auto" is always valid; the others only for a transform whose record lists them.
BACKENDS = ("auto", "torch", "compiled", "triton")
# What a record's ``backends`` may list: the paths ``BACKENDS`` names (torch: eager, materialising the
# probabilities, which every transform has; compiled: torch.compile'd whole rows; triton: the fused kernel of
# ssaf.kernels) and sdpa, torch's scaled_dot_product_attention, the fast path "auto" takes for softmax.
PATHS = ("torch", "compiled", "triton", "sdpa")


def backend_of(compiled: bool, kernel: str) -> str:
    """The ``attn.backend`` of the two settings it replaced, ``attn.compiled`` and ``attn.kernel`` (a model config
    or a metrics.json written by an older ssaf). kernel=triton asked for the fused kernel whatever compiled
    said; compiled=true otherwise asked for the compiled path; kernel's auto and torch are backends of the
    same name (an unknown kernel passes through, for the backend's own check to name)."""
    return "compiled" if compiled and kernel != "triton" else kernel


@dataclass(frozen=True)
class Transform:
    """One attention transform.

    Attributes:
        name: its config name (``attn.transform``).
        description: one line, for messages and tables.
        function: the maths, by its name in ``ssaf.transforms`` (and in ``ssaf.kernels``).
        param: the spec field it reads (``lam`` or ``alpha``), or None.
        learned: one value of ``param`` per head and layer, learned, starting at the spec's value.
        backends: the paths that serve it (see ``PATHS``); "torch" always, since only the eager path
            returns the probabilities (attention statistics, ``output_attentions``).
    """

    name: str
    description: str
    function: str
    param: str | None = None
    learned: bool = False
    backends: tuple[str, ...] = ("torch",)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in PATHS]
        if unknown or "torch" not in self.backends:
            raise ValueError(
                f"transform {self.name!r}: backends {self.backends} must include 'torch' and name only "
                f"{', '.join(PATHS)}"
            )

    @property
    def learned_attribute(self) -> str | None:
        """The attribute of each self-attention module holding the learned parameter (saved with the model)."""
        return f"ssaf_{self.param}" if self.learned else None


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("softmax", "dense softmax (the baseline)", "softmax", backends=("torch", "sdpa")),
        Transform("sparsemax", "sparsemax (lam = 0)", "sparsemax", backends=("torch", "compiled", "triton")),
        Transform(
            "sparse",
            "SSAF sparsegen-lin with a fixed lam < 1",
            "sparsegen_lin",
            param="lam",
            backends=("torch", "compiled", "triton"),
        ),
        Transform("entmax15", "exact 1.5-entmax", "entmax15", backends=("torch", "triton")),
        Transform(
            "entmax",
            "alpha-entmax with a fixed alpha > 1",
            "entmax_bisect",
            param="alpha",
            backends=("torch", "triton"),
        ),
        Transform(
            "learned_alpha",
            "alpha-entmax with one learned alpha in (1, 2] per head, initialised at alpha",
            "entmax_bisect",
            param="alpha",
            learned=True,
            backends=("torch", "triton"),
        ),
        Transform(
            "learned_lam",
            "sparsegen-lin with one learned lam < 1 per head, initialised at lam",
            "sparsegen_lin",
            param="lam",
            learned=True,
            backends=("torch", "compiled", "triton"),
        ),
    )
}


def transform(name: str) -> Transform:
    """The record of ``name``; a ValueError listing the valid names otherwise."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown attention transform {name!r}; valid transforms: {', '.join(TRANSFORMS)}") from None


def check_param(name: str, value: float, t: Transform) -> None:
    """The range of a transform parameter (the maths' own domain, and a learned start's)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"attn.{name} must be a number, got {value!r}")
    if name == "lam" and not (math.isfinite(value) and value < 1):
        raise ValueError(f"attn.lam must be finite and < 1, got {value} (lam = 0 is sparsemax, lam -> 1 one-hot)")
    if name == "alpha" and not (math.isfinite(value) and value > 1):
        raise ValueError(f"attn.alpha must be finite and > 1, got {value}; use attn=softmax for alpha = 1")
    if t.learned and name == "alpha" and not LEARNED_ALPHA_FLOOR < value < 2:
        raise ValueError(
            f"attn=learned_alpha starts from alpha in ({LEARNED_ALPHA_FLOOR}, 2), got {value}; "
            "use attn=sparsemax for alpha = 2"
        )
