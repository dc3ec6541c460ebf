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

from ssaf.config import ConfigError, check_environment, check_model_source, settings

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def check(tmp_path: Path, *overrides: str) -> None:
    check_environment(settings(cfg("experiment=smoke", *overrides), tmp_path))


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
    r = run_cli("experiment=smoke", "model=tiny", f"data.dir={data}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{data}/sst2/train.tsv:3: byte 0xe9 at column 7 is not UTF-8" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "rejected" and "train.tsv:3" in json.dumps(metrics)
