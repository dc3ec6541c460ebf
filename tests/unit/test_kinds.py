"""Task kinds are records (ssaf.kinds): each one complete, and a new one is a record the schema and the
pipeline look up, with nothing restated elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ssaf import kinds, pipeline
from ssaf.config import to_settings
from ssaf.settings import TaskSpec
from ssaf.training import SsafTrainer

CONF = Path(__file__).resolve().parents[2] / "conf"


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_every_kind_record_is_complete(name):
    kind = kinds.KINDS[name]
    assert kind.name == name
    assert callable(kind.load("prepare"))
    head = kind.load("head")
    assert hasattr(head, "from_pretrained") and hasattr(head, "from_config")
    assert kind.architecture.startswith("For")
    assert kinds.of_architectures([f"SsafBert{kind.architecture}"]) is kind
    assert issubclass(kind.load("trainer"), SsafTrainer)
    assert kind.metrics and len(set(kind.metrics)) == len(kind.metrics)
    assert kind.scale in (1.0, 100.0)
    assert all(kind.example)


def test_every_task_names_a_kind_and_one_of_its_metrics():
    for path in sorted((CONF / "task").glob("*.yaml")):
        task = OmegaConf.load(path)
        kind = kinds.get(task.get("kind", kinds.DEFAULT))
        assert task.metric_for_best in kind.metrics, path.name


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"task t: task.kind must be one of classification, qa, got 'ranking'"):
        TaskSpec(name="t", kind="ranking", labels=("a", "b"), text_fields=("sentence",), local="sst2")


class Looked(Exception):
    """Raised by the throwaway kind's preparation: the pipeline got there through the record."""


def toy_prepare(s, tokenizer):
    raise Looked(s.task.kind, tokenizer)


TOY = kinds.Kind(
    "toy",
    prepare=f"{__name__}.toy_prepare",
    head="transformers.AutoModelForSequenceClassification",
    trainer="ssaf.training.SsafTrainer",
    metrics=("accuracy",),
    scale=100.0,
    example=("text_a", "text_b"),
    labels=True,
)


def test_a_new_kind_is_one_record_that_the_schema_and_the_pipeline_look_up(monkeypatch, tmp_path):
    monkeypatch.setitem(kinds.KINDS, "toy", TOY)
    s = to_settings(cfg("experiment=smoke", "task.kind=toy"), tmp_path)
    assert s.task.record is TOY
    built = []

    def build_model(spec, attn, kind, labels):
        built.append((kind, labels))
        return object(), "the tokenizer"

    monkeypatch.setattr(pipeline, "build_model", build_model)
    with pytest.raises(Looked) as e:
        pipeline.prepare(s, tmp_path, {})
    assert e.value.args == ("toy", "the tokenizer") and built == [("toy", s.task.labels)]
    summary = pipeline.identity(s, tmp_path)
    assert summary.kind == "toy" and kinds.get(summary.kind) is TOY
