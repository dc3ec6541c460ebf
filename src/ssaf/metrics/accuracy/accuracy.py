"""Classification accuracy, as an `evaluate` metric module loaded from this directory (works offline)."""

import datasets
import evaluate

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference label."
_KWARGS = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): gold label ids.
Returns:
    accuracy (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("accuracy of an empty evaluation set is undefined")
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=False))
        return {"accuracy": correct / len(references)}
