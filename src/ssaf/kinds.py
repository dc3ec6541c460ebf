"""What a task kind is, once: the table the schema, the pipeline, the model, the summary and the report read.

A task's ``kind`` (``conf/task/*.yaml``) names one :class:`Kind`; everything that differs between kinds is
a field of its record: how its data is prepared, the head its model gets, the trainer that evaluates it,
the metrics it reports and their scale, the example drawn in the attention heatmap, and what its config
may ask for. Adding a kind is one record here plus the modules it names.

Pure Python on purpose, like ``ssaf.registry``: the config schema validates ``task.kind`` against
:data:`KINDS` without importing torch; the heavy parts (data preparation, head, trainer) are named by
their dotted paths and imported only when a run asks for them (:meth:`Kind.load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One task kind.

    Attributes:
        name: its config name (``task.kind``).
        prepare: the data preparation, ``(RunSettings, tokenizer) -> ssaf.prepare.Prepared``, by dotted path.
        head: the transformers Auto class of the model's head, by dotted path.
        trainer: the ``ssaf.training.SsafTrainer`` (sub)class that trains and evaluates it, by dotted path.
        metrics: the metrics it reports, in the console summary's order; ``task.metric_for_best`` is one.
        scale: the factor that puts them on a 0-100 scale (fractions: 100; already percentages: 1).
        example: the fields of the first eval row drawn in the attention heatmap: (text_a, text_b); a row
            without the second (a single-text task) draws the first alone.
        labels: the head predicts one of ``task.labels`` (the schema asks for two or more; the head gets
            one output per label); else the task has no labels.
        test_splits: it can evaluate ``task.test_splits`` once on the selected checkpoint.
        stride: its inputs are windows overlapping by ``task.extra.doc_stride`` (checked against
            ``trainer.max_seq_length``).
    """

    name: str
    prepare: str
    head: str
    trainer: str
    metrics: tuple[str, ...]
    scale: float
    example: tuple[str, str]
    labels: bool = False
    test_splits: bool = True
    stride: bool = False

    def load(self, what: str) -> Any:
        """The object a dotted-path field names (``"prepare"``, ``"head"``, ``"trainer"``), imported now."""
        module, _, name = getattr(self, what).rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def architecture(self) -> str:
        """The suffix of its heads' model classes (``ForQuestionAnswering``), as a saved config lists them."""
        return self.head.rpartition(".")[2].removeprefix("AutoModel")

    def picture(self, row: Mapping[str, Any]) -> tuple[str, str | None]:
        """(text_a, text_b) of ``row`` to draw in the attention heatmap."""
        first, second = self.example
        return row[first], row.get(second)


DEFAULT = "classification"  # the schema's default task.kind, and a saved model's when its config names no head

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "classification",
            prepare="ssaf.prepare.prepare_classification",
            head="transformers.AutoModelForSequenceClassification",
            trainer="ssaf.training.SsafTrainer",
            metrics=("accuracy", "macro_f1"),
            scale=100.0,  # fractions (accuracy 0.91)
            example=("text_a", "text_b"),
            labels=True,
        ),
        Kind(
            "qa",
            prepare="ssaf.prepare.prepare_qa",
            head="transformers.AutoModelForQuestionAnswering",
            trainer="ssaf.training.QATrainer",
            metrics=("exact_match", "f1"),
            scale=1.0,  # the official SQuAD script's percentages already (f1 88.5)
            example=("question", "context"),
            test_splits=False,  # QATrainer evaluates the eval splits whose examples it holds
            stride=True,
        ),
    )
}


def get(name: str) -> Kind:
    """The record of kind ``name``; ValueError naming the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"task.kind must be one of {', '.join(KINDS)}, got {name!r}") from None


def of_architectures(architectures: list[str] | None) -> Kind:
    """The kind of a saved model from its config's ``architectures``; :data:`DEFAULT` when none says."""
    for kind in KINDS.values():
        if any(a.endswith(kind.architecture) for a in architectures or ()):
            return kind
    return KINDS[DEFAULT]
