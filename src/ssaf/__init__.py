"""ssaf: fine-tune BERT-style encoders with sparse self-attention and compare against softmax.

Importing ssaf (or ``ssaf.transforms``, which needs torch alone) imports nothing else and registers nothing
with other libraries. ``ssaf.register()`` registers the attention (``attn_implementation="ssaf"``) and the
ssaf config/model classes with transformers, so saved ssaf models load through the Auto classes and
pipelines; train.py and the CLIs call it, and it is idempotent.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AttentionSpec", "__version__", "register"]


def register() -> None:
    """Register ssaf's attention and model classes with transformers (idempotent)."""
    from ssaf import attention

    attention.register()


def __getattr__(name: str) -> Any:
    if name == "AttentionSpec":  # on first use: the schema imports omegaconf
        from ssaf.settings import AttentionSpec

        return AttentionSpec
    raise AttributeError(f"module 'ssaf' has no attribute {name!r}")
