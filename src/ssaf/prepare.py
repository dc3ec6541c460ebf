"""Per task kind: data -> trainer inputs (datasets, collator, the trainer's extras, the example to draw).

Each function is named by its kind's record (``ssaf.kinds``: ``Kind.prepare``), which also names the trainer
the inputs are for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from ssaf.config import RunSettings
from ssaf.data import load_task_data
from ssaf.data.features import tokenize_split
from ssaf.data.load import cap_split, fingerprint, resolve_data_source
from ssaf.data.squad import load_squad_split, tokenize_squad
from ssaf.training import ClassificationMetrics


@dataclass
class Prepared:
    train: datasets.Dataset
    evals: dict[str, datasets.Dataset]  # evaluated during training (the first selects the checkpoint)
    trainer_kwargs: dict[str, Any]  # for the kind's trainer (ssaf.kinds: Kind.trainer)
    example: dict[str, Any]  # the first eval row: its kind's example fields are drawn in the attention heatmap
    source: str
    origin: dict[str, str]
    sizes: dict[str, int]
    fingerprint: str  # the data itself (see ssaf.data.load.fingerprint)
    dropped: dict[str, int] = field(default_factory=dict)  # split -> rows without a gold label, dropped
    tests: dict[str, datasets.Dataset] = field(default_factory=dict)  # evaluated once, on the selected model
    # QA: split -> what reading checked (ssaf.data.squad.SquadReport.as_dict: questions, kept, repaired, dropped)
    answer_checks: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare_classification(s: RunSettings, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    t = s.trainer
    data = load_task_data(
        s.task, s.data.source, s.data.dir, (s.task.train_split, *s.task.eval_splits, *s.task.test_splits),
        t.max_train_samples, t.max_eval_samples, seed=s.seed,
    )  # fmt: skip
    tokenized = {k: tokenize_split(v, tokenizer, t.max_seq_length) for k, v in data.splits.items()}
    first = data.splits[s.task.eval_splits[0]][0]
    return Prepared(
        train=tokenized[s.task.train_split],
        evals={k: tokenized[k] for k in s.task.eval_splits},
        tests={k: tokenized[k] for k in s.task.test_splits},
        trainer_kwargs={
            "compute_metrics": ClassificationMetrics(),
            "data_collator": DataCollatorWithPadding(tokenizer),
        },
        example=first,
        source=data.source,
        origin=data.origin,
        sizes=data.sizes(),
        fingerprint=data.fingerprint,
        dropped=data.dropped,
    )


def prepare_qa(s: RunSettings, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    t = s.trainer
    source = resolve_data_source(s.data.source, s.data.dir, s.task)
    stride = int(s.task.extra.get("doc_stride", 128))  # checked against max_seq_length by ssaf.config
    origin, sizes, dropped, checks, examples, versions = {}, {}, {}, {}, {}, {}
    for split in (s.task.train_split, *s.task.eval_splits):
        ds, report, where, versions[split] = load_squad_split(source, s.data.dir, split, s.task.hub)
        train = split == s.task.train_split
        ds = cap_split(ds, t.max_train_samples if train else t.max_eval_samples, s.seed if train else None, split)
        examples[split], origin[split], sizes[split] = ds, where, len(ds)
        checks[split], dropped[split] = report.as_dict(), len(report.no_answer)  # no gold answer: dropped
    train = tokenize_squad(examples[s.task.train_split], tokenizer, t.max_seq_length, stride, train=True)
    evals = {
        k: tokenize_squad(examples[k], tokenizer, t.max_seq_length, stride, train=False) for k in s.task.eval_splits
    }
    first = examples[s.task.eval_splits[0]][0]
    return Prepared(
        train=train,
        evals=evals,
        trainer_kwargs={
            "eval_examples": {k: examples[k] for k in s.task.eval_splits},
            "n_best": int(s.task.extra.get("n_best", 20)),
            "max_answer_length": int(s.task.extra.get("max_answer_length", 30)),
            "data_collator": DataCollatorWithPadding(tokenizer),
        },
        example=first,
        source=source,
        origin=origin,
        sizes={**sizes, "train_windows": len(train), **{f"{k}_windows": len(v) for k, v in evals.items()}},
        fingerprint=fingerprint(source, versions),
        dropped=dropped,
        answer_checks=checks,
    )
