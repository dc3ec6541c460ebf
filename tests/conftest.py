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

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton reads this once, when imported: without a GPU its kernels run on CPU through numpy (the
    # kernel tests: correct results, no speed). Set before any test imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ssaf.settings import register_configs  # noqa: E402

register_configs()  # the config schema, as train.py registers it
torch.set_num_threads(2)
# torch.compile's structured trace logs at DEBUG to a logger that pytest's capture handlers end up on: a
# failing compiled test then printed ~300 empty "DEBUG torch.__trace" lines. Tests never use TORCH_TRACE.
logging.getLogger("torch.__trace").disabled = True


def assert_near_reference(what: str, reference, eager, other, factor: float = 4.0, scale: float | None = None) -> None:
    """``other`` (an fp32 path) is at most ``factor`` times further from the float64 ``reference`` than the
    plain eager fp32 path is, plus a few ulps of ``scale`` (by default the reference's largest entry; pass
    the whole computation's for a tensor whose exact value is ~0, such as a key bias's gradient).

    Two fp32 paths are never compared with each other at a fixed tolerance: the order of their sums, and
    so their last bits, depend on the CPU's vector width (AVX2 vs AVX-512). Their distances to float64
    are what fp32 error is made of, so the eager path's own distance is the yardstick.
    """
    reference, eager, other = reference.double(), eager.double(), other.double()
    scale = reference.abs().max().item() if scale is None else scale
    floor = 8 * torch.finfo(torch.float32).eps * scale
    eager_err, other_err = (eager - reference).norm().item(), (other - reference).norm().item()
    assert eager_err <= 1e-3 * reference.norm().item() + floor, f"{what}: the eager fp32 path is far from float64"
    assert other_err <= factor * eager_err + floor, f"{what}: {other_err:.3g} from float64, eager {eager_err:.3g}"


@pytest.fixture
def near_reference():
    """The fp32-vs-float64 check above, for tests that compare a second fp32 path with the eager one."""
    return assert_near_reference


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
