"""Adding a transform is one record: a throwaway ``ssaf.registry.Transform`` (a second name for sparsegen-lin)
goes through the config check, the transformers adapter, the kernels' lookup and a training run with nothing
else added. The record is removed again after each test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForSequenceClassification, BertConfig

from ssaf import registry
from ssaf.config import ConfigError, to_settings
from ssaf.settings import AttentionSpec

ROOT = Path(__file__).resolve().parents[2]
NEW = registry.Transform(
    "sparse_again",
    "sparsegen-lin under a second name (a test's throwaway record)",
    "sparsegen_lin",
    param="lam",
    kernel="sparsemax",
    backends=("torch", "compiled", "triton"),
)


@pytest.fixture
def new_transform(monkeypatch):
    monkeypatch.setitem(registry.TRANSFORMS, NEW.name, NEW)
    return NEW.name


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_config_checks_its_parameter_with_the_registrys_range_and_message(new_transform):
    assert AttentionSpec(new_transform, lam=-2.0).record is NEW
    with pytest.raises(ValueError) as said:
        registry.PARAMS["lam"].check(1.5, "attn.lam")
    with pytest.raises(ValueError, match=re.escape(str(said.value))):
        AttentionSpec(new_transform, lam=1.5)


def test_without_its_record_the_name_is_unknown():
    with pytest.raises(ValueError, match="unknown attention transform 'sparse_again'"):
        AttentionSpec("sparse_again")


def test_the_adapter_gives_the_probabilities_of_the_transform_it_reuses(new_transform):
    import ssaf
    from ssaf.attention import ssaf_config

    ssaf.register()
    stock = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, initializer_range=0.5,
    )  # fmt: skip
    ids = torch.randint(5, 99, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(10)[None] < torch.tensor([[10], [7], [4]])).long()
    outs = []
    for name in ("sparse", new_transform):
        torch.manual_seed(0)  # the same weights
        model = AutoModelForSequenceClassification.from_config(ssaf_config(stock, AttentionSpec(name, lam=-1.0)))
        with torch.no_grad():
            outs.append(model.eval()(input_ids=ids, attention_mask=mask, output_attentions=True))
    (old, new) = outs
    assert any((p == 0).any() for p in new.attentions), "sparsegen-lin's exact zeros"
    for a, b in zip(old.attentions, new.attentions, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(old.logits, new.logits)


def test_the_kernels_serve_it_through_its_function(new_transform):
    from ssaf import kernels

    assert registry.kernel(NEW.function) == "sparsemax" and NEW.function in kernels.TRANSFORMS


def test_a_run_trains_and_records_it(new_transform, tmp_path):
    from ssaf.pipeline import run

    micro = [
        "model=tiny", "trainer=smoke", "logger=none", "data.source=sample", "trainer.max_steps=2",
        "trainer.eval_every=2", "trainer.max_train_samples=32", "trainer.max_eval_samples=16", "trainer.batch_size=8",
    ]  # fmt: skip
    c = cfg("attn=sparse", f"attn.transform={new_transform}", "attn.lam=-1.0", *micro)
    assert to_settings(c, tmp_path).attn.record is NEW
    summary = run(c, tmp_path)
    assert summary.status == "completed" and summary.train.steps == 2
    assert (summary.attn.transform, summary.attn.param, summary.attn.value) == (new_transform, "lam", -1.0)


def test_an_out_of_range_parameter_fails_the_run_before_anything_loads(new_transform, tmp_path):
    with pytest.raises(ConfigError, match=r"attn.lam must be finite and < 1, got 1.5"):
        to_settings(cfg("attn=sparse", f"attn.transform={new_transform}", "attn.lam=1.5"), tmp_path)
