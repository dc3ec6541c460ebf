"""Local readers on fixtures this test writes, label mapping, errors, the demo set, and the real data if present."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssaf.data import DataError, load_task_data
from ssaf.settings import TaskSpec

CONF = Path(__file__).resolve().parents[2] / "conf"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# Classification tasks; SQuAD has its own reader and tests (test_squad.py).
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml") if "kind: qa" not in p.read_text())


def task(name: str, **changes):
    """The task as the config schema builds it from conf/task/<name>.yaml (with ``changes``)."""
    d = OmegaConf.merge(OmegaConf.structured(TaskSpec), OmegaConf.load(CONF / "task" / f"{name}.yaml"), changes)
    return OmegaConf.to_object(d)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
)


def mnli_row(i: int, a: str, b: str, label: str) -> str:
    return f"{i}\t1\t1a\tfiction\t(x)\t(y)\t(X)\t(Y)\t{a}\t{b}\t{label}\t{label}\n"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A small copy of every local layout, written here."""
    r = tmp_path / "data"
    write(r / "sst2/train.tsv.gz", 'sentence\tlabel\nhide new secretions \t0\na "quoted" gem \t1\n')
    write(r / "sst2/dev.tsv", "sentence\tlabel\nit 's a charming journey . \t1\n")
    for split in ("train", "dev", "test"):
        write(r / f"sst_sentences/stsa.fine.{split}", "4 a masterpiece\n0 awful\n2 it is a film\n")
        write(r / f"sst_sentences/stsa.binary.{split}", "1 a gem -lrb- really -rrb-\n0 dull\n")
    write(
        r / "mnli/train.glue_subset3.tsv.gz",
        MNLI_TRAIN_HEADER
        + mnli_row(0, 'He said "no', "He refused.", "entailment")
        + mnli_row(1, "A cat sat.", "A dog sat.", "contradiction")
        + mnli_row(2, "It rained.", "It was cold.", "neutral"),
    )
    write(
        r / "mnli/dev_matched.jsonl.gz",
        "\n".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) for p, h, y in [("a", "b", "neutral")]),
    )
    dev_header = MNLI_TRAIN_HEADER.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
    write(
        r / "mnli/dev_mismatched.glue_subset1.tsv.gz",
        dev_header + "0\t1\t1a\tletters\t(x)\t(y)\t(X)\t(Y)\tP.\tH.\tcontradiction\tc\tc\tc\tc\tcontradiction\n",
    )
    snli_header = (
        "index\tcaptionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    )
    write(
        r / "snli/train.glue_subset2.tsv.gz",
        snli_header
        + "0\tc\tp\t(x)\t(y)\t(X)\t(Y)\tA man.\tA person.\tentailment\tentailment\n"
        + "1\tc\tp\t(x)\t(y)\t(X)\t(Y)\tA kid.\tNobody.\tcontradiction\tcontradiction\tc\tc\tc\tcontradiction\n",
    )
    for split in ("dev", "test"):
        write(r / f"snli/{split}.jsonl.gz", json.dumps({"premise": "p", "hypothesis": "h", "label": "entailment"}))
    for split in ("train", "dev", "test"):
        write(r / f"scitail/scitail_1.0_{split}.tsv", "Plants grow.\tPlants get bigger.\tentails\nX.\tY.\tneutral\n")
        quoted = '"negative"' if split != "test" else "negative"
        write(
            r / f"sentiment_barnes/semeval/{split}.tsv",
            f"1\t2\t{quoted}\tugh monday\n3\t4\tobjective-OR-neutral\tnews at 9\n5\t6\tpositive\tyay\n",
        )
        for family in ("sentube_auto", "sentube_tablets"):
            write(r / f"sentiment_barnes/{family}/{split}/pos.txt", "\ufeffgreat car\n")
            write(r / f"sentiment_barnes/{family}/{split}/neg.txt", "bad brakes\n\n")
    return r


@pytest.mark.parametrize("name", TASKS)
def test_every_task_reads_its_local_layout(data_root, name):
    t = task(name)
    data = load_task_data(t, "local", str(data_root), t.splits)
    assert data.source == "local"
    for split in t.splits:
        ds = data.splits[split]
        assert len(ds) > 0
        assert set(ds["label"]) <= set(range(len(t.labels)))
        assert ("text_b" in ds.column_names) == t.pair
        assert all(isinstance(x, str) and x for x in ds["text_a"])


def test_glue_tsv_is_read_without_csv_quoting(data_root):
    ds = load_task_data(task("sst2"), "local", str(data_root), ("train",)).splits["train"]
    assert sorted(ds["text_a"]) == ['a "quoted" gem', "hide new secretions"]


def test_mnli_labels_are_mapped_by_name(data_root):
    t = task("mnli")
    assert t.labels == ("entailment", "neutral", "contradiction")
    ds = load_task_data(t, "local", str(data_root), ("train",)).splits["train"]
    by_premise = dict(zip(ds["text_a"], ds["label"], strict=True))
    assert by_premise == {'He said "no': 0, "A cat sat.": 2, "It rained.": 1}


def test_snli_label_comes_from_the_last_column_whatever_the_row_length(data_root):
    ds = load_task_data(task("snli"), "local", str(data_root), ("train",)).splits["train"]
    assert sorted(zip(ds["text_a"], ds["label"], strict=True)) == [("A kid.", 2), ("A man.", 0)]


def test_semeval_merges_objective_into_neutral_and_unquotes(data_root):
    ds = load_task_data(task("semeval"), "local", str(data_root), ("train", "test"))
    for split in ("train", "test"):
        got = dict(zip(ds.splits[split]["text_a"], ds.splits[split]["label"], strict=True))
        assert got == {"ugh monday": 0, "news at 9": 1, "yay": 2}


def test_missing_file_names_every_path_tried(tmp_path):
    with pytest.raises(DataError, match=r"(?s)no file for split 'train'.*sst2/train.tsv\n.*sst2/train.tsv.gz"):
        load_task_data(task("sst2"), "local", str(tmp_path), ("train",))


def test_malformed_row_names_file_and_line(tmp_path):
    write(tmp_path / "sst2/dev.tsv", "sentence\tlabel\nfine \t1\nbroken row without label\n")
    with pytest.raises(DataError, match=r"sst2/dev.tsv:3: expected 2 tab-separated fields, got 1"):
        load_task_data(task("sst2"), "local", str(tmp_path), ("validation",))


@pytest.mark.parametrize(
    "name,path,text,where",
    [
        # a blank line is skipped but still counted: the error names the line an editor shows
        ("snli", "snli/dev.jsonl", '{"premise": "a", "hypothesis": "b", "label": "neutral"}\n\n{"premise": "a"}\n', 3),
        ("sst5", "sst5/stsa.fine.dev", "3 a fine film\n4 great\nno label here\n", 3),
        ("sst5", "sst5/stsa.fine.dev", "3 a fine film\n7 out of range\n", 2),
    ],
    ids=["json lines", "stsa", "stsa label out of range"],
)
def test_malformed_rows_of_json_lines_and_stsa_files_name_their_line(tmp_path, name, path, text, where):
    write(tmp_path / path, text)
    with pytest.raises(DataError, match=rf"{path}:{where}: expected"):
        load_task_data(task(name), "local", str(tmp_path), ("validation",))


def test_unknown_label_names_the_line_and_the_valid_labels(tmp_path):
    write(tmp_path / "scitail/scitail_1.0_test.tsv", "a\tb\tentails\nc\td\tcontradiction\n")
    with pytest.raises(DataError, match=r"scitail_1.0_test.tsv:2: unknown label 'contradiction'.*entails"):
        load_task_data(task("scitail"), "local", str(tmp_path), ("test",))


@pytest.mark.parametrize(
    "name,split,rel,text,line",
    [
        # the header is line 1: the second data row is line 3 (it was named "row 2")
        ("mnli", "train", "mnli/train.tsv", MNLI_TRAIN_HEADER + mnli_row(0, "a", "b", "neutral")
         + mnli_row(1, "c", "d", "contradicts"), 3),
        # blank lines are skipped but counted
        ("mnli", "validation_matched", "mnli/dev_matched.jsonl",
         '{"premise": "a", "hypothesis": "b", "label": "neutral"}\n\n{"premise": "c", "hypothesis": "d", "label": 7}\n',
         3),
    ],
    ids=["tsv with a header", "json lines with a blank line"],
)  # fmt: skip
def test_unknown_label_names_the_line_an_editor_shows(tmp_path, name, split, rel, text, line):
    write(tmp_path / rel, text)
    with pytest.raises(DataError, match=rf"{rel}:{line}: unknown label"):
        load_task_data(task(name), "local", str(tmp_path), (split,))


def test_empty_split_is_an_error(tmp_path):
    write(tmp_path / "sst2/dev.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match=r"split 'validation' is empty"):
        load_task_data(task("sst2"), "local", str(tmp_path), ("validation",))


def test_caps_shuffle_train_with_the_seed_and_keep_eval_order(data_root):
    t = task("sst5")
    a = load_task_data(t, "local", str(data_root), ("train", "validation"), 2, 2, seed=1)
    b = load_task_data(t, "local", str(data_root), ("train", "validation"), 2, 2, seed=1)
    assert a.sizes() == {"train": 2, "validation": 2}
    assert a.splits["train"]["text_a"] == b.splits["train"]["text_a"]
    assert a.splits["validation"]["text_a"] == ["a masterpiece", "awful"]


def test_sample_source_is_deterministic_and_labelled():
    t = task("mnli")
    a = load_task_data(t, "sample", None, t.splits)
    b = load_task_data(t, "sample", None, t.splits)
    assert a.source == "sample" and a.sizes()["train"] > 100
    assert a.splits["train"]["text_b"] == b.splits["train"]["text_b"]
    assert set(a.splits["train"]["label"]) == {0, 1, 2}


def test_auto_prefers_local_then_falls_back_to_sample_offline(data_root, caplog):
    t = task("sst2")
    assert load_task_data(t, "auto", str(data_root), ("validation",)).source == "local"
    assert load_task_data(t, "auto", None, ("validation",)).source == "sample"  # HF_HUB_OFFLINE=1 in tests
    assert "NO REAL DATA FOUND" in caplog.text and "SSAF_DATA_DIR" in caplog.text


def test_local_without_a_directory_is_an_error():
    with pytest.raises(ValueError, match=r"data.source=local needs a data folder"):
        load_task_data(task("sst2"), "local", None, ("train",))


def test_eval_split_the_task_lacks_is_rejected():
    with pytest.raises(ValueError, match=r"task sst2 has no split 'test'; its splits are: train, validation"):
        task("sst2", eval_splits=["test"])


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
@pytest.mark.parametrize(
    "name,sizes",
    [
        ("sst2", {"train": 67349, "validation": 872}),
        ("sst5", {"train": 8544, "validation": 1101, "test": 2210}),
        ("mnli", {"train": 15130, "validation_matched": 9815, "validation_mismatched": 1000}),
        ("snli", {"train": 15203, "validation": 9842, "test": 9824}),
        ("semeval", {"train": 6021, "validation": 890, "test": 2376}),
        ("sentube_auto", {"train": 3381, "validation": 225, "test": 903}),
        ("sentube_tablets", {"train": 4997, "validation": 333, "test": 1334}),
    ],
)
def test_shared_real_data_is_found_with_the_documented_counts(name, sizes):
    t = task(name)
    data = load_task_data(t, "local", str(SHARED), tuple(sizes))
    assert data.sizes() == sizes


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
def test_shared_mnli_label_distribution_matches_its_readme():
    t = task("mnli")
    ds = load_task_data(t, "local", str(SHARED), ("validation_matched",)).splits["validation_matched"]
    counts = [ds["label"].count(i) for i in range(3)]
    assert counts == [3479, 3123, 3213]  # entailment, neutral, contradiction


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")
def test_shared_scitail_has_only_test_and_train_reports_the_paths():
    t = task("scitail")
    assert load_task_data(t, "local", str(SHARED), ("test",)).sizes() == {"test": 2126}
    with pytest.raises(DataError, match=r"scitail_1.0_train.tsv"):
        load_task_data(t, "local", str(SHARED), ("train",))


# Every local layout, with the file of one of its splits.
BAD_BYTE_FILES = [
    ("sst2", "validation", "sst2/dev.tsv"),
    ("sst5", "validation", "sst_sentences/stsa.fine.dev"),
    ("mnli", "train", "mnli/train.glue_subset3.tsv.gz"),
    ("mnli", "validation_matched", "mnli/dev_matched.jsonl.gz"),
    ("scitail", "test", "scitail/scitail_1.0_test.tsv"),
    ("semeval", "train", "sentiment_barnes/semeval/train.tsv"),
    ("sentube_auto", "train", "sentiment_barnes/sentube_auto/train/neg.txt"),
]


def append_line(path: Path, line: bytes) -> int:
    """Append ``line`` to ``path`` (decompressed for .gz, keeping its compression); its 1-based line number."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lines = f.read().rstrip(b"\n").split(b"\n")
    with opener(path, "wb") as f:
        f.write(b"\n".join([*lines, line]) + b"\n")
    return len(lines) + 1


@pytest.mark.parametrize("name,split,rel", BAD_BYTE_FILES, ids=[f"{n}-{s}" for n, s, _ in BAD_BYTE_FILES])
def test_a_byte_that_is_not_utf8_names_file_line_and_fix(data_root, name, split, rel):
    line = append_line(data_root / rel, b"caf\xe9 latin-1")  # the first rows stay valid: the reader gets there
    with pytest.raises(DataError, match=rf"{rel}:{line}: byte 0xe9 at column 4 is not UTF-8; save the file as UTF-8"):
        load_task_data(task(name), "local", str(data_root), (split,))


def test_a_binary_file_names_file_and_line(data_root):
    path = data_root / "sst2/dev.tsv"
    path.write_bytes(b"sentence\tlabel\n\x00\x00\x00\x01\tIHDR\n")  # valid UTF-8, but NUL bytes
    with pytest.raises(DataError, match=r"sst2/dev.tsv:2: contains a NUL byte: this is a binary file"):
        load_task_data(task("sst2"), "local", str(data_root), ("validation",))


def test_a_file_named_gz_that_is_not_gzip_names_the_file(data_root):
    (data_root / "sst2/train.tsv.gz").write_bytes(b"sentence\tlabel\nplain text \t1\n")
    with pytest.raises(DataError, match=r"sst2/train.tsv.gz: cannot be read \(Not a gzipped file"):
        load_task_data(task("sst2"), "local", str(data_root), ("train",))


@pytest.mark.parametrize("label", ["²", "٣", "1.0", "-1", "9"])
def test_stsa_label_that_is_not_an_index_names_file_and_line(data_root, label):
    # "²".isdigit() and "٣".isdigit() are True; int("²") raises, int("٣") is 3: only "0".."4" are labels.
    write(data_root / "sst_sentences/stsa.fine.dev", f"4 a masterpiece\n{label} odd\n")
    with pytest.raises(DataError, match=rf"stsa.fine.dev:2: expected '<label 0-4> <sentence>', got '{label} odd'"):
        load_task_data(task("sst5"), "local", str(data_root), ("validation",))


def test_squad_file_that_is_not_utf8_names_file_and_line(tmp_path):
    from ssaf.data.squad import load_squad_split

    path = tmp_path / "squad/dev-v1.1.json"
    path.parent.mkdir()
    path.write_bytes(b'{"data": [\n{"title": "x",\n "paragraphs": [{"context": "caf\xe9"}]}]}\n')
    with pytest.raises(DataError, match=r"squad/dev-v1.1.json:3: byte 0xe9 at column 33 is not UTF-8"):
        load_squad_split("local", str(tmp_path), "validation")


def test_squad_file_missing_a_field_names_the_file_and_the_format(tmp_path):
    from ssaf.data.squad import load_squad_split

    question = {"id": "q", "answers": [{"text": "c", "answer_start": 0}]}  # no "question"
    path = tmp_path / "squad/dev-v1.1.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [question]}]}]}))
    with pytest.raises(DataError, match=r"dev-v1.1.json: not SQuAD v1.1 \(KeyError: 'question'\)"):
        load_squad_split("local", str(tmp_path), "validation")
