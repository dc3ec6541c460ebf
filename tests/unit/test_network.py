"""The one network probe: every caller asks ssaf.network.reachable, so patching it fakes a machine offline."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from ssaf import network
from ssaf.config import go_offline_if_unreachable

OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")


def test_a_closed_port_does_not_answer():
    assert not network.reachable("127.0.0.1", 9, timeout=0.5)  # discard: nothing listens there


def test_offline_variables_answer_without_probing(monkeypatch):
    monkeypatch.setattr(network, "reachable", lambda *a, **k: pytest.fail("probed although set offline"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert not network.hub_reachable()


@pytest.mark.parametrize("answers", [True, False])
def test_the_hub_probe_decides_offline_mode(monkeypatch, answers):
    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)
    asked = []
    monkeypatch.setattr(network, "reachable", lambda host, port=443, timeout=0: asked.append(host) or answers)
    assert network.hub_reachable() is answers
    go_offline_if_unreachable(OmegaConf.create({"model": {"source": "org/model"}, "data": {"source": "hub"}}))
    assert asked == [network.HUB[0]] * 2
    assert all((os.environ.get(var) == "1") is not answers for var in OFFLINE)
