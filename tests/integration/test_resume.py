"""Resume: one run, one folder, one log, one record. A sweep relaunched with resume=true continues each
unfinished job in its own folder and skips the completed ones; a command whose run-defining settings differ
from the run's is refused before anything is written; a resume that fails keeps the record it continues;
a resumed run's train_loss is the mean over all of its steps."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ssaf.pipeline import run
from ssaf.resume import ResumeError
from ssaf.training import SsafTrainer

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# A real run, shrunk: tiny random model, generated demo data, 4 optimiser steps, a checkpoint every 2.
MICRO = [
    "model=tiny",
    "trainer=smoke",
    "logger=none",
    "data.source=sample",
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.report_every=1",
    "trainer.max_train_samples=32",
    "trainer.max_eval_samples=16",
    "trainer.batch_size=8",
]


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def train_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def interrupted_at_step_3(monkeypatch, overrides: list[str], run_dir: Path) -> dict:
    """Run ``overrides`` into ``run_dir`` and stop it with Ctrl-C in step 3 (after checkpoint-2)."""
    real = SsafTrainer.training_step

    def ctrl_c_at_step_3(self, *a, **kw):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(SsafTrainer, "training_step", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg(*overrides), run_dir)
    monkeypatch.undo()
    m = read(run_dir)
    assert m["status"] == "interrupted" and m["train"]["steps"] == 2
    assert (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    return m


def made_unfinished(run_dir: Path) -> None:
    """A completed run (with its checkpoints kept) turned into one stopped after checkpoint-2."""
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    m = read(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps({**m, "status": "interrupted"}))


# ----------------------------------------------------------------------------- the command must match the run


@pytest.mark.parametrize(
    "change,named",
    [
        (
            ["attn=softmax", "seed=3"],
            ["attn.transform: this command 'softmax', the run 'sparse'", "seed: this command 3"],
        ),
        (["attn.lam=-2"], ["attn.lam: this command -2.0, the run -8.0"]),
        (["trainer.max_steps=6"], ["trainer.max_steps: this command 6, the run 4"]),
        (["model.pretrained=true"], ["model.pretrained: this command True, the run False"]),
        (["+model.config_overrides.hidden_dropout_prob=0.3"], ["hidden_dropout_prob: this command 0.3, the run '(not"]),
        (["data.source=auto"], ["data.source: this command 'auto', the run 'sample'"]),
    ],
)
def test_a_resume_whose_run_defining_settings_differ_is_refused_naming_each_and_writes_nothing(
    change, named, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    interrupted_at_step_3(monkeypatch, [*MICRO, "seed=7"], run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ResumeError) as e:
        run(cfg(*MICRO, "seed=7", *change, f"resume={run_dir}"), tmp_path / "again")
    for text in named:
        assert text in str(e.value)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "again").exists()


def test_only_run_defining_settings_count_as_differences(tmp_path, monkeypatch):
    from ssaf.resume import differences

    monkeypatch.chdir(tmp_path)
    run_ = {"seed": 1, "logger": {"mode": "offline"}, "data": {"dir": str(tmp_path / "data"), "num_workers": 0},
            "trainer": {"max_steps": 4, "eval_batch_size": 64, "keep_checkpoints": False}}  # fmt: skip
    watched_otherwise = {"seed": 1, "logger": {"mode": "online"}, "data": {"dir": "data", "num_workers": 4},
                         "trainer": {"max_steps": 4, "eval_batch_size": 8, "keep_checkpoints": True}}  # fmt: skip
    assert differences(watched_otherwise, run_) == []  # the same folder however spelled; FREE keys free
    trained_otherwise = {**run_, "trainer": {**run_["trainer"], "max_steps": 6}, "model": {"x": 1}}
    assert differences(trained_otherwise, run_) == [
        "model.x: this command 1, the run '(not set)'",
        "trainer.max_steps: this command 6, the run 4",
    ]


def test_the_backend_is_free_and_a_run_recorded_with_the_keys_it_replaced_still_resumes(tmp_path):
    """Every backend computes the same transform; an older ssaf recorded attn.kernel and attn.compiled."""
    from omegaconf import OmegaConf

    from ssaf.resume import differences, recorded_config

    ours = OmegaConf.to_container(cfg(*MICRO, "attn.backend=torch"), resolve=True)
    assert isinstance(ours, dict)
    older = OmegaConf.to_container(cfg(*MICRO), resolve=True)
    assert isinstance(older, dict)
    older["attn"] = {k: v for k, v in older["attn"].items() if k != "backend"} | {"kernel": "triton", "compiled": False}
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(older))
    recorded = recorded_config(tmp_path)
    assert recorded["attn"]["kernel"] == "triton" and recorded["attn"]["backend"] == "auto"
    assert differences({str(k): v for k, v in ours.items()}, recorded) == []
    assert differences({str(k): v for k, v in ours.items()} | {"seed": 3}, recorded) == [
        "seed: this command 3, the run 42"
    ]


def test_a_completed_run_is_refused_too_when_the_command_differs(tmp_path):
    run(cfg(*MICRO, "seed=7"), tmp_path / "run")
    record = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(ResumeError, match=r"seed: this command 3, the run 7"):
        run(cfg(*MICRO, "seed=3", f"resume={tmp_path / 'run'}"), tmp_path / "again")
    assert (tmp_path / "run" / "metrics.json").read_bytes() == record


def test_cli_a_refused_resume_exits_2_and_leaves_no_folder(tmp_path):
    run(cfg("experiment=smoke", "trainer.max_steps=2", "trainer.eval_every=2", "seed=7"), tmp_path / "run")
    record = (tmp_path / "run" / "metrics.json").read_bytes()
    fresh = tmp_path / "fresh"
    r = train_cli("experiment=smoke", "trainer.max_steps=2", "trainer.eval_every=2", "attn=softmax", "seed=3",
                  f"resume={tmp_path / 'run'}", f"hydra.run.dir={fresh}")  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "attn.transform: this command 'softmax', the run 'sparse'" in out and "seed: this command 3" in out
    assert not fresh.exists(), "a refused resume writes nothing, not even a rejected record"
    assert (tmp_path / "run" / "metrics.json").read_bytes() == record


# ----------------------------------------------------------------------------- a completed run is skipped


def test_a_completed_run_is_skipped_with_its_record_untouched(tmp_path):
    first = run(cfg(*MICRO), tmp_path / "run")
    record = (tmp_path / "run" / "metrics.json").read_bytes()
    again = run(cfg(*MICRO, f"resume={tmp_path / 'run'}", "logger=none"), tmp_path / "again")
    assert again.status == "completed" and again.best == first.best
    assert (tmp_path / "run" / "metrics.json").read_bytes() == record
    assert not (tmp_path / "again").exists()


# ----------------------------------------------------------------------------- the record is never replaced with less


def test_a_resume_that_fails_keeps_the_record_it_continues(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    earlier = interrupted_at_step_3(monkeypatch, MICRO, run_dir)

    def size_mismatch(self, *a, **kw):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch for bert.embeddings.word_embeddings")

    monkeypatch.setattr(SsafTrainer, "_load_from_checkpoint", size_mismatch)
    with pytest.raises(RuntimeError, match="size mismatch"):
        run(cfg(*MICRO, f"resume={run_dir}"), tmp_path / "again")
    m = read(run_dir)
    assert m["status"] == "failed" and "size mismatch" in m["error"] and "had reached step 2" in m["error"]
    assert m["train"] == earlier["train"] and m["history"] == earlier["history"] and m["model"] == "tiny"
    assert (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()


# ----------------------------------------------------------------------------- train_loss over every step


@pytest.mark.parametrize("report_every", [1, 3])  # at checkpoint-2 every loss logged / none logged yet
def test_a_resumed_run_reports_the_mean_training_loss_over_all_its_steps(report_every, tmp_path):
    overrides = [*MICRO, f"trainer.report_every={report_every}", "trainer.keep_checkpoints=true"]
    straight = run(cfg(*overrides), tmp_path / "straight")
    if report_every == 1:
        losses = [h["loss"] for h in straight.history if "loss" in h]
        assert len(losses) == 4 and straight.train.train_loss == pytest.approx(sum(losses) / 4, rel=1e-6)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed_dir)
    made_unfinished(resumed_dir)
    resumed = run(cfg(*overrides, f"resume={resumed_dir}"), tmp_path / "again")
    assert resumed.run_dir == str(resumed_dir) and resumed.train.steps == 4
    assert resumed.train.train_loss == pytest.approx(straight.train.train_loss, rel=1e-6)
    logged = [h["train_loss"] for h in resumed.history if "train_loss" in h]
    assert logged[-1] == pytest.approx(straight.train.train_loss, rel=1e-6)


# ----------------------------------------------------------------------------- the CLI: one run, one folder, one log


def test_cli_a_resume_continues_in_the_run_folder_and_appends_to_its_log(tmp_path):
    args = ["experiment=smoke", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.keep_checkpoints=true"]
    run_dir, fresh = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    r = train_cli(*args, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    made_unfinished(run_dir)
    first_log = (run_dir / "train.log").read_text()
    hydra_record = (run_dir / ".hydra" / "config.yaml").read_bytes()
    r = train_cli(*args, "resume=true", f"hydra.run.dir={fresh}", f"hydra.sweep.dir={tmp_path / 'sweeps' / 'x'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not fresh.exists(), "the resume left a second folder"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]
    m = read(run_dir)
    assert m["status"] == "completed" and m["train"]["steps"] == 4 and len(m["train"]["segments"]) == 2
    log = (run_dir / "train.log").read_text()
    assert log.startswith(first_log) and f"resuming {run_dir}" in log[len(first_log) :]
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == hydra_record
    info = json.loads((run_dir / "run_info.json").read_text())
    assert "resume=" not in info["command"] and "resume=true" in info["resumed"][0]["command"]


def test_cli_the_interrupted_hint_is_a_command_that_continues_the_run(tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    overrides = ["experiment=smoke", "trainer.max_steps=4", "trainer.eval_every=2"]
    real = SsafTrainer.training_step

    def ctrl_c_at_step_3(self, *a, **kw):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(SsafTrainer, "training_step", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg(*overrides), run_dir, overrides=overrides)
    hint = next(r.getMessage() for r in caplog.records if "continue with:" in r.getMessage())
    assert "checkpoint-2" in hint
    command = shlex.split(hint.split("continue with: ", 1)[1].split(" (", 1)[0])
    # the launcher the user ran: ``python train.py`` in the checkout, else ``ssaf-train`` (here: pytest)
    launcher = 2 if command[:2] == ["python", "train.py"] else 1
    assert command[:launcher] in (["python", "train.py"], ["ssaf-train"]) and f"resume={run_dir}" in command
    r = train_cli(*command[launcher:], f"hydra.run.dir={tmp_path / 'fresh'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read(run_dir)["status"] == "completed" and read(run_dir)["train"]["steps"] == 4
    assert not (tmp_path / "fresh").exists()


def test_cli_a_sweep_relaunched_with_resume_true_continues_each_unfinished_job_and_skips_completed_ones(tmp_path):
    sweep = ["-m", "experiment=smoke", "trainer.max_steps=10", "trainer.eval_every=2", "seed=1,2",
             f"hydra.run.dir={tmp_path / 'runs' / 'x'}"]  # fmt: skip
    first, job0 = tmp_path / "sweep1", tmp_path / "sweep1" / "0_sst2_sparse"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *sweep, f"hydra.sweep.dir={first}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # A suite launched in the background by a shell without job control (`make test &`, nohup) inherits
        # SIGINT ignored, and Python then installs no Ctrl-C handler: the signal below would be lost.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while not (job0 / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert read(job0)["status"] == "interrupted" and not (first / "1_sst2_sparse").exists()
    hint = next(line for line in out.splitlines() if "continue with:" in line)
    assert " seed=1 " in hint and f"resume={job0}" in hint and "seed=1,2" not in hint

    second = tmp_path / "sweep2"
    r = train_cli(*sweep, "resume=true", f"hydra.sweep.dir={second}")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    m0 = read(job0)
    assert m0["status"] == "completed" and m0["seed"] == 1 and m0["train"]["steps"] == 10
    assert len(m0["train"]["segments"]) == 2, "continued from its checkpoint, not started again"
    assert not (second / "0_sst2_sparse").exists(), "the continued job left a second folder"
    m1 = read(second / "1_sst2_sparse")  # never started: it starts now
    assert m1["status"] == "completed" and m1["seed"] == 2 and len(m1["train"]["segments"]) == 1
    log = (job0 / "train.log").read_text()
    assert log.index("interrupted:") < log.index(f"resuming {job0}")

    records = {p: p.read_bytes() for p in (job0 / "metrics.json", second / "1_sst2_sparse" / "metrics.json")}
    third = tmp_path / "sweep3"
    r = train_cli(*sweep, "resume=true", f"hydra.sweep.dir={third}")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (r.stdout + r.stderr).count("already complete") == 2
    assert {p: p.read_bytes() for p in records} == records
    assert not list(third.glob("*_sst2_sparse")), "a skipped job leaves no folder"
