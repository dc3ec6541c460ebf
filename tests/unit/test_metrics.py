"""The shipped classification metric module on hand-made cases."""

import pytest

from ssaf.metrics import AVAILABLE, load_metric


def test_ships_the_metrics_the_tasks_name():
    assert set(AVAILABLE) >= {"classification", "squad"}


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
