"""Macro-averaged F1 over the classes present in references or predictions (an `evaluate` metric module)."""

import datasets
import evaluate

_DESCRIPTION = "Macro F1: the unweighted mean over classes of 2PR/(P+R), a class with no true positive scoring 0."
_KWARGS = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): gold label ids.
Returns:
    macro_f1 (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("F1 of an empty evaluation set is undefined")
        scores = []
        for c in sorted(set(references) | set(predictions)):
            tp = sum(1 for p, r in zip(predictions, references, strict=False) if p == c and r == c)
            fp = sum(1 for p, r in zip(predictions, references, strict=False) if p == c and r != c)
            fn = sum(1 for p, r in zip(predictions, references, strict=False) if p != c and r == c)
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {"macro_f1": sum(scores) / len(scores)}
