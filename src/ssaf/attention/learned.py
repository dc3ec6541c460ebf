"""Giving a model its attention: each self-attention module gets its resolved probabilities function, the
model's route counter, and, when the transform learns its parameter, one learned value per head (the module
class the parameter's ``ssaf.registry`` record names, from ``ssaf.transforms``)."""

from __future__ import annotations

from torch import nn

from ssaf import registry
from ssaf import transforms as T
from ssaf.attention.families import attention_modules, num_heads
from ssaf.attention.forward import RouteCounts, resolve
from ssaf.settings import AttentionSpec

# Where a learned parameter lives on a self-attention module, for every parameter the registry knows.
LEARNED_ATTRIBUTES: tuple[str, ...] = tuple(sorted(p.learned_attribute for p in registry.PARAMS.values()))


def learned_classes() -> tuple[type[nn.Module], ...]:
    """The modules that hold learned per-head parameters (``LearnedAlpha``, ``LearnedLambda``), as the
    registry names them."""
    return tuple(getattr(T, p.learned_class) for p in registry.PARAMS.values())


def attach(model: nn.Module, spec: AttentionSpec) -> None:
    """Give every self-attention module its resolved probabilities function, its per-head parameter when the
    spec learns one (initialised at the spec's lam / alpha), and the model's :class:`RouteCounts`."""
    t = spec.record
    routes = RouteCounts()
    for m in attention_modules(model):
        m._ssaf_routes = routes  # type: ignore[assignment]
        if t.learned_class is not None:  # then param and learned_attribute are set too
            learned = getattr(T, t.learned_class)(num_heads(m), init=getattr(spec, str(t.param)))
            setattr(m, str(t.learned_attribute), learned)
        m._ssaf_probabilities = resolve(spec, m)  # type: ignore[assignment]


def learned_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The learned alpha / lam parameters by their names in ``model`` (empty when the spec learns nothing)."""
    owned = {
        id(p)
        for m in attention_modules(model)
        for name in LEARNED_ATTRIBUTES
        if getattr(m, name, None) is not None
        for p in getattr(m, name).parameters()
    }
    return {n: p for n, p in model.named_parameters() if id(p) in owned}


def learned_values(model: nn.Module) -> dict[str, list[list[float]]]:
    """Current learned alpha / lam per layer and head (empty when the spec learns nothing)."""
    out: dict[str, list[list[float]]] = {}
    for m in attention_modules(model):
        for name in LEARNED_ATTRIBUTES:
            mod = getattr(m, name, None)
            if mod is not None:
                out.setdefault(name.removeprefix("ssaf_"), []).append(mod().detach().flatten().tolist())
    return out
