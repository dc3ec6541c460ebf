"""ssaf: fine-tune BERT-style encoders with sparse self-attention and compare against softmax.

Importing ssaf registers its attention (``attn_implementation="ssaf"``) and its config/model classes
with transformers, so saved ssaf models load through the Auto classes and pipelines.
"""

from ssaf.attention import AttentionSpec, register

__version__ = "0.1.0"
__all__ = ["AttentionSpec", "__version__"]

register()
