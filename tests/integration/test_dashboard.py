"""The dashboards read only keys ssaf really logs (W&B offline runs read back from their .wandb files), and
TensorBoard gets the same scalars under the same names."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ssaf.dashboard import logged
from ssaf.dashboard.cli import main, missing, task_metrics
from ssaf.dashboard.logged import LoggedKeys, read_runs
from ssaf.dashboard.spec import Key, Panel, Section, build
from ssaf.pipeline import run

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# a tiny model (2 layers), generated data, a task with a test split, evaluations at steps 2 and 4
MICRO = [
    "model=tiny",
    "trainer=smoke",
    "task=sst5",
    "data.source=sample",
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.report_every=1",
    "trainer.max_train_samples=32",
    "trainer.max_eval_samples=16",
    "trainer.batch_size=8",
]


def train(run_dir: Path, *overrides: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run(compose("config", overrides=[*MICRO, *overrides]), run_dir)


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory) -> Path:
    """Two offline W&B runs, one per learned parameter, so every panel has something to read."""
    root = tmp_path_factory.mktemp("wandb_runs")
    for attn in ("learned_lam", "learned_alpha"):
        train(root / attn, f"attn={attn}", "logger=wandb", "logger.mode=offline")
    wait_until_written(root)
    return root


def wait_until_written(root: Path, timeout_s: float = 120.0) -> None:
    """wandb's run.finish() can return before its writer process has written the run file out (seen on a
    loaded machine: the last run's history missing, present a second later); its exit record comes last."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    def written(f: Path) -> bool:
        for d in logged.records(f):
            r = pb.Record()  # type: ignore[attr-defined]  # generated protobuf code
            r.ParseFromString(d)
            if r.WhichOneof("record_type") == "exit":
                return True
        return False

    files = list(root.rglob("*.wandb"))
    deadline = time.monotonic() + timeout_s
    while not all(written(f) for f in files):
        assert time.monotonic() < deadline, f"W&B run files not written out after {timeout_s} s: {files}"
        time.sleep(0.5)


def test_every_key_the_dashboard_reads_was_logged_by_a_run(wandb_runs):
    keys = read_runs(wandb_runs)
    d = build(task_metrics(CONF, ["sst5"]), layers=2)
    assert missing(d, keys) == []
    # what it checked is not vacuous: the per-head, learned, test and heatmap keys are all among them
    names = {k.name for k in d.referenced()}
    assert {"final/eval_test_accuracy", "attention_heatmap", "attn.lam", "run_info.data.source"} <= names
    assert any("learned_alpha/layer1" in n for n in names) and any("attn_entropy/layer1" in n for n in names)


def test_a_renamed_metric_is_caught(wandb_runs):
    keys = read_runs(wandb_runs)
    d = build(task_metrics(CONF, ["sst5"]), layers=3)  # the runs' model has 2 layers: layer 2 was never logged
    gone = {k.name for k in missing(d, keys)}
    assert gone and all("layer2" in n for n in gone)
    renamed = Section("x", (Panel("line", "acc", (Key("history", "eval_validation_acc"),)),))
    d2 = build(task_metrics(CONF, ["sst5"]), layers=2)
    d2 = type(d2)(d2.title, d2.group_by, d2.columns, (*d2.sections, renamed), d2.tasks)
    assert [k.name for k in missing(d2, keys)] == ["eval_validation_acc"]


def test_the_check_command_reports_on_local_runs(wandb_runs, capsys):
    assert main(["--check", str(wandb_runs), "--tasks", "sst5", "--layers", "2"]) == 0
    assert main(["--check", str(wandb_runs), "--tasks", "sst5", "--layers", "3"]) == 1
    assert "not logged by any run: history eval_validation/attn_zero_fraction/layer2" in capsys.readouterr().out


def test_the_check_asks_only_for_keys_the_runs_found_could_log(wandb_runs, capsys):
    # One learned_alpha run of sst5, no --tasks: no learned_lam key (it learns no lam), no other task's keys.
    assert main(["--check", str(wandb_runs / "learned_alpha"), "--layers", "2"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "1 run(s) under" in out and "tasks: sst5; attention: learned_alpha" in out
    assert "learned_lam / learned_alpha keys not checked" in out and "not logged" not in out
    # learned_alpha's own keys are still checked: a third layer was never logged
    assert main(["--check", str(wandb_runs / "learned_alpha"), "--layers", "3"]) == 1
    assert "not logged by any run: history learned_alpha/layer2/head\\d+" in capsys.readouterr().out


def test_the_check_with_no_runs_says_so_without_a_traceback(tmp_path, capsys):
    (tmp_path / "outputs" / "2026-12-05_10-00-00").mkdir(parents=True)  # a run folder of logger=none
    assert main(["--check", str(tmp_path / "outputs")]) == 2
    err = capsys.readouterr().err
    assert f"no W&B runs under {tmp_path / 'outputs'}: nothing to check" in err and "logger=wandb" in err
    assert main(["--check", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_dry_run_prints_the_view_and_sends_nothing(capsys, monkeypatch):
    import socket

    def no_network(*a, **kw):
        raise AssertionError("--dry-run opened a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert main(["--dry-run", "--entity", "me"]) == 0
    out = capsys.readouterr().out
    assert "section 'Attention per layer and head'" in out and "nothing was sent" in out
    assert "squad: f1" in out and "summary:final/eval_validation_matched_accuracy" in out  # every task by default


def test_the_workspace_and_report_build_from_the_spec():
    from ssaf.dashboard.wandb_views import report, workspace

    d = build(task_metrics(CONF, ["sst5", "squad"]), layers=2)
    w = workspace(d, "me", "ssaf")
    assert [s.name for s in w.sections] == [s.name for s in d.sections]
    assert sum(len(s.panels) for s in w.sections) == sum(len(s.panels) for s in d.sections)
    assert "config:attn.value.lam" in w.runset_settings.pinned_columns
    w._to_model()  # the wire format builds offline
    r = report(d, "me", "ssaf", {"grid": "| a |\n|---|\n| 1 |"})
    assert sum(type(b).__name__ == "PanelGrid" for b in r.blocks) == 2


def test_unknown_tasks_are_named(capsys):
    assert main(["--dry-run", "--tasks", "sst2,nope"]) == 2
    assert "unknown task(s) nope" in capsys.readouterr().err


def test_tensorboard_logs_the_same_scalars_as_wandb(wandb_runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tmp_path, "attn=learned_lam", "logger=tensorboard")
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t for t in tags["scalars"] if not t.startswith("final/")}
    wandb = {k for k in logged.read_run(next((wandb_runs / "learned_lam" / "wandb").glob("offline-run-*"))).history}
    wandb_scalars = {k for k in wandb if not k.startswith(("_", "attention_heatmap"))}
    assert scalars == wandb_scalars
    assert "attention_heatmap" in tags["images"]
    assert "final/eval_test_accuracy" in tags["scalars"] and "config" in str(tags["tensors"])


def test_records_spanning_blocks_are_reassembled(tmp_path):
    """The .wandb framing: a record longer than a 32 KiB block comes back whole."""
    payload = bytes(range(256)) * 200  # 51,200 bytes: FIRST in block 0, LAST in block 1
    small = b"x" * 10
    data = bytearray(b":W&B\xe1\xbe\x00")
    first = 32768 - len(data) - 7
    data += struct.pack("<IHB", 0, len(small), 1) + small
    first -= 7 + len(small)
    data += struct.pack("<IHB", 0, first, 2) + payload[:first]
    rest = payload[first:]
    data += struct.pack("<IHB", 0, len(rest), 4) + rest
    f = tmp_path / "run.wandb"
    f.write_bytes(bytes(data))
    assert list(logged.records(f)) == [small, payload]
    assert LoggedKeys().history == set()
