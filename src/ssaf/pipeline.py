"""run(cfg): the composition root. Config -> task data + model with its attention -> trainer -> metrics, logs."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from ssaf.attention import learned_values
from ssaf.config import ConfigError, RunSettings, settings
from ssaf.models import build_model
from ssaf.prepare import PREPARE
from ssaf.tracking import WandbCallback, run_info, start_wandb, write_json
from ssaf.training import (
    EvaluationFailedError,
    NonFiniteLossError,
    last_complete_checkpoint,
    training_arguments,
)
from ssaf.viz import heatmap_figure

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune and evaluate one configuration; returns what it writes to ``metrics.json``."""
    s = settings(cfg, run_dir)
    set_seed(s.seed)
    work_dir = resume_dir(s, overrides or []) or s.run_dir

    model, tokenizer = build_model(s.model, s.attn, s.task.kind, s.task.labels)
    data = PREPARE[s.task.kind](s, tokenizer)
    metric_for_best = f"eval_{s.task.eval_splits[0]}_{s.task.metric_for_best}"
    trainer = data.trainer_cls(
        model=model,
        args=training_arguments(s.trainer, work_dir / "checkpoints", s.seed, metric_for_best),
        train_dataset=data.train,
        eval_dataset=data.evals,
        processing_class=tokenizer,
        record_stats=s.trainer.stats_every_eval,
        stats_sample_every=s.trainer.stats_sample_every,
        attn_learning_rate=s.trainer.attn_learning_rate,
        **data.trainer_kwargs,
    )
    info = run_info(data.source, data.origin, data.sizes, data.dropped)
    wandb_run = None
    if trainer.is_world_process_zero():
        write_json(work_dir / "run_info.json", info)
        wandb_run = start_wandb(
            s.logger,
            work_dir,
            name=f"{s.task.name}-{s.attn_name}-{s.model.name}-s{s.seed}",
            group=s.task.name,
            tags=[f"attn:{s.attn_name}", f"model:{s.model.name}", f"data:{data.source}"],
            config={**OmegaConf.to_container(cfg, resolve=True), "run_info": info},  # type: ignore[dict-item]
        )
        if wandb_run is not None:
            heatmap = partial(heatmap_figure, tokenizer=tokenizer, text_a=data.example[0], text_b=data.example[1])
            trainer.add_callback(
                WandbCallback(
                    wandb_run, stats=lambda: trainer.attention_stats, heatmap=heatmap if s.logger.log_heatmaps else None
                )
            )

    checkpoint = last_complete_checkpoint(work_dir / "checkpoints") if work_dir != s.run_dir else None
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except (NonFiniteLossError, EvaluationFailedError) as e:
        failed = {"status": "failed", "error": str(e), "history": trainer.state.log_history}
        if trainer.is_world_process_zero():
            write_json(work_dir / "metrics.json", failed)
            if wandb_run is not None:
                wandb_run.finish(exit_code=1)
        raise
    train_time = time.time() - started
    if trainer.is_world_process_zero():
        # Saved before the evaluation below, which on a large dev set can take as long as training (SQuAD's
        # 10,570 questions: 20-50 min on 2 cores), so a crash there keeps the model. (A failed evaluation
        # inside train() saves its step's checkpoint itself: SsafTrainer._evaluate.)
        trainer.save_model(str(work_dir / "model"))
    eval_started = time.time()
    final = last_evaluation_if_best(trainer.state)
    if final is None:
        try:
            final = trainer.evaluate()  # the best checkpoint, loaded at the end of training
        except Exception as e:
            model_dir = work_dir / "model"
            error = f"final evaluation failed ({e.__class__.__name__}: {e}); the trained model is in {model_dir}"
            if trainer.is_world_process_zero():
                unevaluated: dict[str, Any] = {"status": "failed", "error": error, "train_runtime_s": train_time}
                write_json(work_dir / "metrics.json", unevaluated)
                if wandb_run is not None:
                    wandb_run.finish(exit_code=1)
            raise RuntimeError(error) from e
    eval_time = time.time() - eval_started

    summary = {
        "status": "completed",
        "task": s.task.name,
        "attn": s.attn_name,
        "attn_spec": s.attn.to_dict(),
        "model": s.model.name,
        "pretrained": s.model.pretrained,
        "seed": s.seed,
        "data_source": data.source,
        "sizes": data.sizes,
        "final": final,
        "best": {
            "metric": metric_for_best,
            "value": trainer.state.best_metric,
            "checkpoint": trainer.state.best_model_checkpoint,
        },
        "attention": {k: v.summary() for k, v in trainer.attention_stats.items()},
        "learned": learned_values(model),
        "train": {
            "runtime_s": train_time,
            "final_eval_runtime_s": eval_time,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_loss": result.training_loss,
            "examples_per_s": result.metrics.get("train_samples_per_second"),
            "seconds_per_epoch": train_time / max(trainer.state.epoch or 1.0, 1e-9),
        },
        "history": trainer.state.log_history,
        "run_dir": str(work_dir),
    }
    if trainer.is_world_process_zero():
        predictions = getattr(trainer, "last_predictions", {})
        for split, preds in predictions.items():
            write_json(work_dir / ("predictions.json" if len(predictions) == 1 else f"predictions_{split}.json"), preds)
        write_json(work_dir / "metrics.json", summary)
        if wandb_run is not None:
            log_prediction_table(wandb_run, trainer)
            wandb_run.summary.update({k: v for k, v in final.items() if isinstance(v, (int, float))})
            wandb_run.finish()
        print(summary_table(s, summary))
    return summary


def last_evaluation_if_best(state: Any) -> dict[str, float] | None:
    """The metrics of the evaluation at the final step when that step is also the best checkpoint.

    Evaluating the best model again would then repeat the same computation (for SQuAD's full dev set,
    minutes); the attention statistics and predictions kept by the trainer are from that evaluation too.
    """
    best = state.best_model_checkpoint
    if not best or int(best.rsplit("-", 1)[-1]) != state.global_step:
        return None
    final: dict[str, float] = {}
    for entry in state.log_history:
        if entry.get("step") == state.global_step:
            final.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return final or None


def log_prediction_table(run: Any, trainer: Any, n: int = 20) -> None:
    """A W&B table of the first ``n`` QA predictions next to their gold answers."""
    predictions = getattr(trainer, "last_predictions", None)
    if not predictions:
        return
    import wandb

    for split, preds in predictions.items():
        ex = trainer.eval_examples[split]
        rows = [
            [ex[i]["id"], ex[i]["question"], preds[ex[i]["id"]], " | ".join(ex[i]["answers"]["text"])]
            for i in range(min(n, len(ex)))
        ]
        run.log({f"predictions/{split}": wandb.Table(columns=["id", "question", "prediction", "gold"], data=rows)})


def summary_table(s: RunSettings, summary: dict[str, Any]) -> str:
    metrics = ("accuracy", "macro_f1") if s.task.kind == "classification" else ("exact_match", "f1")
    head = f"{s.task.name} | attn={s.attn_name} | model={s.model.name} | seed={s.seed} | data={summary['data_source']}"
    rows = ["", head, f"{'split':<24} {metrics[0]:>11} {metrics[1]:>9} {'zeros':>7} {'support':>8} {'entropy':>8}"]
    nan = float("nan")
    for split in s.task.eval_splits:
        f = {k.removeprefix(f"eval_{split}_"): v for k, v in summary["final"].items()}
        rows.append(
            f"{split:<24} {f.get(metrics[0], nan):>11.4f} {f.get(metrics[1], nan):>9.4f} "
            f"{f.get('attn_zero_fraction', nan):>7.3f} {f.get('attn_support', nan):>8.2f} "
            f"{f.get('attn_entropy', nan):>8.3f}"
        )
    t = summary["train"]
    rows.append(
        f"train: {t['steps']} steps, {t['runtime_s']:.0f} s, {t['examples_per_s'] or 0:.1f} examples/s; "
        f"final evaluation {t['final_eval_runtime_s']:.0f} s"
    )
    rows.append(f"run dir: {summary['run_dir']}")
    return "\n".join(rows)


def resume_dir(s: RunSettings, overrides: list[str]) -> Path | None:
    """The run directory to continue: ``resume=<dir>``, or for ``resume=true`` the newest earlier run of the
    same command (same overrides, ignoring ``resume``) that has a checkpoint; None when not resuming."""
    if s.resume is False or s.resume in ("false", "False", None):
        return None
    if isinstance(s.resume, str) and s.resume not in ("true", "True"):
        path = Path(s.resume)
        if last_complete_checkpoint(path / "checkpoints") is None:
            raise ConfigError(f"resume={s.resume}: no checkpoint-* folder under {path / 'checkpoints'}")
        return path
    wanted = sorted(o for o in overrides if not o.startswith("resume="))
    for candidate in sorted(s.run_dir.parent.iterdir(), reverse=True):
        if candidate == s.run_dir or not (candidate / ".hydra" / "overrides.yaml").exists():
            continue
        theirs = OmegaConf.load(candidate / ".hydra" / "overrides.yaml")
        same = sorted(str(o) for o in theirs if not str(o).startswith("resume=")) == wanted
        if same and last_complete_checkpoint(candidate / "checkpoints") is not None:
            return candidate
    raise ConfigError(
        f"resume=true: no earlier run of this command with a checkpoint under {s.run_dir.parent}; "
        "pass resume=<run dir> to pick one"
    )
