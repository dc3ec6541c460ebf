"""The attention function transformers calls (``attn_implementation="ssaf"``): its signature and return
layout are transformers' (5.x), and each call takes one path (:func:`route`).

The paths: the fused kernel (``ssaf.kernels``) for a sparse transform, and softmax on torch's
``scaled_dot_product_attention``, whenever nothing needs the probabilities; else the materialising path on
``ssaf.transforms`` (eager or compiled). :class:`RouteCounts`, one per model, counts the calls each path
served and why a faster one was not taken (``attention_routes``; the run's record).

The function reads what to compute from its module: ``module._ssaf_probabilities``, the spec resolved once
per model by ``ssaf.attention.learned.attach`` (a :class:`Probabilities`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ssaf import transforms as T
from ssaf.attention.families import attention_modules
from ssaf.settings import AttentionSpec
from ssaf.summary import AttentionRoutes


@dataclass(frozen=True)
class Probabilities:
    """A spec resolved for one self-attention module, once per model (``attach``): (B, H, Q, K) scores and a
    boolean mask (True = may attend) -> probabilities on ``ssaf.transforms``, and the fused kernel route."""

    fn: Callable[..., Tensor]  # the transform in ssaf.transforms
    function: str  # its name (also the kernels' name for it)
    param_name: str | None = None  # lam | alpha
    param: float | None = None  # a fixed lam / alpha
    learned: nn.Module | None = None  # the module's learned parameter (the registry's learned class)
    backend: str = "auto"  # attn.backend: auto | torch | compiled | triton (see route)
    fused: bool = False  # the registry names a fused kernel for the transform
    sdpa: bool = False  # the registry lists torch's sdpa as a path of the transform (softmax)

    def value(self) -> Tensor | float | None:
        """lam / alpha: the fixed value, or the learned one per head, (H, 1, 1)."""
        return self.learned() if self.learned is not None else self.param

    def __call__(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        extra: dict[str, Any] = {"compiled": True} if self.backend == "compiled" else {}
        if self.learned is not None:
            # Valid by construction (the parameterisation keeps it in range): no range check, which would
            # make the host wait for the device on every layer of every step.
            return self.fn(scores, self.learned(), mask=mask, validate=False, **extra)
        if self.param is not None:
            return self.fn(scores, self.param, mask=mask, **extra)
        return self.fn(scores, mask=mask, **extra)


def resolve(spec: AttentionSpec, module: nn.Module) -> Probabilities:
    """The probabilities function of ``spec`` for one self-attention module (its learned parameter, if any)."""
    t = spec.record
    common: dict[str, Any] = {
        "fn": getattr(T, t.function),
        "function": t.function,
        "param_name": t.param,
        "backend": spec.backend,
        "fused": t.kernel is not None,
        "sdpa": "sdpa" in t.backends,
    }
    if t.learned:
        return Probabilities(**common, learned=getattr(module, t.learned_attribute))  # type: ignore[arg-type]
    return Probabilities(**common, param=getattr(spec, t.param) if t.param else None)


def attentions_requested() -> bool:
    """Whether the running forward collects the attention probabilities (``output_attentions=True``).

    transformers 5 gathers them with hooks while a context variable holds the collector (a private API,
    pinned by tests/unit/test_contracts.py); when it cannot be read, assume they are wanted.
    """
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:
        return True
    collected = _active_collector.get()
    return bool(collected) and "attentions" in collected


def key_padding(mask: Tensor | None) -> Tensor | None:
    """The (B, K) key validity of an encoder's padding mask ((B, 1, Q, K) or (B, 1, 1, K), True = attend).

    Padding masks are the same for every query row, so the first row says it (callers route only
    bidirectional, unwindowed attention here).
    """
    return None if mask is None else mask[:, 0, 0, :]


def route(
    probabilities: Probabilities, module: nn.Module, query: Tensor, key: Tensor, kwargs: dict
) -> tuple[str, str | None]:
    """Which path serves this call (``fused``, ``sdpa``, ``compiled``, ``torch``: ``ssaf.summary.ROUTES``), and
    why not a faster one (None where the call takes the fastest path its spec asks for).

    The fast paths, fused kernel (sparse transforms) and sdpa (softmax), never materialise the probabilities,
    so they serve a call when nothing needs them (attention statistics, ``output_attentions``) and the backend
    is ``auto`` or ``triton`` (``torch`` and ``compiled`` ask for the materialising path, eager or compiled).
    The fused kernel also needs a plain padding mask (no sliding window, not a decoder), and for ``auto``
    inputs it serves (CUDA, <= 512 keys, head dims, not declined on the device); sdpa takes the whole mask, so
    windows are served.
    """
    eager = "compiled" if probabilities.backend == "compiled" else "torch"
    if probabilities.backend in ("torch", "compiled"):
        return eager, None
    if getattr(module, "_ssaf_recorder", None) is not None:
        return eager, "attention statistics are recorded (they read the probabilities)"
    if attentions_requested():
        return eager, "output_attentions (returns the probabilities)"
    if probabilities.sdpa:
        return "sdpa", None
    if not probabilities.fused:
        return eager, f"no fused kernel for {probabilities.function}"
    if kwargs.get("sliding_window") is not None:
        return eager, "a sliding-window layer (the fused kernel takes a key padding mask)"
    if getattr(getattr(module, "config", None), "is_decoder", False):
        return eager, "a decoder layer (the fused kernel takes a key padding mask)"
    if probabilities.backend == "triton":
        return "fused", None  # ssaf.kernels warns once and falls back where it cannot serve the inputs
    from ssaf import kernels

    why = kernels.unsupported(query, key, probabilities.function)
    return ("fused", None) if why is None else (eager, why)


class RouteCounts:
    """The attention calls of one model by the path that served them, and by the reason a faster path did
    not (see :func:`route`); one per model, shared by its attention modules (``attach``). Thread-safe
    (``nn.DataParallel`` calls the replicas from threads)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, path: str, reason: str | None) -> None:
        with self._lock:
            self.calls[path] += 1
            if reason is not None:
                self.fallbacks[reason] += 1


def attention_routes(model: nn.Module) -> AttentionRoutes:
    """What served the attention calls of ``model`` so far (calls per path, and per fallback reason)."""
    calls: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    counted = {id(r): r for m in attention_modules(model) if (r := getattr(m, "_ssaf_routes", None)) is not None}
    for r in counted.values():
        with r._lock:
            calls.update(r.calls)
            fallbacks.update(r.fallbacks)
    return AttentionRoutes(calls=dict(calls), fallbacks=dict(fallbacks))


def _count(module: nn.Module, path: str, reason: str | None) -> None:
    routes = getattr(module, "_ssaf_routes", None)
    if routes is not None:
        routes.add(path, reason)


def sdpa_softmax(
    query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, mask: Tensor | None,
    scaling: float, dropout: float,
) -> Tensor:  # fmt: skip
    """Softmax attention on ``torch.nn.functional.scaled_dot_product_attention``: (B, H, Q, D) out, the eager
    path's (``softmax(q k^T * scaling + additive mask)`` on the keys ``mask`` allows, dropout, times v).

    ``attention_mask`` is what transformers passed (None, boolean, or additive float: its values are added to
    the scores as the eager path adds them); ``mask`` its boolean form (True = may attend). A query row with
    no key to attend (a fully padded sequence; a padded query beyond a sliding window's reach) gives zeros
    and no gradient, as the eager path's softmax does. sdpa would not: NaN in some torch versions and
    backends, and with an additive mask the mean of the values (torch 2.13 on CPU); so such rows attend every
    key and are zeroed after.
    """
    if attention_mask is None or mask is None:
        return nn.functional.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scaling)
    empty = ~mask.any(dim=-1, keepdim=True)  # (B, 1, Q, 1): rows with nothing to attend
    # On CPU the test is cheaper than fixing rows that need none; on an accelerator it would make the host
    # wait for the device.
    fix = query.device.type != "cpu" or bool(empty.any())
    if attention_mask.dtype == torch.bool:
        attn_mask = attention_mask | empty if fix else attention_mask
    else:
        attn_mask = (attention_mask.masked_fill(empty, 0.0) if fix else attention_mask).to(query.dtype)
    out = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout, scale=scaling
    )
    return out.masked_fill(empty, 0.0) if fix else out


def ssaf_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """transformers' attention signature: q, k, v (B, H, L, D) -> (out (B, Q, H, D), probs (B, H, Q, K)).

    ``attention_mask`` is None (no padding), boolean (True = attend, from the sdpa mask we register)
    or an additive float mask (0 / finfo.min, from callers that build their own). The returned
    probabilities are taken before dropout, so exact zeros in them are the transform's. On the fast paths
    (the fused kernel, sdpa: :func:`route`) nothing materialises them and None is returned in their place.
    """
    probabilities = getattr(module, "_ssaf_probabilities", None)
    if probabilities is None:
        raise RuntimeError(
            f"{type(module).__name__} has no ssaf attention: the model was not built by ssaf. Build it with "
            "ssaf.attention.ssaf_config(...) and an Auto class after ssaf.register()."
        )
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    mask = None
    if attention_mask is not None:
        mask = (
            attention_mask
            if attention_mask.dtype == torch.bool
            else attention_mask > torch.finfo(attention_mask.dtype).min / 2
        )
    path, reason = route(probabilities, module, query, key, kwargs)
    if path == "fused":
        from ssaf import kernels

        param = {probabilities.param_name: probabilities.value()} if probabilities.param_name else {}
        out, served = kernels.dispatch(
            query, key, value, probabilities.function, key_padding_mask=key_padding(mask), scale=scaling,
            dropout_p=dropout if module.training else 0.0, backend=probabilities.backend, **param,
        )  # fmt: skip
        _count(module, served.path, served.reason)
        return out.transpose(1, 2).contiguous(), None
    _count(module, path, reason)
    if path == "sdpa":
        dropout_p = dropout if module.training else 0.0
        out = sdpa_softmax(query, key, value, attention_mask, mask, scaling, dropout_p)
        return out.transpose(1, 2).contiguous(), None  # (B, Q, H, D)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Q, K)
    if attention_mask is not None and mask is not None and attention_mask.dtype != torch.bool:
        # The additive mask's values where it lets a query attend (0, or a bias); where it does not, the
        # transform masks, and finfo.min added there too would reach -inf: a softmax row with nothing to attend
        # would then be NaN rather than zeros.
        scores = scores + attention_mask.masked_fill(~mask, 0.0)
    probs = probabilities(scores, mask)  # (B, H, Q, K)
    recorder = getattr(module, "_ssaf_recorder", None)
    if recorder is not None:
        recorder.update(module, probs, mask)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()  # (B, Q, H, D)
    return out, probs
