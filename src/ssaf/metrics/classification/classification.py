"""Classification accuracy and macro F1, as an `evaluate` metric module loaded from this directory (offline)."""

import datasets
import evaluate

_DESCRIPTION = (
    "accuracy: the fraction of predictions equal to their reference; macro_f1: the unweighted mean over the "
    "classes present in references or predictions of 2PR/(P+R), a class with no true positive scoring 0."
)
_KWARGS = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): gold label ids.
Returns:
    accuracy (float), macro_f1 (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("scores of an empty evaluation set are undefined")
        pairs = list(zip(predictions, references, strict=True))
        scores = []
        for c in sorted(set(references) | set(predictions)):
            tp = sum(1 for p, r in pairs if p == c and r == c)
            fp = sum(1 for p, r in pairs if p == c and r != c)
            fn = sum(1 for p, r in pairs if p != c and r == c)
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {
            "accuracy": sum(1 for p, r in pairs if p == r) / len(pairs),
            "macro_f1": sum(scores) / len(scores),
        }
