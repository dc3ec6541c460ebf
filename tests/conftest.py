"""Test-wide settings: no network, no W&B, deterministic and small."""

from __future__ import annotations

import os

# Set before transformers/datasets/evaluate/wandb are imported anywhere: without these, hub lookups
# hang 20-50 s before failing on a machine with no network.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton reads this once, when imported: without a GPU its kernels run on CPU through numpy (the
    # kernel tests: correct results, no speed). Set before any test imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ssaf.settings import register_configs  # noqa: E402

register_configs()  # the config schema, as train.py registers it
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tiers: everything under tests/integration is ``integration``; ``gpu`` tests skip without CUDA."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
