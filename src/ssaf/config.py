"""Config -> typed, validated settings, in one place, before anything heavy loads.

Hydra composes the config against the schema of ``ssaf.settings`` (types, unknown keys); here it becomes
those objects (their ``__post_init__`` checks ranges) and the checks that span groups run: sequence length
against the model and the task, a data folder that does not exist, a model folder that is missing or holds no
model, precision without a GPU, W&B online without a key or a server, a key no part of the run reads
(``+attn.lamda=-2``: an error; a parameter of another transform: a warning). Each error names the key, the
value and the fix. Imports no torch and no transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssaf import network, registry
from ssaf.settings import (
    PACKAGED,
    RETIRED,
    AttentionSpec,
    AttnSettings,
    DataSettings,
    LoggerSettings,
    ModelSpec,
    RunConfig,
    TaskSpec,
    TrainerSettings,
    retired,
)

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot run; the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class RunSettings:
    """Everything one run is configured with, typed and checked."""

    task: TaskSpec
    attn: AttnSettings
    model: ModelSpec
    trainer: TrainerSettings
    logger: LoggerSettings
    data: DataSettings
    seed: int
    resume: bool | str  # False, True (search) or a run directory
    run_dir: Path

    @property
    def attn_name(self) -> str:
        return self.attn.name


def to_settings(cfg: DictConfig, run_dir: str | Path, warn: bool = True) -> RunSettings:
    """The composed config ``cfg`` turned into the run's typed settings (``ssaf.settings``' objects) and
    checked across groups; ``run_dir``: the run's folder. Raises ConfigError (a ValueError) with a clear message.
    ``warn``: log the settings that have no effect (train.py checks the config first without them, so that
    the run, which builds its settings again, says each once)."""
    try:
        c: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]  # runs every __post_init__
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    if not isinstance(c, RunConfig):
        raise ConfigError("the config was not composed against ssaf's schema: call ssaf.settings.register_configs()")
    check_unread(cfg)
    t, m = c.trainer, c.model
    if t.max_seq_length > m.max_positions:
        raise ConfigError(
            f"trainer.max_seq_length={t.max_seq_length} exceeds the {m.max_positions} positions of "
            f"model {m.name}; use a value <= {m.max_positions}"
        )
    if warn and t.attn_learning_rate is not None and not c.attn.learned:
        # A warning, not an error: a multirun over attn=softmax,learned_alpha shares the override.
        log.warning(
            "trainer.attn_learning_rate=%g has no effect: attn=%s learns no alpha or lam",
            t.attn_learning_rate,
            c.attn.name,
        )
    if warn:
        check_other_params(c.attn)
    check_length(c.task, t)
    check_data(c.data)
    check_precision(t.precision)
    check_logger(c.logger)
    return RunSettings(
        task=c.task,
        attn=c.attn,
        model=m,
        trainer=t,
        logger=c.logger,
        data=c.data,
        seed=c.seed,
        resume=c.resume,
        run_dir=Path(run_dir),
    )


def check_unread(node: DictConfig, path: str = "") -> None:
    """Every key of the composed config is a field of the schema. Hydra's ``+key=value`` adds a key the
    schema lacks (its own hint for a typo suggests it), and turning the config into the schema's objects
    drops it silently: the run would go on without the value. A retired key (``settings.RETIRED``: the schema
    still holds it, so that Hydra composes it) fails too, naming what replaced it."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return  # a free-form mapping (task.extra, model.config_overrides, ...): read by its owner
    known = [f.name for f in dataclasses.fields(schema)]
    for key in map(str, node):
        if not path and key == "hydra":
            continue  # Hydra's own node (present when composed with return_hydra_config): Hydra reads it
        name, child = f"{path}{key}", node[key]  # every value resolves: the schema's objects were just built
        if name in RETIRED and child is not None:
            raise ConfigError(retired(name, child))
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {path}{close[0]}? " if close else ""
            raise ConfigError(
                f"{name}={child}: no part of the run reads this key ({path.rstrip('.') or 'the config'} has: "
                f"{', '.join(known)}); {hint}remove it or correct its name"
            )
        if isinstance(child, DictConfig):
            check_unread(child, f"{name}.")


def check_other_params(a: AttnSettings) -> None:
    """A warning (not an error: a multirun over several attentions shares its overrides) for a parameter
    set away from its default that the chosen transform does not read, e.g. ``attn=softmax attn.lam=-2``."""
    own = a.record.param
    for name in sorted({t.param for t in registry.TRANSFORMS.values() if t.param} - {own}):
        default = next(f.default for f in dataclasses.fields(AttentionSpec) if f.name == name)
        if getattr(a, name) != default:
            reads = f"reads {own} only" if own else "has no parameter"
            log.warning("attn.%s=%s has no effect: attn=%s %s", name, getattr(a, name), a.name, reads)


# A sequence holds at least one token of each text and the special tokens the model adds around them: at
# most 2 for one text ([CLS] a [SEP]) and 4 for a pair (RoBERTa's <s> a </s></s> b </s>) in the families
# ssaf supports. Below that the tokenizer cannot truncate and silently keeps the full lengths.
SPECIAL_TOKENS = {1: 2, 2: 4}


def check_length(task: TaskSpec, t: TrainerSettings) -> None:
    """trainer.max_seq_length against what the task needs (a kind read in windows, as QA: room for windows
    that overlap by doc_stride)."""
    texts = len(task.text_fields)
    need = texts + SPECIAL_TOKENS[texts]
    if t.max_seq_length < need:
        raise ConfigError(
            f"trainer.max_seq_length={t.max_seq_length} is below the {need} tokens task {task.name} needs (one "
            f"token of each of its {texts} text(s) and the model's special tokens); use a value >= {need} "
            f"(the task's own is {task.max_seq_length})"
        )
    if task.record.stride:
        stride = int(task.extra.get("doc_stride", 128))
        if not 0 <= stride < t.max_seq_length // 2:
            raise ConfigError(
                f"task.extra.doc_stride={stride} must be below half of trainer.max_seq_length={t.max_seq_length} "
                f"(windows overlap by the stride); use trainer.max_seq_length >= {2 * stride + 2} or a smaller "
                "task.extra.doc_stride"
            )


def check_data(d: DataSettings) -> None:
    """The data folder exists (that local data names one is the schema's check: DataSettings)."""
    if d.dir and not Path(d.dir).is_dir():
        raise ConfigError(
            f"data.dir={d.dir}: no such folder (from data.dir or SSAF_DATA_DIR); point it at the data root"
        )


def check_environment(s: RunSettings) -> None:
    """What the settings need from this machine, checked before anything heavy loads (the settings alone
    are valid anywhere: :func:`to_settings` checks those)."""
    check_model_source(s.model.source, s.model.pretrained)
    check_hub_offline(s.model.source, s.data.source, s.task.hub.path if s.task.hub else None)


# What a model folder holds, as save_pretrained writes it (any one file of each kind will do).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
MODEL_SOURCE_FIX = (
    "point model.source at a folder written by model.save_pretrained(...) and tokenizer.save_pretrained(...), "
    "use model=minilm (packaged with ssaf), or a hub id such as bert-base-uncased"
)


def looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; ``/x``, ``./x``, ``../x``, ``~/x`` or ``a/b/c`` can only be a path
    (transformers would call it an invalid repo id)."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def check_model_source(source: str, pretrained: bool) -> None:
    """A packaged model's package is installed; a local folder exists and holds a config, a tokenizer and
    (``pretrained``) weights. A hub id is left to :func:`check_hub_offline` and to transformers."""
    if source.startswith(PACKAGED):
        module = source.removeprefix(PACKAGED)
        if not module or importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"model.source={source}: the package {module!r} is not installed; install ssaf with its "
                f"dependencies (pip install -e .), or {MODEL_SOURCE_FIX}"
            )
        return
    path = Path(source)
    if not path.exists():
        if looks_like_path(source):
            hint = " (~ is not expanded here: write the full path)" if source.startswith("~") else ""
            raise ConfigError(f"model.source={source}: no such folder: {path.absolute()}{hint}; {MODEL_SOURCE_FIX}")
        return  # a hub id
    if not path.is_dir():
        raise ConfigError(f"model.source={source}: {path.absolute()} is a file, not a model folder; {MODEL_SOURCE_FIX}")
    names = sorted(p.name for p in path.iterdir())
    missing = [] if "config.json" in names else ["config.json"]
    if not any(n in names for n in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({' or '.join(TOKENIZER_FILES)})")
    if pretrained and not any(n in names for n in WEIGHT_FILES):
        missing.append("weights (model.safetensors or pytorch_model.bin; model.pretrained=false needs none)")
    if missing:
        found = ", ".join(names[:12]) + (f", ... ({len(names)} entries)" if len(names) > 12 else "") or "nothing"
        raise ConfigError(
            f"model.source={source}: the folder {path.absolute()} is not a model: it lacks {'; '.join(missing)}. "
            f"Found there: {found}. {MODEL_SOURCE_FIX[0].upper()}{MODEL_SOURCE_FIX[1:]}"
        )


def check_hub_offline(model_source: str, data_source: str, hub_dataset: str | None) -> None:
    """Offline (the HF offline variables set, by the user or by :func:`go_offline_if_unreachable`), a model or
    data set from the hub must be in the local cache; say so now, not after the imports and the retries."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return
    local = model_source.startswith(PACKAGED) or Path(model_source).exists()
    if not local:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model_source, "config.json"), str):
            raise ConfigError(
                f"model.source={model_source}: the Hugging Face hub is unreachable (offline) and this model is not "
                "in the local cache; use model=minilm (packaged with ssaf), model.source=<a local model directory>, "
                "or run once with network to cache it"
            )
    if data_source == "hub" and hub_dataset:
        from datasets import config as datasets_config

        cached = Path(datasets_config.HF_DATASETS_CACHE) / hub_dataset.replace("/", "___")
        if not cached.exists():
            raise ConfigError(
                f"data.source=hub: the Hugging Face hub is unreachable (offline) and {hub_dataset} is not in the "
                f"local datasets cache ({cached}); use data.source=local with SSAF_DATA_DIR=<data folder> "
                "(e.g. ../shared/data), data.source=sample for the demo set, or run once with network"
            )


def check_precision(precision: str) -> None:
    """fp16 and bf16 need a CUDA device. Asked here, before anything loads, and by
    ``ssaf.training.mixed_precision`` for callers that build training arguments without a config."""
    if precision in ("fp16", "bf16"):
        import torch  # only for this question; the rest of the module stays light

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.precision={precision} needs a CUDA device; use trainer.precision=fp32 or auto on CPU"
            )


def check_logger(lg: LoggerSettings) -> None:
    if lg.name == "tensorboard" and lg.mode != "disabled" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "logger=tensorboard needs the tensorboard package: pip install 'ssaf[tensorboard]' "
            "(or use logger=wandb logger.mode=offline, or logger=none)"
        )
    if lg.name != "wandb" or lg.mode != "online":
        return
    if not wandb_key_configured():
        raise ConfigError(
            "logger.mode=online needs a W&B API key (run `wandb login` or set WANDB_API_KEY); "
            "use logger.mode=offline to log locally and `wandb sync` later"
        )
    host, port = wandb_server()
    if not network.reachable(host, port):
        raise ConfigError(
            f"logger.mode=online: the W&B server {host}:{port} does not answer (offline?); use logger.mode=offline "
            "(or auto) and upload later with `wandb sync <run dir>/wandb/offline-run-*`"
        )


# ----------------------------------------------------------------------------- W&B (ssaf.network probes it)


def wandb_key_configured() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` stores it)."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = wandb_server()[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_server() -> tuple[str, int]:
    """The host and port wandb will talk to: WANDB_BASE_URL, else the base_url of `wandb login --host`'s
    settings file, else api.wandb.ai (probing api.wandb.ai while wandb used another server waited 97 s)."""
    url = os.environ.get("WANDB_BASE_URL")
    if not url:
        settings_file = Path(os.environ.get("WANDB_CONFIG_DIR", Path.home() / ".config" / "wandb")) / "settings"
        if settings_file.exists():
            for line in settings_file.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "base_url" and value.strip():
                    url = value.strip()
    parsed = urlparse(url or "https://api.wandb.ai")
    return parsed.hostname or "api.wandb.ai", parsed.port or (80 if parsed.scheme == "http" else 443)


def go_offline_if_unreachable(cfg: DictConfig) -> None:
    """Before transformers and datasets are imported (they read these variables once, at import): when the
    run needs the hub and it does not answer (``ssaf.network``), set the HF offline variables, so a
    cached model or data set loads at once and a missing one fails at once (offline, transformers otherwise
    retried for 20-50 s before its error)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    source = str(OmegaConf.select(cfg, "model.source", default=""))
    local = source.startswith(PACKAGED) or Path(source).exists()
    data = OmegaConf.select(cfg, "data.source", default="auto")
    wants_hub = not local or data == "hub" or (data == "auto" and not OmegaConf.select(cfg, "data.dir", default=None))
    if wants_hub and not network.reachable(*network.HUB):
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
            os.environ.setdefault(var, "1")
        log.info("%s does not answer: running offline (models and data sets from the local cache only)", network.HUB[0])
