"""Whether a server answers: the one network probe ssaf makes, and the hosts it asks.

Asked before W&B goes online (``ssaf.config``, ``ssaf.tracking``), before transformers and datasets are
imported (``ssaf.config.go_offline_if_unreachable``) and when ``data.source=auto`` considers the hub
(``ssaf.data.load``). A TCP connection within :data:`TIMEOUT_S`, nothing more: no request is sent, so a
probe costs at most that long offline (transformers' own retries took 20-50 s). Importing this module
touches no network; tests that fake a machine without one patch :func:`reachable`.
"""

from __future__ import annotations

import os
import socket

HUB = ("huggingface.co", 443)  # the Hugging Face hub: models, data sets (W&B's host is configurable: wandb_server)
TIMEOUT_S = 2.0  # a server that has not answered by then is treated as absent


def reachable(host: str, port: int = 443, timeout: float = TIMEOUT_S) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """The hub can be used: not set offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, by the user or by
    ``go_offline_if_unreachable``: False at once, no probe) and :data:`HUB` answers."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    return reachable(*HUB)
