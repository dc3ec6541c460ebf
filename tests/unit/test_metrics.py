"""The shipped metric modules on hand-made cases, and every task's headline metric is one they compute."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssaf.metrics import load_metric
from ssaf.settings import TaskSpec

CONF = Path(__file__).resolve().parents[2] / "conf"
METRIC_OF_KIND = {"classification": "classification", "qa": "squad"}  # as ssaf.training uses them


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_every_tasks_headline_metric_is_computed_by_its_metric_module(name):
    """A task judged by a metric its module does not return would select checkpoints on nothing."""
    task = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(TaskSpec), OmegaConf.load(CONF / "task" / f"{name}.yaml"))
    )
    module = load_metric(METRIC_OF_KIND[task.kind])
    if task.kind == "classification":
        out = module.compute(predictions=[0, 1], references=[0, 0])
    else:
        out = module.compute(
            predictions=[{"id": "1", "prediction_text": "a cat"}],
            references=[{"id": "1", "answers": {"text": ["the cat"], "answer_start": [0]}}],
        )
    assert task.metric_for_best in out, (
        f"task {name} selects on {task.metric_for_best!r}; {module.name} gives {sorted(out)}"
    )


@pytest.mark.parametrize(
    "preds,refs,acc,f1",
    [
        ([0, 1, 1, 0], [0, 1, 1, 0], 1.0, 1.0),
        ([0, 0, 0, 0], [0, 0, 1, 1], 0.5, (2 / 3 + 0.0) / 2),  # class 0: P=1/2 R=1 -> 2/3; class 1: no TP -> 0
        ([2, 1, 0], [0, 1, 2], 1 / 3, (0 + 1 + 0) / 3),
    ],
)
def test_accuracy_and_macro_f1(preds, refs, acc, f1):
    out = load_metric("classification").compute(predictions=preds, references=refs)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["macro_f1"] == pytest.approx(f1)


def test_unknown_metric_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'bleu'; ssaf ships: classification, squad"):
        load_metric("bleu")
