"""What a run records is what it did: presets apply as written, settings nobody reads are refused or named,
metrics are logged at the step that measured them, the final evaluation under its own keys, torchrun runs
with their world size."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ssaf.config import ConfigError, to_settings
from ssaf.settings import AttentionSpec

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a yaml mapping."""
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_preset_sets_every_key_it_names_and_the_command_line_wins(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("SSAF_DATA_DIR", str(tmp_path))  # a data folder set: the main config's data block applies
    preset = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    assert isinstance(preset, dict)
    groups = {}
    for entry in preset.pop("defaults", []):
        for k, v in entry.items():
            groups[k.removeprefix("override /")] = v
    composed = cfg(f"experiment={experiment}", hydra=True)
    for group, option in groups.items():
        assert composed.hydra.runtime.choices[group] == option, f"experiment={experiment}: {group}"
    leaves = list(_leaves(preset))
    assert leaves, f"{experiment} sets no key"
    for key, value in leaves:
        assert OmegaConf.select(composed, key) == value, f"experiment={experiment}: {key}"
    # the command line beats the preset, key by key
    for key, value in leaves:
        if isinstance(value, int) and not isinstance(value, bool):
            assert OmegaConf.select(cfg(f"experiment={experiment}", f"{key}={value + 1}"), key) == value + 1, key


def test_the_smoke_preset_trains_on_its_demo_data_even_with_a_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SSAF_DATA_DIR", str(tmp_path))
    assert OmegaConf.select(cfg("experiment=smoke"), "data.source") == "sample"
    assert OmegaConf.select(cfg("experiment=smoke", "data.source=local"), "data.source") == "local"


def test_a_local_data_preset_without_a_data_folder_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("SSAF_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"data\.source=local needs a data folder"):
        to_settings(cfg("experiment=cpu_sst2"), tmp_path)


# ----------------------------------------------------------------------------- settings that do not apply


@pytest.mark.parametrize(
    "override,match",
    [
        ("+attn.lamda=-2", r"attn\.lamda=-2: no part of the run reads this key .*did you mean attn\.lam\?"),
        ("+trainer.learning_rat=0.1", r"trainer\.learning_rat=0\.1: no part of the run reads.*trainer\.learning_rate"),
        ("+lr=0.1", r"lr=0\.1: no part of the run reads this key \(the config has: task, attn"),
        ("+task.hub.revision=main", r"task\.hub\.revision=main: no part of the run reads"),
    ],
)
def test_a_key_no_part_of_the_run_reads_is_an_error_naming_it(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        to_settings(cfg(override), tmp_path)


RETIRED = [  # the settings attn.backend replaced, and what the error says to use instead
    ("attn.kernel=triton", "attn.backend=triton"),
    ("attn.kernel=torch", "attn.backend=torch"),
    ("attn.compiled=true", "attn.backend=compiled"),
    ("attn.compiled=false", "attn.backend=auto"),
]


@pytest.mark.parametrize("override,use", RETIRED)
def test_a_retired_key_on_the_command_line_is_refused_naming_what_replaced_it(override, use, tmp_path):
    key = override.split("=")[0]
    said = rf"{override}: {key} was replaced by attn.backend \(auto\|torch\|compiled\|triton\); use {use}$"
    with pytest.raises(ConfigError, match=said):
        to_settings(cfg(override), tmp_path)


@pytest.mark.parametrize("override,use", RETIRED)
def test_a_retired_key_in_a_preset_is_refused_naming_what_replaced_it(override, use, tmp_path):
    key, value = override.split("=")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "older.yaml").write_text(f"# @package _global_\nattn:\n  {key[5:]}: {value}\n")
    composed = cfg(f"hydra.searchpath=[file://{tmp_path}]", "experiment=older")
    with pytest.raises(ConfigError, match=rf"{override}: {key} was replaced by attn.backend .*; use {use}$"):
        to_settings(composed, tmp_path)


@pytest.mark.parametrize("backend", ["auto", "torch", "compiled", "triton"])
def test_each_backend_composes_and_a_run_unsets_the_retired_keys(backend, tmp_path):
    s = to_settings(cfg("attn=sparse", f"attn.backend={backend}"), tmp_path)
    assert s.attn.backend == backend and AttentionSpec.to_dict(s.attn)["backend"] == backend
    assert (s.attn.compiled, s.attn.kernel) == (None, None), "the schema holds them only to refuse them"


def test_free_form_mappings_take_any_key(tmp_path):
    s = to_settings(cfg("+model.config_overrides.hidden_dropout_prob=0.2", "+task.extra.note=x"), tmp_path)
    assert s.model.config_overrides == {"hidden_dropout_prob": 0.2} and s.task.extra["note"] == "x"


@pytest.mark.parametrize(
    "overrides,warning",
    [
        (["attn=softmax", "attn.lam=-2"], "attn.lam=-2.0 has no effect: attn=softmax has no parameter"),
        (["attn=entmax", "attn.lam=-2"], "attn.lam=-2.0 has no effect: attn=entmax reads alpha only"),
        (["attn=sparse", "attn.alpha=1.7"], "attn.alpha=1.7 has no effect: attn=sparse reads lam only"),
        (["attn=sparse", "attn.lam=-2"], None),
        (["attn=entmax", "attn.alpha=1.7"], None),
    ],
)
def test_a_parameter_of_another_transform_is_named_at_start(overrides, warning, tmp_path, caplog):
    to_settings(cfg(*overrides), tmp_path)
    said = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert said == ([warning] if warning else [])


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["trainer.max_seq_length=1"], r"trainer\.max_seq_length=1 is below the 3 tokens task sst2 needs"),
        (["task=mnli", "trainer.max_seq_length=5"], r"trainer\.max_seq_length=5 is below the 6 tokens task mnli"),
        (["task=squad", "trainer.max_seq_length=256"], r"task\.extra\.doc_stride=128 must be below half of"),
    ],
)
def test_a_sequence_length_below_what_the_task_needs_is_refused_at_composition(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        to_settings(cfg(*overrides), tmp_path)
    to_settings(
        cfg(*overrides[:-1], "trainer.max_seq_length=258" if "squad" in str(overrides) else "trainer.max_seq_length=6"),
        tmp_path,
    )


def test_the_command_line_names_a_parameter_of_another_transform_once(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "attn=softmax", "attn.lam=-2", "trainer.max_steps=1",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    said = [line for line in (r.stderr + r.stdout).splitlines() if "has no effect" in line]
    assert len(said) == 1 and "attn.lam=-2.0 has no effect: attn=softmax has no parameter" in said[0], said


def test_the_command_line_refuses_a_retired_key_with_exit_2_naming_attn_backend(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "attn.kernel=triton", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "attn.kernel was replaced by attn.backend (auto|torch|compiled|triton); use attn.backend=triton" in (
        r.stderr + r.stdout
    )
    assert not (tmp_path / "checkpoints").exists()


def test_the_command_line_says_which_key_no_part_of_the_run_reads(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "+attn.lamda=-2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "attn.lamda=-2: no part of the run reads this key" in r.stderr + r.stdout
    assert not (tmp_path / "checkpoints").exists()


# ----------------------------------------------------------------------------- logs that belong to their step

# a tiny model (2 layers, 4 heads), generated data, 16 eval examples in one batch
MICRO = [
    "model=tiny",
    "trainer=smoke",
    "data.source=sample",
    "trainer.max_train_samples=32",
    "trainer.max_eval_samples=16",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "trainer.report_every=1",
]


def tensorboard_run(run_dir: Path, *overrides: str) -> tuple[dict, dict[str, dict[int, list[float]]]]:
    """metrics.json, and every TensorBoard scalar as {tag: {step: [values logged at that step]}}."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ssaf.pipeline import run

    run(cfg(*MICRO, "logger=tensorboard", *overrides), run_dir)
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars: dict[str, dict[int, list[float]]] = {}
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            scalars.setdefault(tag, {}).setdefault(e.step, []).append(e.value)
    return json.loads((run_dir / "metrics.json").read_text()), scalars


@pytest.mark.parametrize(
    "task,steps,evals",
    [("sst2", 4, [2, 4]), ("sst2", 2, [2]), ("squad", 2, [2])],
    ids=["two evaluations", "one evaluation", "squad, one evaluation"],
)
def test_per_head_statistics_are_logged_at_the_step_that_measured_them(task, steps, evals, tmp_path):
    from ssaf import keys

    _, scalars = tensorboard_run(tmp_path, f"task={task}", f"trainer.max_steps={steps}", "trainer.eval_every=2")
    p = keys.prefix("validation")
    for stat in keys.STATS:
        heads = {k: v for k, v in scalars.items() if k.startswith(keys.head_stat(p, stat, "", "")[: -len("/head")])}
        per_layer = [keys.head_stat(p, stat, layer, head) for layer in range(2) for head in range(4)]
        assert sorted(heads) == sorted(per_layer), f"{stat}: {sorted(heads)}"
        for step in evals:
            logged = [heads[k][step] for k in per_layer]
            assert all(len(v) == 1 for v in logged), f"{stat} at step {step}: {logged}"
            # the mean over layers and heads is the evaluation's own mean, logged at the same step
            mean = scalars[keys.stat_mean(p, stat)][step]
            assert sum(v[0] for v in logged) / len(logged) == pytest.approx(mean[0], abs=1e-5)
        assert sorted(heads[per_layer[0]]) == evals


def test_the_heatmap_forward_pass_is_not_measured(tmp_path):
    from ssaf import keys

    m, scalars = tensorboard_run(tmp_path, "trainer.max_steps=2", "trainer.eval_every=2")
    measured = keys.stat_mean(keys.prefix("validation"), "batches_measured")
    # 16 examples in batches of 16: one batch, with or without the heatmap drawn at the evaluation
    assert scalars[measured] == {2: [1.0]}
    assert [h[measured] for h in m["history"] if measured in h] == [1]
    assert m["final"][measured] == 1


def test_the_final_evaluation_is_logged_under_its_own_keys_not_on_the_curve(tmp_path):
    from ssaf import keys

    # a learning rate too small to change a prediction: steps 2 and 4 tie, the first (step 2) is selected,
    # and the end evaluates checkpoint 2 again, at step 4
    m, scalars = tensorboard_run(
        tmp_path, "trainer.max_steps=4", "trainer.eval_every=2", "trainer.learning_rate=1e-12", "task=sst5"
    )
    assert m["best"]["step"] == 2 and not m["train"]["final_eval_reused"]
    loss = keys.metric("validation", "loss")
    assert sorted(scalars[loss]) == [2, 4] and all(len(v) == 1 for v in scalars[loss].values())
    assert [h["step"] for h in m["history"] if loss in h] == [2, 4]
    assert not any(k.startswith(keys.prefix("test")) for h in m["history"] for k in h)  # test split: final only
    assert not any(k.startswith(keys.prefix("test")) for k in scalars)
    for k in (loss, keys.metric("test", "accuracy"), keys.stat_mean(keys.prefix("validation"), "support")):
        assert scalars[keys.final(k)] == {4: [pytest.approx(m["final"][k])]}, k
