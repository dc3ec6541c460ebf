"""The encoder families ssaf serves: those whose self-attention goes through transformers' attention
interface, and the modules in a model that call it. Data and lookups only: registering their ssaf classes
with transformers is ``registration``'s."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import nn
from transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.albert import modeling_albert
from transformers.models.bert import modeling_bert
from transformers.models.distilbert import modeling_distilbert
from transformers.models.electra import modeling_electra
from transformers.models.modernbert import modeling_modernbert
from transformers.models.roberta import modeling_roberta
from transformers.models.xlm_roberta import modeling_xlm_roberta

# The Auto classes ssaf registers a model class with, and the suffix of the stock class each builds.
HEADS: dict[Any, str] = {
    AutoModel: "Model",
    AutoModelForSequenceClassification: "ForSequenceClassification",
    AutoModelForQuestionAnswering: "ForQuestionAnswering",
}


@dataclass(frozen=True)
class Family:
    """An encoder family whose self-attention goes through transformers' attention interface."""

    config: type[PretrainedConfig]
    models: dict[Any, type[PreTrainedModel]]  # Auto class -> stock model class
    attention: type[nn.Module]  # the module that calls the attention interface (one per layer, or shared)


def _family(modeling: ModuleType, prefix: str, attention: str) -> Family:
    """A family from its transformers modeling module, its class prefix (``Bert``) and its attention class."""
    models = {auto: getattr(modeling, f"{prefix}{suffix}") for auto, suffix in HEADS.items()}
    return Family(getattr(modeling, f"{prefix}Config"), models, getattr(modeling, attention))


FAMILIES: dict[str, Family] = {
    "bert": _family(modeling_bert, "Bert", "BertSelfAttention"),
    "roberta": _family(modeling_roberta, "Roberta", "RobertaSelfAttention"),
    "xlm-roberta": _family(modeling_xlm_roberta, "XLMRoberta", "XLMRobertaSelfAttention"),
    "distilbert": _family(modeling_distilbert, "DistilBert", "DistilBertSelfAttention"),
    "electra": _family(modeling_electra, "Electra", "ElectraSelfAttention"),
    # one attention module shared by every layer (ALBERT shares its layers' weights)
    "albert": _family(modeling_albert, "Albert", "AlbertAttention"),
    # alternating global and sliding-window (local) layers; see README
    "modernbert": _family(modeling_modernbert, "ModernBert", "ModernBertAttention"),
}
ATTENTION_CLASSES = tuple(f.attention for f in FAMILIES.values())
UNSUPPORTED = {  # families whose attention bypasses the interface, and why
    "deberta-v2": "DeBERTa-v2's disentangled attention computes its own scores and softmax (no attention interface)",
    "deberta": "DeBERTa's disentangled attention computes its own scores and softmax (no attention interface)",
}


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules that call the attention interface, in layer order (ALBERT: the one module
    its layers share)."""
    return [m for m in model.modules() if isinstance(m, ATTENTION_CLASSES)]


def num_heads(module: nn.Module) -> int:
    """The number of heads of a self-attention module (each family names it its own way)."""
    for name in ("num_attention_heads", "n_heads", "num_heads"):
        if isinstance(value := getattr(module, name, None), int):
            return value
    config: Any = module.config  # ModernBERT keeps the head count only in its config
    return int(config.num_attention_heads)
