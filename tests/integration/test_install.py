"""Install and first use: the wheel is a tool (``ssaf-train``, ``ssaf-dashboard`` on the configs it ships), and
``train.py --help`` lists only what can be used."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from ssaf.settings import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def _ok(cmd: list, cwd: Path, timeout: int = 300, installed: bool = False) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the test environment (offline, W&B disabled); ``installed``: without PYTHONPATH, so that
    it imports what was installed, not a source tree put first on the path."""
    env = {k: v for k, v in os.environ.items() if not (installed and k == "PYTHONPATH")}
    r = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    command = " ".join(map(str, cmd))
    assert r.returncode == 0, f"{command} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_wheel_installs_ssaf_train_and_ssaf_dashboard_that_run_from_any_directory(tmp_path):
    """Build the wheel, install it alone into a fresh venv that sees the project's dependencies, and train the
    smoke preset from an empty directory: the configs come from inside the wheel, not from a checkout."""
    had_build = (ROOT / "build").exists()
    source = tmp_path / "source"  # built from a copy: an in-tree build would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _ok([*pip, "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-w", tmp_path / "dist", source], ROOT)
    (wheel,) = (tmp_path / "dist").glob("ssaf-*.whl")

    venv = tmp_path / "venv"
    _ok([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    _ok([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp_path)
    # The dependencies (torch, transformers, ...) come from the project's environment, added after the install
    # so that pip never sees the project's own (editable) ssaf. A path in a .pth file is appended to sys.path:
    # the wheel's ssaf, in the venv's own site-packages, comes first.
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    (venv_site / "project_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "work"  # no conf/, no train.py: only what was installed
    work.mkdir()
    show = "import ssaf.settings as s; print(s.__file__); print(s.config_dir())"
    where = _ok([python, "-c", show], work, installed=True)
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(conf) == Path(module).parent / "conf", where.stdout

    _ok([bin_dir / "ssaf-train", "experiment=smoke"], work, timeout=600, installed=True)
    (metrics,) = (work / "outputs").glob("sst2/sparse/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "completed"
    assert (metrics.parent / "train.log").exists(), "the log keeps its name whichever entry point ran"

    dry = _ok([bin_dir / "ssaf-dashboard", "--dry-run"], work, installed=True)
    assert "sst2: " in dry.stdout and "nothing was sent" in dry.stdout
    assert (ROOT / "build").exists() == had_build


def test_help_lists_only_usable_groups_and_resume_as_a_boolean():
    """Every group ``--help`` offers is a key of the schema (or the experiment presets): W&B sweep files kept
    in conf/ were listed as a group ``sweep`` that no override can select. ``resume`` shows as false, not
    as the string 'False'."""
    r = _ok([sys.executable, "train.py", "--help"], ROOT, timeout=120)
    head, _, config = r.stdout.partition("== Config ==")
    listed = {line.split(":")[0] for line in head.partition("(group=option)")[2].splitlines() if ":" in line}
    assert listed, r.stdout
    assert listed <= {f.name for f in fields(RunConfig)} | {"experiment"}, listed
    assert "\nresume: false\n" in config and "'False'" not in config
    assert sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml")), "the W&B sweep files, outside conf/"


def test_resume_is_true_false_or_a_run_directory(tmp_path):
    """``resume`` is typed loosely (so that --help shows false, not 'False'): what it accepts is checked."""
    from hydra import compose, initialize_config_dir

    from ssaf.config import ConfigError, to_settings

    def resume(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return to_settings(compose("config", overrides=["experiment=smoke", *overrides]), tmp_path).resume

    assert resume() is False and resume("resume=false") is False and resume("resume=true") is True
    assert resume(f"resume={tmp_path}") == str(tmp_path)
    with pytest.raises(ConfigError, match="resume must be true, false or a run directory, got 3"):
        resume("resume=3")
