"""SQuAD v1.1: reading (local JSON / hub), answer checks, and window features for extractive QA.

Features follow the standard recipe: the question and a window of the context (``max_length`` tokens,
windows overlapping by ``stride`` tokens), offsets kept for mapping back to characters; a training window
that does not contain the answer is labelled with the CLS token.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from ssaf.data.errors import DataError
from ssaf.data.load import file_version
from ssaf.data.local import find_split_file, read_text
from ssaf.data.sample import SAMPLE_VERSION
from ssaf.settings import HubSource

log = logging.getLogger(__name__)

PATHS = {  # candidate files per split under the data root, first match wins
    "train": (
        "squad/train-v1.1.json",
        "squad/train-v1.1.json.gz",
        "squad/train-v1.1.*.json.gz",
        "squad/train*.json*",
    ),
    "validation": ("squad/dev-v1.1.json", "squad/dev-v1.1.json.gz", "squad/dev*.json*"),
}
MAX_QUESTION_TOKENS = 64


@dataclass
class SquadReport:
    """What reading a split changed or dropped, so that nothing disappears silently."""

    where: str
    questions: int = 0
    kept: int = 0
    no_answer: list[str] = field(default_factory=list)
    offset_fixed: list[str] = field(default_factory=list)
    offset_dropped: list[str] = field(default_factory=list)

    def log(self) -> None:
        for what, ids in (
            ("had no answer and were dropped", self.no_answer),
            ("had an answer_start that did not match the context; the nearest match was used", self.offset_fixed),
            ("had an answer not found in the context and were dropped", self.offset_dropped),
        ):
            if ids:
                log.warning("%s: %d questions %s (e.g. %s)", self.where, len(ids), what, ", ".join(ids[:5]))

    def as_dict(self) -> dict[str, int]:
        return {
            "questions": self.questions,
            "kept": self.kept,
            "no_answer": len(self.no_answer),
            "offset_fixed": len(self.offset_fixed),
            "offset_dropped": len(self.offset_dropped),
        }


def check_answers(qid: str, context: str, answers: list[dict], report: SquadReport) -> dict[str, list] | None:
    """Answers whose offsets match the context (repairing shifted offsets), or None to drop the question."""
    texts, starts = [], []
    for a in answers:
        text, start = a["text"], int(a["answer_start"])
        if context[start : start + len(text)] != text:
            hits = [i for i in range(len(context)) if context.startswith(text, i)]
            if not hits:
                report.offset_dropped.append(qid)
                return None
            start = min(hits, key=lambda i: abs(i - start))
            report.offset_fixed.append(qid)
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}


def squad_rows(articles: list[dict], where: str, need_answers: bool = True) -> tuple[list[dict], SquadReport]:
    """Flatten SQuAD articles into one row per question, checking every answer against its context."""
    report = SquadReport(where)
    rows = []
    for art in articles:
        for para in art["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                report.questions += 1
                if not qa.get("answers"):
                    report.no_answer.append(qa["id"])
                    if need_answers:
                        continue
                answers = check_answers(qa["id"], context, qa.get("answers", []), report)
                if answers is None:
                    continue
                rows.append(
                    {
                        "id": qa["id"],
                        "title": art.get("title", ""),
                        "context": context,
                        "question": qa["question"],
                        "answers": answers,
                    }
                )
    report.kept = len(rows)
    return rows, report


def read_squad_file(path: Path) -> list[dict]:
    text = read_text(path)  # a byte that is not UTF-8 is named by line there
    try:
        return json.loads(text)["data"]
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not JSON ({e.msg}, column {e.colno}); expected SQuAD v1.1 JSON") from e
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not SQuAD JSON ({{'data': [{{'paragraphs': ...}}]}}): missing {e}") from e


def load_squad_split(
    source: str, data_dir: str | None, split: str, hub_source: HubSource | None = None
) -> tuple[datasets.Dataset, SquadReport, str, str]:
    """One split as a dataset of questions (id, title, context, question, answers), where it came from, and
    what identifies its data (a file hash, or the hub id and revision)."""
    if source == "local":
        assert data_dir is not None
        path = find_split_file(Path(data_dir), PATHS, split)
        try:
            rows, report = squad_rows(read_squad_file(path), str(path))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, DataError):
                raise
            # The file is JSON but an article, paragraph or question lacks a field (or has the wrong type).
            raise DataError(
                f"{path}: not SQuAD v1.1 ({type(e).__name__}: {e}); each article needs 'paragraphs', each "
                "paragraph 'context' and 'qas', each question 'id', 'question' and 'answers' [{'text', "
                "'answer_start' (an integer)}]"
            ) from e
        where, version = str(path), file_version(path)
    elif source == "hub":
        if hub_source is None or split not in hub_source.splits:
            mapped = hub_source.splits if hub_source else {}
            raise DataError(f"task squad: no hub split for {split!r}; task.hub.splits maps {mapped}")
        hub = datasets.load_dataset(hub_source.path, hub_source.name, split=hub_source.splits[split])
        version = f"{hub_source.path}:{hub_source.splits[split]}@{hub._fingerprint}"
        articles: dict[str, Any] = {}
        for ex in hub:  # rebuild the article structure so that the same checks apply
            para = {
                "context": ex["context"],
                "qas": [
                    {
                        "id": ex["id"],
                        "question": ex["question"],
                        "answers": [
                            {"text": t, "answer_start": s}
                            for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"], strict=True)
                        ],
                    }
                ],
            }
            articles.setdefault(ex["title"], {"title": ex["title"], "paragraphs": []})["paragraphs"].append(para)
        where = f"hub:{hub_source.path}:{hub_source.splits[split]}"
        rows, report = squad_rows(list(articles.values()), where)
    else:
        rows, report = squad_rows(sample_articles(split), f"sample:squad/{split}")
        where = f"sample:squad/{split}"
        version = f"{where}/v{SAMPLE_VERSION}"
    if not rows:
        raise DataError(f"{where}: no answerable questions in split {split!r}")
    report.log()
    return datasets.Dataset.from_list(rows), report, where, version


def sample_articles(split: str) -> list[dict]:
    """A generated demo set of questions with answers in short contexts (not SQuAD; for smoke runs)."""
    import random

    rng = random.Random(f"squad/{split}")
    people = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John"]
    cities = ["Paris", "London", "Cairo", "Lima", "Oslo", "Kyoto", "Quito", "Perth"]
    things = ["a compiler", "a bridge", "a telescope", "a violin", "a garden", "a museum"]
    paras = []
    for i in range(60 if split == "train" else 20):
        who, city, what, year = rng.choice(people), rng.choice(cities), rng.choice(things), rng.randint(1800, 2020)
        context = f"In {year}, {who} built {what} in {city}. Many people later visited {city} to see it."
        qas = [
            {
                "id": f"{split}-{i}-who",
                "question": f"Who built {what}?",
                "answers": [{"text": who, "answer_start": context.index(who)}],
            },
            {
                "id": f"{split}-{i}-where",
                "question": f"Where did {who} build {what}?",
                "answers": [{"text": city, "answer_start": context.index(city)}],
            },
            {
                "id": f"{split}-{i}-when",
                "question": f"When did {who} build {what}?",
                "answers": [{"text": str(year), "answer_start": context.index(str(year))}],
            },
        ]
        paras.append({"context": context, "qas": qas})
    return [{"title": "demo", "paragraphs": paras}]


def _tokenize(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int) -> Any:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"SQuAD features need a fast tokenizer (offset mappings); {type(tokenizer).__name__} is not one. "
            "Install `tokenizers` or use a model that ships tokenizer.json."
        )
    questions = [q.lstrip() for q in batch["question"]]
    # Very long questions would leave no room for the context; cap them (rare in SQuAD).
    ids = tokenizer(questions, add_special_tokens=False)["input_ids"]
    questions = [
        tokenizer.decode(i[:MAX_QUESTION_TOKENS]) if len(i) > MAX_QUESTION_TOKENS else q
        for q, i in zip(questions, ids, strict=True)
    ]
    return tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def prepare_train_features(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int
) -> dict[str, list]:
    """Windows with start/end token labels; the CLS index when the window does not contain the answer."""
    enc = _tokenize(batch, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offs in enumerate(offsets):
        cls = enc["input_ids"][i].index(tokenizer.cls_token_id)
        seq = enc.sequence_ids(i)
        answer = batch["answers"][sample_map[i]]
        a_start = answer["answer_start"][0]
        a_end = a_start + len(answer["text"][0])
        first = seq.index(1)
        last = len(seq) - 1 - seq[::-1].index(1)
        if not (offs[first][0] <= a_start and offs[last][1] >= a_end):
            starts.append(cls)
            ends.append(cls)
            continue
        s = first
        while s <= last and offs[s][0] <= a_start:
            s += 1
        e = last
        while e >= first and offs[e][1] >= a_end:
            e -= 1
        starts.append(s - 1)
        ends.append(e + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    enc["example_index"] = list(sample_map)
    return dict(enc)


def prepare_eval_features(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int
) -> dict[str, list]:
    """Windows with the question id and context-only offsets (None elsewhere) for post-processing."""
    enc = _tokenize(batch, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = [batch["id"][j] for j in sample_map]
    enc["offset_mapping"] = [
        [o if s == 1 else None for o, s in zip(offs, enc.sequence_ids(i), strict=True)]
        for i, offs in enumerate(enc["offset_mapping"])
    ]
    return dict(enc)


def tokenize_squad(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int, train: bool
) -> datasets.Dataset:
    """Windows of ``ds``: training features with labels, or evaluation features sorted longest first.

    Evaluation windows are sorted by length because batches are padded to their longest window: on
    the SQuAD dev set this cuts the padded tokens (and the quadratic attention cost) of random batches
    roughly in half, and longest-first makes a memory limit show at the first batch. Post-processing
    finds a question's windows by ``example_id``, so the order does not change any prediction.
    """
    fn = prepare_train_features if train else prepare_eval_features
    out = ds.map(
        fn,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "stride": stride},
        remove_columns=ds.column_names,
        desc="windows",
    )
    if train or len(out) == 0:
        return out
    lengths = [len(ids) for ids in out["input_ids"]]
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return out.select(order)
