"""SQuAD v1.1 exact match and F1, exactly as the official evaluation script defines them
(an `evaluate` metric module loaded from this directory; works offline).

Normalisation: lower-case, remove punctuation, remove the articles a/an/the, collapse whitespace. EM and
F1 of a prediction are the maxima over its gold answers; the corpus scores are means, in percent.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 exact match and token F1 (official definitions), in percent."
_KWARGS = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list of str, "answer_start": list of int}}.
Returns:
    exact_match (float), f1 (float): in [0, 100].
"""


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace (official SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        pred = {p["id"]: p["prediction_text"] for p in predictions}
        if not references:
            raise ValueError("SQuAD scores of an empty evaluation set are undefined")
        missing = [r["id"] for r in references if r["id"] not in pred]
        if missing:
            raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
        em = f1 = 0.0
        for r in references:
            golds = r["answers"]["text"]
            if not golds:
                raise ValueError(f"question {r['id']} has no gold answer")
            em += metric_max_over_ground_truths(exact_match_score, pred[r["id"]], golds)
            f1 += metric_max_over_ground_truths(f1_score, pred[r["id"]], golds)
        return {"exact_match": 100.0 * em / len(references), "f1": 100.0 * f1 / len(references)}
