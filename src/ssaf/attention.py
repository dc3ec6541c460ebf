"""The one adapter between ssaf's transforms and transformers' attention contract (transformers 5.x).

What it registers, once, when ``ssaf.register()`` is called (train.py and the CLIs call it; importing
``ssaf`` registers nothing):

* ``"ssaf"`` in ``AttentionInterface`` (the attention function below) and in ``AttentionMaskInterface``
  (transformers' boolean sdpa mask). Without the mask entry transformers silently passes
  ``attention_mask=None`` to a custom attention, and padding is attended.
* For each supported encoder family (:data:`FAMILIES`): a config class
  ``model_type = "ssaf_<family>"`` that defaults to the ``"ssaf"`` attention and carries the transform
  spec (``config.ssaf_attention``), and model classes for the base model, sequence classification and
  question answering, registered with the Auto classes. So ``AutoModelFor...from_pretrained(dir)`` on a
  saved ssaf model restores its transform and its learned per-head parameters, and
  ``transformers.pipeline(..., model=dir)`` works.

The attention function reads the spec from ``module.config`` on every call; learned per-head alpha/lam
are parameters of each self-attention module (``module.ssaf_alpha`` / ``module.ssaf_lam``).

Each call takes one path (:func:`route`): the fused kernel (``ssaf.kernels``) for a sparse transform and
softmax on torch's ``scaled_dot_product_attention`` whenever nothing needs the probabilities, else the
materialising path on ``ssaf.transforms`` (eager or compiled). :class:`RouteCounts`, one per model, counts
the calls each path served and why a faster one was not taken (``attention_routes``; the run's record).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AlbertConfig,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertModel,
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertModel,
    ElectraConfig,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraModel,
    ModernBertConfig,
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertModel,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface
from transformers.models.albert.modeling_albert import AlbertAttention
from transformers.models.bert.modeling_bert import BertSelfAttention
from transformers.models.distilbert.modeling_distilbert import DistilBertSelfAttention
from transformers.models.electra.modeling_electra import ElectraSelfAttention
from transformers.models.modernbert.modeling_modernbert import ModernBertAttention
from transformers.models.roberta.modeling_roberta import RobertaSelfAttention
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaSelfAttention

from ssaf import keys, registry
from ssaf import transforms as T
from ssaf.settings import AttentionSpec
from ssaf.summary import AttentionRoutes

ATTN_IMPLEMENTATION = "ssaf"


# ----------------------------------------------------------------------------- the attention function


@dataclass(frozen=True)
class Probabilities:
    """A spec resolved for one self-attention module, once per model (``attach``): (B, H, Q, K) scores and a
    boolean mask (True = may attend) -> probabilities on ``ssaf.transforms``, and the fused kernel route."""

    fn: Callable[..., Tensor]  # the transform in ssaf.transforms
    function: str  # its name (also the kernels' name for it)
    param_name: str | None = None  # lam | alpha
    param: float | None = None  # a fixed lam / alpha
    learned: nn.Module | None = None  # the module's LearnedAlpha / LearnedLambda
    compiled: bool = False
    kernel: str = "auto"  # auto | triton | torch (see ssaf.kernels)
    fused: bool = False  # the registry lists a Triton kernel for the transform

    def value(self) -> Tensor | float | None:
        """lam / alpha: the fixed value, or the learned one per head, (H, 1, 1)."""
        return self.learned() if self.learned is not None else self.param

    def __call__(self, scores: Tensor, mask: Tensor | None) -> Tensor:
        extra: dict[str, Any] = {"compiled": True} if self.compiled else {}
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
        "compiled": spec.compiled,
        "kernel": spec.kernel,
        "fused": "triton" in t.backends,
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
    so they serve a call when nothing needs them (attention statistics, ``output_attentions``) and the spec
    does not ask for the torch path (``kernel=torch``). The fused kernel also needs a plain padding mask (no
    sliding window, not a decoder), and for ``auto`` inputs it serves (CUDA, <= 512 keys, head dims, not
    declined on the device); sdpa takes the whole mask, so windows are served.
    """
    eager = "compiled" if probabilities.compiled else "torch"
    if probabilities.kernel == "torch":
        return eager, None
    if getattr(module, "_ssaf_recorder", None) is not None:
        return eager, "attention statistics are recorded (they read the probabilities)"
    if attentions_requested():
        return eager, "output_attentions (returns the probabilities)"
    if probabilities.function == "softmax":
        return "sdpa", None
    if not probabilities.fused:
        return eager, f"no fused kernel for {probabilities.function}"
    if kwargs.get("sliding_window") is not None:
        return eager, "a sliding-window layer (the fused kernel takes a key padding mask)"
    if getattr(getattr(module, "config", None), "is_decoder", False):
        return eager, "a decoder layer (the fused kernel takes a key padding mask)"
    if probabilities.kernel == "triton":
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
            dropout_p=dropout if module.training else 0.0, kernel=probabilities.kernel, **param,
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


# ----------------------------------------------------------------------------- attention statistics


class AttentionStats:
    """Running per-(layer, head) sparsity statistics of the attention probabilities.

    For every valid query row (a non-padding position) and its valid keys: the fraction of exact
    zeros, the support size (number of non-zero probabilities) and the entropy ``-sum p log p``.
    Collected inside the attention forward (no extra forward pass), before dropout.

    ``every=k`` measures every k-th forward pass of each layer only: at 384 tokens the statistics cost
    about a third of an evaluation forward pass, and a systematic sample of batches estimates the same
    means (``batches_seen`` / ``batches_measured`` say how many were used).
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"attention statistics: every must be >= 1 (1 = every batch), got {every}")
        self.every = every
        self._calls: dict[int, int] = {}  # layer -> forward passes seen
        self._position = 0  # attention calls so far in the current forward pass
        self._sums: dict[int, Tensor] = {}  # layer -> (3, H): zero fraction, support, entropy sums
        self._rows: dict[int, Tensor] = {}  # layer -> (H,) rows counted

    @torch.no_grad()
    def new_forward(self) -> None:
        """A forward pass of the model starts: the next attention call is layer 0."""
        self._position = 0

    def update(self, module: nn.Module, probs: Tensor, mask: Tensor | None) -> None:
        # The layer is the call's place in the forward pass, not the module: ALBERT calls one shared module
        # for every layer.
        layer = self._position
        self._position += 1
        seen = self._calls[layer] = self._calls.get(layer, 0) + 1
        if (seen - 1) % self.every:
            return
        p = probs.float()
        b, h, q, k = p.shape
        if mask is None:
            valid_keys = torch.full((b, 1, q, 1), float(k), device=p.device)
            row_ok = torch.ones(b, 1, q, device=p.device, dtype=torch.bool)
        else:
            m = mask.expand(b, mask.shape[1], q, k)
            valid_keys = m.sum(-1, keepdim=True).float()
            key_valid = m.any(dim=-2)  # (B, h', K)
            row_ok = (key_valid if q == k else torch.ones_like(m[..., 0])) & (valid_keys[..., 0] > 0)
        # Two passes over the (B, H, Q, K) probabilities; everything else is per row. xlogy(0, 0) = 0.
        support = torch.count_nonzero(p, dim=-1).unsqueeze(-1).float()
        zero_frac = 1 - support / valid_keys.clamp(min=1)
        entropy = -torch.special.xlogy(p, p).sum(-1, keepdim=True)
        w = row_ok.expand(b, h, q).float().unsqueeze(-1)  # (B, H, Q, 1)
        stats = torch.stack([(s * w).sum(dim=(0, 2, 3)) for s in (zero_frac, support, entropy)])  # (3, H)
        self._sums[layer] = self._sums.get(layer, 0) + stats.cpu()
        self._rows[layer] = self._rows.get(layer, 0) + w.sum(dim=(0, 2, 3)).cpu()

    def combine(self, total: Callable[[Tensor], Tensor]) -> None:
        """Turn each process's share into the statistics of the whole evaluation (torchrun: every process
        measured its own batches). ``total`` sums a tensor over the processes; every process calls this, with
        the same layers and heads."""
        measured, seen = sorted(self._sums), sorted(self._calls)
        if measured:
            packed = total(torch.stack([torch.cat([self._sums[i], self._rows[i][None]]) for i in measured]))
            for j, i in enumerate(measured):  # packed: (layers, 3 sums + rows, H)
                self._sums[i], self._rows[i] = packed[j, :3], packed[j, 3]
        if seen:
            calls = total(torch.tensor([float(self._calls[i]) for i in seen], dtype=torch.float64))
            self._calls = {i: int(c) for i, c in zip(seen, calls.tolist(), strict=True)}

    def summary(self) -> dict[str, list[list[float]]]:
        """``{"zero_fraction" | "support" | "entropy": [[value per head] per layer]}`` (means over rows)."""
        out: dict[str, list[list[float]]] = {name: [] for name in keys.STATS}  # the order stacked in update()
        for layer in sorted(self._sums):
            mean = self._sums[layer] / self._rows[layer].clamp(min=1)
            for i, name in enumerate(out):
                out[name].append([round(v, 6) for v in mean[i].tolist()])
        return out

    @property
    def batches_seen(self) -> int:
        return max(self._calls.values(), default=0)

    @property
    def batches_measured(self) -> int:
        return (self.batches_seen + self.every - 1) // self.every

    def means(self) -> dict[str, float]:
        """Means over all layers and heads."""
        s = self.summary()
        return {k: float(sum(map(sum, v)) / max(1, sum(map(len, v)))) for k, v in s.items()}


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules that call the attention interface, in layer order (ALBERT: the one module
    its layers share)."""
    return [m for m in model.modules() if isinstance(m, ATTENTION_CLASSES)]


def num_heads(module: nn.Module) -> int:
    for name in ("num_attention_heads", "n_heads", "num_heads"):
        if isinstance(value := getattr(module, name, None), int):
            return value
    config: Any = module.config  # ModernBERT keeps the head count only in its config
    return int(config.num_attention_heads)


@contextmanager
def record_attention_stats(model: nn.Module, every: int = 1) -> Iterator[AttentionStats]:
    """Collect :class:`AttentionStats` over every (``every``-th) forward pass run inside the block."""
    stats = AttentionStats(every)
    modules = attention_modules(model)
    for m in modules:
        m._ssaf_recorder = stats  # type: ignore[assignment]
    hook = model.register_forward_pre_hook(lambda *_: stats.new_forward())
    try:
        yield stats
    finally:
        hook.remove()
        for m in modules:
            m._ssaf_recorder = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------- learned parameters


LEARNED_ATTRIBUTES: tuple[str, ...] = tuple(
    sorted({t.learned_attribute for t in registry.TRANSFORMS.values() if t.learned_attribute is not None})
)


def attach(model: nn.Module, spec: AttentionSpec) -> None:
    """Give every self-attention module its resolved probabilities function, its per-head parameter when the
    spec learns one (initialised at the spec's lam / alpha), and the model's :class:`RouteCounts`."""
    t = spec.record
    routes = RouteCounts()
    for m in attention_modules(model):
        m._ssaf_routes = routes  # type: ignore[assignment]
        if t.learned:
            heads = num_heads(m)
            module = (
                T.LearnedAlpha(heads, init=spec.alpha) if t.param == "alpha" else T.LearnedLambda(heads, init=spec.lam)
            )
            setattr(m, t.learned_attribute, module)  # type: ignore[arg-type]
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


# ----------------------------------------------------------------------------- config and model classes


@dataclass(frozen=True)
class Family:
    """An encoder family whose self-attention goes through transformers' attention interface."""

    config: type[PretrainedConfig]
    models: dict[Any, type[PreTrainedModel]]  # Auto class -> stock model class
    attention: type[nn.Module]  # the module that calls the attention interface (one per layer, or shared)


FAMILIES: dict[str, Family] = {
    "bert": Family(
        BertConfig,
        {AutoModel: BertModel, AutoModelForSequenceClassification: BertForSequenceClassification,
         AutoModelForQuestionAnswering: BertForQuestionAnswering},
        BertSelfAttention,
    ),
    "roberta": Family(
        RobertaConfig,
        {AutoModel: RobertaModel, AutoModelForSequenceClassification: RobertaForSequenceClassification,
         AutoModelForQuestionAnswering: RobertaForQuestionAnswering},
        RobertaSelfAttention,
    ),
    "xlm-roberta": Family(
        XLMRobertaConfig,
        {AutoModel: XLMRobertaModel, AutoModelForSequenceClassification: XLMRobertaForSequenceClassification,
         AutoModelForQuestionAnswering: XLMRobertaForQuestionAnswering},
        XLMRobertaSelfAttention,
    ),
    "distilbert": Family(
        DistilBertConfig,
        {AutoModel: DistilBertModel, AutoModelForSequenceClassification: DistilBertForSequenceClassification,
         AutoModelForQuestionAnswering: DistilBertForQuestionAnswering},
        DistilBertSelfAttention,
    ),
    "electra": Family(
        ElectraConfig,
        {AutoModel: ElectraModel, AutoModelForSequenceClassification: ElectraForSequenceClassification,
         AutoModelForQuestionAnswering: ElectraForQuestionAnswering},
        ElectraSelfAttention,
    ),
    "albert": Family(  # one attention module shared by every layer (ALBERT shares its layers' weights)
        AlbertConfig,
        {AutoModel: AlbertModel, AutoModelForSequenceClassification: AlbertForSequenceClassification,
         AutoModelForQuestionAnswering: AlbertForQuestionAnswering},
        AlbertAttention,
    ),
    "modernbert": Family(  # alternating global and sliding-window (local) layers; see README
        ModernBertConfig,
        {AutoModel: ModernBertModel, AutoModelForSequenceClassification: ModernBertForSequenceClassification,
         AutoModelForQuestionAnswering: ModernBertForQuestionAnswering},
        ModernBertAttention,
    ),
}  # fmt: skip
ATTENTION_CLASSES = tuple(f.attention for f in FAMILIES.values())
UNSUPPORTED = {  # families whose attention bypasses the interface, and why
    "deberta-v2": "DeBERTa-v2's disentangled attention computes its own scores and softmax (no attention interface)",
    "deberta": "DeBERTa's disentangled attention computes its own scores and softmax (no attention interface)",
}

CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {}  # stock model_type -> ssaf config class
MODEL_CLASSES: dict[tuple[str, type], type[PreTrainedModel]] = {}  # (stock model_type, Auto class) -> class
REMOTE_MODULE = "ssaf_modeling"  # the file a saved model carries, for trust_remote_code=True


def _config_class(family: str, base: type[PretrainedConfig]) -> type[PretrainedConfig]:
    def __init__(self: PretrainedConfig, ssaf_attention: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("attn_implementation", ATTN_IMPLEMENTATION)
        base.__init__(self, **kwargs)
        self.ssaf_attention = AttentionSpec(**(ssaf_attention or {})).to_dict()

    name = f"Ssaf{base.__name__}"
    return type(name, (base,), {"model_type": f"ssaf_{family}", "__init__": __init__, "__module__": __name__})


def remote_auto_map(family: str) -> dict[str, str]:
    """config.json's ``auto_map``: the classes of the file a saved model carries (``trust_remote_code``)."""
    f = FAMILIES[family]
    names = {"AutoConfig": f"Ssaf{f.config.__name__}"}
    names.update({auto.__name__: f"Ssaf{model.__name__}" for auto, model in f.models.items()})
    return {auto: f"{REMOTE_MODULE}.{cls}" for auto, cls in names.items()}


def write_remote_module(save_directory: str | Path, family: str) -> None:
    """The module that lets plain transformers load a saved ssaf model with ``trust_remote_code=True``."""
    f = FAMILIES[family]
    lines = [
        '"""Written by ssaf beside a saved model: `AutoModel...from_pretrained(dir,',
        "trust_remote_code=True)` loads it with its sparse attention, without `import ssaf` in your code. It",
        'needs the ssaf package installed (pip install ssaf)."""',
        "",
        "import ssaf",
        "from ssaf import attention as _attention",
        "",
        "ssaf.register()",
        f"Ssaf{f.config.__name__} = _attention.CONFIG_CLASSES[{family!r}]",
    ]
    for auto, model in f.models.items():
        lines.append(f"Ssaf{model.__name__} = _attention.MODEL_CLASSES[({family!r}, _attention.{auto.__name__})]")
    (Path(save_directory) / f"{REMOTE_MODULE}.py").write_text("\n".join(lines) + "\n")


def _model_class(family: str, base: type[PreTrainedModel], config_cls: type[PretrainedConfig]) -> type[PreTrainedModel]:
    def __init__(self: PreTrainedModel, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        attach(self, AttentionSpec.from_config(config))

    def initialize_weights(self: PreTrainedModel) -> None:
        # transformers builds on the meta device, loads the checkpoint, and initialises what it lacked through
        # _init_weights, handing each module to the nearest PreTrainedModel above it: for ours that is the stock
        # encoder inside (self.bert), whose _init_weights does not know them and leaves them as allocated
        # (0 or garbage, NaN once). So ours are set here first, unless the checkpoint had them.
        for m in self.modules():
            if isinstance(m, (T.LearnedAlpha, T.LearnedLambda)):
                if not all(getattr(p, "_is_hf_initialized", False) for p in m.parameters()):
                    m.reset_parameters()
                m._is_hf_initialized = True  # type: ignore[assignment]  # transformers skips modules marked so
        base.initialize_weights(self)

    def save_pretrained(self: PreTrainedModel, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        # With the module beside it and the auto_map in config.json, plain transformers loads the model with
        # trust_remote_code=True; without them it would say "does not recognize ssaf_bert ... upgrade".
        self.config.auto_map = remote_auto_map(family)
        result = base.save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_module(save_directory, family)
        return result

    attrs = {
        "config_class": config_cls,
        "__init__": __init__,
        "initialize_weights": initialize_weights,
        "save_pretrained": save_pretrained,
        # The classification and QA heads' losses are means over the batch that ignore num_items_in_batch.
        # Their forward takes **kwargs, so Trainer would otherwise assume a summed loss and, to average
        # over devices, multiply it by the number of processes: a doubled loss (and gradient norms, so
        # clipping) under torchrun with 2 processes.
        "accepts_loss_kwargs": False,
        "__module__": __name__,
    }
    return type(f"Ssaf{base.__name__}", (base,), attrs)


def ssaf_config(base: PretrainedConfig, spec: AttentionSpec) -> PretrainedConfig:
    """The ssaf config for a stock encoder config (e.g. ``AutoConfig.from_pretrained('bert-base-uncased')``)."""
    register()
    model_type = base.model_type.removeprefix("ssaf_")
    if model_type not in CONFIG_CLASSES:
        why = UNSUPPORTED.get(model_type, "its attention does not go through transformers' attention interface")
        raise ValueError(
            f"model type {base.model_type!r} is not supported by ssaf: {why}. Supported families: "
            f"{', '.join(CONFIG_CLASSES)}"
        )
    values = {k: v for k, v in base.to_dict().items() if k not in ("model_type", "ssaf_attention", "architectures")}
    config_cls: Any = CONFIG_CLASSES[model_type]
    return config_cls(ssaf_attention=spec.to_dict(), **values)


_registered = False


def register() -> None:
    """Register the attention, its mask and the ssaf config/model classes with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    AttentionInterface.register(ATTN_IMPLEMENTATION, ssaf_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    for family, f in FAMILIES.items():
        config_cls = _config_class(family, f.config)
        AutoConfig.register(config_cls.model_type, config_cls)
        CONFIG_CLASSES[family] = config_cls
        for auto, base_model in f.models.items():
            cls = _model_class(family, base_model, config_cls)
            auto.register(config_cls, cls)
            MODEL_CLASSES[(family, auto)] = cls
    _registered = True
