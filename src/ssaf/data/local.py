"""Readers for the usual on-disk layouts of each task (GLUE TSV, SST stsa.*, JSON lines, SciTail,
SemEval and SenTube), under one data root such as ``../shared/data``.

Every reader yields ``(line, (text_a, text_b, label_name))`` and names the file and line of any row it
cannot read; the line also names a row whose label the task does not know (``ssaf.data.load.to_dataset``).
Label strings are mapped to the task's label order by name, never by a tool's integer id (MNLI's ids
differ between datasets, transformers and released checkpoints).
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ssaf.data.errors import DataError

log = logging.getLogger(__name__)

Row = tuple[str, str | None, str]  # text_a, text_b, label name
Numbered = tuple[int, Row]  # the row's line in its file, the row


NOT_UTF8_FIX = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8) or point data.dir elsewhere"


def _open_bytes(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decode(path: Path, line: int, raw: bytes) -> str:
    """One line as text: a DataError naming file, line and column for a byte that is not UTF-8, or for the
    NUL byte of a binary file (valid UTF-8, so a decoder alone lets a binary file through)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _malformed(
            path, line, f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; {NOT_UTF8_FIX}"
        ) from None
    if "\x00" in text:
        raise _malformed(path, line, "contains a NUL byte: this is a binary file, not text; point at the text file")
    return text


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a plain or gzip-compressed UTF-8 file (line endings kept).

    Each line is decoded on its own, so an invalid byte is reported with its line, not as a position in
    an 8 KB read buffer; an unreadable or corrupt gzip file is a DataError naming the file.
    """
    try:
        with _open_bytes(path) as f:
            for line, raw in enumerate(f, start=1):
                yield line, _decode(path, line, raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a truncated gzip ends in EOFError
        raise DataError(f"{path}: cannot be read ({e}); expected UTF-8 text (plain, or gzip if named *.gz)") from e


def read_text(path: Path) -> str:
    """A whole plain or gzip-compressed UTF-8 file (for JSON documents), with text_lines' errors."""
    return "".join(text for _, text in text_lines(path))


def _tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    # GLUE TSVs are not CSV-quoted: about 3% of MNLI rows contain '"', and default quoting merges rows.
    # Without quoting a row is one line, so the line numbers are text_lines'.
    for line, text in text_lines(path):
        try:
            row = next(csv.reader([text.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE), [])
        except csv.Error as e:  # a lone carriage return inside the line
            raise _malformed(path, line, f"{e}; expected one row per line") from e
        yield line, row


def _malformed(path: Path, line: int, why: str) -> DataError:
    return DataError(f"{path}:{line}: {why}")


GLUE_SST2_LABELS = {"0": "negative", "1": "positive"}  # GLUE's ids for SST-2


def read_glue_sst2(path: Path) -> Iterator[Numbered]:
    """GLUE SST-2 TSV with a header ``sentence<TAB>label``; GLUE's label ids 0/1 are negative/positive."""
    rows = _tsv(path)
    _, header = next(rows, (0, []))
    if "sentence" not in header or "label" not in header:
        raise _malformed(path, 1, f"expected a header with 'sentence' and 'label', got {header}")
    si, li = header.index("sentence"), header.index("label")
    for line, row in rows:
        if len(row) != len(header):
            raise _malformed(path, line, f"expected {len(header)} tab-separated fields, got {len(row)}")
        raw = row[li].strip()
        if raw not in GLUE_SST2_LABELS:
            raise _malformed(path, line, f"unknown SST-2 label {raw!r}; GLUE uses 0 (negative) and 1 (positive)")
        yield line, (row[si].strip(), None, GLUE_SST2_LABELS[raw])


def read_glue_pair(path: Path) -> Iterator[Numbered]:
    """GLUE MNLI/SNLI TSV: sentences by header name, the gold label in the LAST column.

    SNLI's GLUE file has rows of 11, 14 or 15 columns (validated rows carry label1-label5), so the
    label is taken from the end of each row, as the GLUE processors do.
    """
    rows = _tsv(path)
    _, header = next(rows, (0, []))
    if "sentence1" not in header or "sentence2" not in header:
        raise _malformed(path, 1, f"expected a GLUE header with sentence1 and sentence2, got {header[:10]}")
    a, b = header.index("sentence1"), header.index("sentence2")
    for line, row in rows:
        if len(row) <= b + 1:
            raise _malformed(path, line, f"expected at least {b + 2} tab-separated fields, got {len(row)}")
        yield line, (row[a], row[b], row[-1].strip())


def read_jsonl_pair(path: Path) -> Iterator[Numbered]:
    """JSON lines with ``premise``, ``hypothesis`` and a string ``label``."""
    for line, text in text_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            row = obj["premise"], obj["hypothesis"], str(obj["label"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise _malformed(path, line, f"expected JSON with premise, hypothesis, label ({e})") from e
        yield line, row


def read_stsa(labels: tuple[str, ...]) -> Callable[[Path], Iterator[Numbered]]:
    """SST ``stsa.*`` files: ``<label index> <sentence>`` per line, indices in the order of ``labels``
    (binary: 0 negative, 1 positive; fine: 0 very negative ... 4 very positive, as the files define them)."""

    # By the exact strings "0", "1", ...: str.isdigit() accepts "²" and int() then fails on it.
    by_index = {str(i): name for i, name in enumerate(labels)}

    def read(path: Path) -> Iterator[Numbered]:
        for line, text in text_lines(path):
            parts = text.rstrip("\r\n").split(" ", 1)
            if len(parts) != 2 or parts[0] not in by_index:
                raise _malformed(
                    path, line, f"expected '<label 0-{len(labels) - 1}> <sentence>', got {text.rstrip()[:40]!r}"
                )
            yield line, (parts[1], None, by_index[parts[0]])

    return read


def read_scitail(path: Path) -> Iterator[Numbered]:
    """SciTail tsv_format: ``premise<TAB>hypothesis<TAB>entails|neutral``, no header."""
    for line, row in _tsv(path):
        if len(row) != 3:
            raise _malformed(path, line, f"expected premise, hypothesis, label (3 fields), got {len(row)}")
        yield line, (row[0], row[1], row[2].strip())


SEMEVAL_LABELS = {
    "negative": "negative",
    "neutral": "neutral",
    "objective": "neutral",
    "objective-OR-neutral": "neutral",
    "positive": "positive",
}


def read_semeval(path: Path) -> Iterator[Numbered]:
    """Barnes et al. SemEval TSV: ``tweet_id user_id label text``; neutral/objective merged (3 classes)."""
    for line, row in _tsv(path):
        if len(row) != 4:
            raise _malformed(path, line, f"expected tweet_id, user_id, label, text (4 fields), got {len(row)}")
        raw = row[2].strip().strip('"')  # quoted in train/dev, bare in test
        if raw not in SEMEVAL_LABELS:
            raise _malformed(path, line, f"unknown SemEval label {raw!r}; known: {', '.join(SEMEVAL_LABELS)}")
        yield line, (row[3], None, SEMEVAL_LABELS[raw])


def read_pos_neg_dir(path: Path) -> Iterator[Numbered]:
    """SenTube: a folder with ``pos.txt`` and ``neg.txt``, one comment per line."""
    for name, label in (("neg.txt", "negative"), ("pos.txt", "positive")):
        file = path / name
        if not file.exists():
            raise DataError(f"{file} is missing: a SenTube split folder holds pos.txt and neg.txt")
        for line, text in text_lines(file):
            text = text.replace("\ufeff", "").strip()
            if text:
                yield line, (text, None, label)


@dataclass(frozen=True)
class Layout:
    """Candidate relative paths (glob patterns, first match wins) per split, and the reader per path."""

    paths: dict[str, tuple[str, ...]]
    reader: Callable[[Path], Iterator[Numbered]]


def _pair_reader(path: Path) -> Iterator[Numbered]:
    name = path.name.removesuffix(".gz")
    return read_jsonl_pair(path) if name.endswith(".jsonl") else read_glue_pair(path)


def _glue_pair_paths(task: str, splits: dict[str, str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for split, stem in splits.items():
        out[split] = tuple(
            f"{task}/{stem}{suffix}"
            for suffix in (".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz", ".glue_subset*.tsv.gz", ".glue_subset*.tsv")
        )
    return out


def _barnes(name: str) -> tuple[str, ...]:
    return (f"sentiment_barnes/{name}", name)


LAYOUTS: dict[str, Callable[[tuple[str, ...]], Layout]] = {
    "glue_sst2": lambda labels: Layout(
        {
            "train": ("sst2/train.tsv", "sst2/train.tsv.gz", "SST-2/train.tsv"),
            "validation": ("sst2/dev.tsv", "sst2/dev.tsv.gz", "SST-2/dev.tsv"),
        },
        read_glue_sst2,
    ),
    "stsa_binary": lambda labels: Layout(
        {
            "train": ("sst_sentences/stsa.binary.train", "sst2_sentences/stsa.binary.train"),
            "validation": ("sst_sentences/stsa.binary.dev", "sst2_sentences/stsa.binary.dev"),
            "test": ("sst_sentences/stsa.binary.test", "sst2_sentences/stsa.binary.test"),
        },
        read_stsa(labels),
    ),
    "stsa_fine": lambda labels: Layout(
        {
            "train": ("sst_sentences/stsa.fine.train", "sst5/stsa.fine.train"),
            "validation": ("sst_sentences/stsa.fine.dev", "sst5/stsa.fine.dev"),
            "test": ("sst_sentences/stsa.fine.test", "sst5/stsa.fine.test"),
        },
        read_stsa(labels),
    ),
    "mnli": lambda labels: Layout(
        _glue_pair_paths(
            "mnli",
            {"train": "train", "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched"},
        ),
        _pair_reader,
    ),
    "snli": lambda labels: Layout(
        _glue_pair_paths("snli", {"train": "train", "validation": "dev", "test": "test"}), _pair_reader
    ),
    "scitail": lambda labels: Layout(
        {
            split: (f"scitail/scitail_1.0_{stem}.tsv", f"scitail/tsv_format/scitail_1.0_{stem}.tsv")
            for split, stem in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read_scitail,
    ),
    "semeval": lambda labels: Layout(
        {
            split: tuple(f"{d}/{stem}.tsv" for d in _barnes("semeval"))
            for split, stem in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read_semeval,
    ),
    "sentube_auto": lambda labels: Layout(
        {
            split: _barnes(f"sentube_auto/{stem}")
            for split, stem in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read_pos_neg_dir,
    ),
    "sentube_tablets": lambda labels: Layout(
        {
            split: _barnes(f"sentube_tablets/{stem}")
            for split, stem in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read_pos_neg_dir,
    ),
}


def find_split_file(root: Path, paths: dict[str, tuple[str, ...]], split: str) -> Path:
    """The first existing path for ``split`` under ``root``; a DataError listing every path tried."""
    candidates = paths.get(split)
    if not candidates:
        raise DataError(f"the local layout has no split {split!r}; it has {', '.join(paths)}")
    for pattern in candidates:
        hits = sorted(glob.glob(os.path.join(root, pattern)))
        if hits:
            return Path(hits[0])
    tried = "\n  ".join(str(root / p) for p in candidates)
    raise DataError(f"no file for split {split!r} under {root}; expected one of:\n  {tried}")


def read_local_split(
    root: Path, layout_name: str, split: str, labels: tuple[str, ...]
) -> tuple[list[Row], list[int], Path]:
    """All rows of one split, the line of each in its file, and the path they came from."""
    if layout_name not in LAYOUTS:
        raise DataError(f"unknown local layout {layout_name!r}; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[layout_name](labels)
    path = find_split_file(root, layout.paths, split)
    numbered = list(layout.reader(path))
    if not numbered:
        raise DataError(f"{path}: split {split!r} is empty")
    log.info("read %d rows of %s from %s", len(numbered), split, path)
    return [row for _, row in numbered], [line for line, _ in numbered], path
