"""What a run records is what it did: presets apply as written, settings nobody reads are refused or named,
metrics are logged at the step that measured them, the final evaluation under its own keys, torchrun runs
with their world size."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ssaf.config import ConfigError, settings

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
        settings(cfg("experiment=cpu_sst2"), tmp_path)
