"""run_info.json's git SHA is the ssaf checkout's, never that of a repository an installed wheel sits in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ssaf.tracking as tracking


def _repo(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True, text=True)
    run("init", "-q")
    (path / "f").write_text("x")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return run("rev-parse", "HEAD").stdout.strip()


def test_a_checkout_records_its_commit_and_a_wheel_inside_another_repository_none(tmp_path, monkeypatch):
    sha = _repo(tmp_path / "checkout")
    monkeypatch.setattr(tracking, "__file__", str(tmp_path / "checkout" / "src" / "ssaf" / "tracking.py"))
    assert tracking.git_sha() == sha
    _repo(tmp_path / "project")  # someone's repository with a venv inside it
    wheel = tmp_path / "project" / "venv" / "lib" / "python3.11" / "site-packages" / "ssaf" / "tracking.py"
    wheel.parent.mkdir(parents=True)
    monkeypatch.setattr(tracking, "__file__", str(wheel))
    assert tracking.git_sha() is None
