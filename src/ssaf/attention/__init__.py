"""The one adapter between ssaf's transforms and transformers' attention contract (transformers 5.x).

What it registers, once, when ``ssaf.register()`` is called (train.py and the CLIs call it; importing
``ssaf`` registers nothing):

* ``"ssaf"`` in ``AttentionInterface`` (the attention function, ``forward``) and in ``AttentionMaskInterface``
  (transformers' boolean sdpa mask). Without the mask entry transformers silently passes
  ``attention_mask=None`` to a custom attention, and padding is attended.
* For each encoder family in :data:`FAMILIES`: a config class ``model_type = "ssaf_<family>"`` that defaults
  to the ``"ssaf"`` attention and carries the transform spec (``config.ssaf_attention``), and model classes
  for the Auto classes in ``families.HEADS`` (the base model, sequence classification, question answering).
  So ``AutoModelFor...from_pretrained(dir)`` on a saved ssaf model restores its transform and its learned
  per-head parameters, and ``transformers.pipeline(..., model=dir)`` works.

The attention function reads the spec resolved from ``module.config`` once per model (``attach``); learned
per-head alpha / lam are parameters of each self-attention module (``module.ssaf_alpha`` /
``module.ssaf_lam``). Each call takes one path (:func:`route`): the fused kernel (``ssaf.kernels``) for a
sparse transform and softmax on torch's ``scaled_dot_product_attention`` whenever nothing needs the
probabilities, else the materialising path on ``ssaf.transforms`` (eager or compiled).

The modules: ``families`` (which encoders, and their attention modules), ``forward`` (the attention
function and its routes), ``stats`` (sparsity statistics), ``learned`` (attaching the spec and its learned
parameters to a model), ``registration`` (the only one that touches transformers' registries). The names
below are the package's interface: callers, and the ``ssaf_modeling.py`` every saved model carries (it reads
``CONFIG_CLASSES``, ``MODEL_CLASSES`` and the Auto classes from here), use them.
"""

from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from ssaf.attention.families import (
    ATTENTION_CLASSES,
    FAMILIES,
    HEADS,
    UNSUPPORTED,
    Family,
    attention_modules,
    num_heads,
)
from ssaf.attention.forward import (
    Probabilities,
    RouteCounts,
    attention_routes,
    attentions_requested,
    key_padding,
    resolve,
    route,
    sdpa_softmax,
    ssaf_attention_forward,
)
from ssaf.attention.learned import LEARNED_ATTRIBUTES, attach, learned_classes, learned_parameters, learned_values
from ssaf.attention.registration import (
    ATTN_IMPLEMENTATION,
    CONFIG_CLASSES,
    MODEL_CLASSES,
    REMOTE_MODULE,
    register,
    remote_auto_map,
    ssaf_config,
    write_remote_module,
)
from ssaf.attention.stats import AttentionStats, record_attention_stats
from ssaf.settings import AttentionSpec

__all__ = [
    "ATTENTION_CLASSES",
    "ATTN_IMPLEMENTATION",
    "CONFIG_CLASSES",
    "FAMILIES",
    "HEADS",
    "LEARNED_ATTRIBUTES",
    "MODEL_CLASSES",
    "REMOTE_MODULE",
    "UNSUPPORTED",
    "AttentionSpec",
    "AttentionStats",
    "AutoModel",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "Family",
    "Probabilities",
    "RouteCounts",
    "attach",
    "attention_modules",
    "attention_routes",
    "attentions_requested",
    "key_padding",
    "learned_classes",
    "learned_parameters",
    "learned_values",
    "num_heads",
    "record_attention_stats",
    "register",
    "remote_auto_map",
    "resolve",
    "route",
    "sdpa_softmax",
    "ssaf_attention_forward",
    "ssaf_config",
    "write_remote_module",
]
