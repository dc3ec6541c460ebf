"""The only module that touches transformers' registries: ``register()`` (called by ``ssaf.register()``)
adds the ``"ssaf"`` attention and its mask, and, for each family in ``FAMILIES``, an ssaf config class and
model classes registered with the Auto classes. Also the file a saved model carries so that plain
transformers loads it (``trust_remote_code=True``), and :func:`ssaf_config`, the way in for a stock config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from ssaf.attention.families import FAMILIES, UNSUPPORTED
from ssaf.attention.forward import ssaf_attention_forward
from ssaf.attention.learned import attach, learned_classes
from ssaf.settings import AttentionSpec

ATTN_IMPLEMENTATION = "ssaf"
# The generated classes' __module__: the package, whose names old and new saved models' remote modules read.
PACKAGE = "ssaf.attention"

CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {}  # stock model_type -> ssaf config class
MODEL_CLASSES: dict[tuple[str, type], type[PreTrainedModel]] = {}  # (stock model_type, Auto class) -> class
REMOTE_MODULE = "ssaf_modeling"  # the file a saved model carries, for trust_remote_code=True


def _config_class(family: str, base: type[PretrainedConfig]) -> type[PretrainedConfig]:
    def __init__(self: PretrainedConfig, ssaf_attention: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("attn_implementation", ATTN_IMPLEMENTATION)
        base.__init__(self, **kwargs)
        self.ssaf_attention = AttentionSpec.from_dict(ssaf_attention or {}).to_dict()

    name = f"Ssaf{base.__name__}"
    return type(name, (base,), {"model_type": f"ssaf_{family}", "__init__": __init__, "__module__": PACKAGE})


def remote_auto_map(family: str) -> dict[str, str]:
    """config.json's ``auto_map``: the classes of the file a saved model carries (``trust_remote_code``)."""
    f = FAMILIES[family]
    names = {"AutoConfig": f"Ssaf{f.config.__name__}"}
    names.update({auto.__name__: f"Ssaf{model.__name__}" for auto, model in f.models.items()})
    return {auto: f"{REMOTE_MODULE}.{cls}" for auto, cls in names.items()}


def write_remote_module(save_directory: str | Path, family: str) -> None:
    """The module that lets plain transformers load a saved ssaf model with ``trust_remote_code=True``.

    It reads ``CONFIG_CLASSES``, ``MODEL_CLASSES`` and the Auto classes from the ``ssaf.attention`` package,
    as every saved model's copy does: those names stay there (tests/unit/test_attention.py loads a file
    written by an older version)."""
    f = FAMILIES[family]
    lines = [
        '"""Written by ssaf beside a saved model: `AutoModel...from_pretrained(dir,',
        "trust_remote_code=True)` loads it with its sparse attention, without `import ssaf` in your code. It",
        'needs the ssaf package installed (pip install ssaf)."""',
        "",
        "import ssaf",
        "from ssaf import attention as _attention",
        "",
        "ssaf.register()",
        f"Ssaf{f.config.__name__} = _attention.CONFIG_CLASSES[{family!r}]",
    ]
    for auto, model in f.models.items():
        lines.append(f"Ssaf{model.__name__} = _attention.MODEL_CLASSES[({family!r}, _attention.{auto.__name__})]")
    (Path(save_directory) / f"{REMOTE_MODULE}.py").write_text("\n".join(lines) + "\n")


def _model_class(family: str, base: type[PreTrainedModel], config_cls: type[PretrainedConfig]) -> type[PreTrainedModel]:
    def __init__(self: PreTrainedModel, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        attach(self, AttentionSpec.from_config(config))

    def initialize_weights(self: PreTrainedModel) -> None:
        # transformers builds on the meta device, loads the checkpoint, and initialises what it lacked through
        # _init_weights, handing each module to the nearest PreTrainedModel above it: for ours that is the stock
        # encoder inside (self.bert), whose _init_weights does not know them and leaves them as allocated
        # (0 or garbage, NaN once). So ours are set here first, unless the checkpoint had them.
        learned = learned_classes()  # LearnedAlpha, LearnedLambda: each has reset_parameters()
        for m in self.modules():
            if isinstance(m, learned):
                if not all(getattr(p, "_is_hf_initialized", False) for p in m.parameters()):
                    cast(Any, m).reset_parameters()
                m._is_hf_initialized = True  # type: ignore[assignment]  # transformers skips modules marked so
        base.initialize_weights(self)

    def save_pretrained(self: PreTrainedModel, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        # With the module beside it and the auto_map in config.json, plain transformers loads the model with
        # trust_remote_code=True; without them it would say "does not recognize ssaf_bert ... upgrade".
        self.config.auto_map = remote_auto_map(family)
        result = base.save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_module(save_directory, family)
        return result

    attrs = {
        "config_class": config_cls,
        "__init__": __init__,
        "initialize_weights": initialize_weights,
        "save_pretrained": save_pretrained,
        # The classification and QA heads' losses are means over the batch that ignore num_items_in_batch.
        # Their forward takes **kwargs, so Trainer would otherwise assume a summed loss and, to average
        # over devices, multiply it by the number of processes: a doubled loss (and gradient norms, so
        # clipping) under torchrun with 2 processes.
        "accepts_loss_kwargs": False,
        "__module__": PACKAGE,
    }
    return type(f"Ssaf{base.__name__}", (base,), attrs)


def ssaf_config(base: PretrainedConfig, spec: AttentionSpec) -> PretrainedConfig:
    """The ssaf config for a stock encoder config (e.g. ``AutoConfig.from_pretrained('bert-base-uncased')``)."""
    register()
    model_type = base.model_type.removeprefix("ssaf_")
    if model_type not in CONFIG_CLASSES:
        why = UNSUPPORTED.get(model_type, "its attention does not go through transformers' attention interface")
        raise ValueError(
            f"model type {base.model_type!r} is not supported by ssaf: {why}. Supported families: "
            f"{', '.join(CONFIG_CLASSES)}"
        )
    values = {k: v for k, v in base.to_dict().items() if k not in ("model_type", "ssaf_attention", "architectures")}
    config_cls: Any = CONFIG_CLASSES[model_type]
    return config_cls(ssaf_attention=spec.to_dict(), **values)


_registered = False


def register() -> None:
    """Register the attention, its mask and the ssaf config/model classes with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    AttentionInterface.register(ATTN_IMPLEMENTATION, ssaf_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    for family, f in FAMILIES.items():
        config_cls = _config_class(family, f.config)
        AutoConfig.register(config_cls.model_type, config_cls)
        CONFIG_CLASSES[family] = config_cls
        for auto, base_model in f.models.items():
            cls = _model_class(family, base_model, config_cls)
            auto.register(config_cls, cls)
            MODEL_CLASSES[(family, auto)] = cls
    _registered = True
