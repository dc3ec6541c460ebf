"""run(cfg): the composition root. Config -> task data + model with its attention -> trainer -> metrics, logs.

Four stages, each a function below: ``prepare`` (data, model, trainer, W&B), ``train`` (with resume),
``evaluate`` (the selected checkpoint; test splits once) and ``finish`` (metrics.json, predictions, W&B,
the console summary). What a run is and produced is a :class:`~ssaf.summary.RunSummary`: written when the
run starts (``running``), when it stops early (``failed`` / ``interrupted``) and when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from ssaf import keys, kinds
from ssaf.attention import attention_routes, learned_values
from ssaf.config import RunSettings, check_environment, to_settings
from ssaf.console import FILE_ONLY
from ssaf.models import build_model
from ssaf.prepare import Prepared
from ssaf.resume import ResumeError, discard, find_earlier, move_in
from ssaf.summary import (
    AttentionInfo,
    Budget,
    DataInfo,
    RunSummary,
    Timing,
    write_json,
    write_summary,
)
from ssaf.tracking import Tracker, TrackingCallback, run_info, start_tracker
from ssaf.training import SsafTrainer, TrainingClock, last_complete_checkpoint, training_arguments
from ssaf.viz import heatmap_figure

log = logging.getLogger(__name__)


@dataclass
class Built:
    """What :func:`prepare` builds for a run, and the later stages use: its settings, its folder, its data,
    the trainer, the tracker and the summary so far."""

    settings: RunSettings
    work_dir: Path
    data: Prepared
    trainer: SsafTrainer
    tracker: Tracker | None  # W&B or TensorBoard, or None
    summary: RunSummary
    earlier: RunSummary | None = None  # the record of the run this one continues

    @property
    def main(self) -> bool:
        """The process that writes files (rank 0 of a distributed run)."""
        return self.trainer.is_world_process_zero()


def run(
    cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None, search: Sequence[Path] = ()
) -> RunSummary:
    """Fine-tune and evaluate one configuration; returns what it writes to ``metrics.json``.

    ``run_dir`` is the folder made for this command; a resume continues in the earlier run's folder instead
    (``ssaf.resume``: ``resume=true`` searches ``run_dir``'s parent and ``search``), and a completed run
    is skipped: its summary is returned as it is. ``overrides`` are the command's, for the hint printed
    when it is interrupted.
    """
    s = to_settings(cfg, run_dir)
    check_environment(s)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        earlier = find_earlier(s.resume, config, s.run_dir, [s.run_dir.parent, *search])
    except ResumeError:
        discard(s.run_dir, Path(s.resume) if isinstance(s.resume, str) else None)  # refused: nothing written
        raise
    if earlier is not None and earlier.completed:
        assert earlier.summary is not None
        log.info("already complete: %s (its record is left as it is)", earlier.dir)
        discard(s.run_dir, earlier.dir)
        return earlier.summary
    work_dir = s.run_dir
    if earlier is not None:
        move_in(s.run_dir, earlier.dir)
        work_dir = earlier.dir
        log.info("resuming %s from %s; command: %s", work_dir, earlier.checkpoint, " ".join(overrides or []))
    if work_dir.resolve() == s.run_dir.resolve() and int(os.environ.get("RANK", "0")) == 0:
        # Hydra saves the config with its interpolations (data.dir: ${oc.env:SSAF_DATA_DIR,null}): the record
        # a resume is checked against holds the values this run used. (A resume in another folder leaves
        # the run's record as it is; one launched into the run's own folder matched it.)
        (work_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, work_dir / ".hydra" / "config.yaml")
    set_seed(s.seed)
    try:
        r = prepare(s, work_dir, config, earlier.summary if earlier else None)
    except KeyboardInterrupt:
        log.error("%s", interrupted_hint(work_dir, overrides or []))
        raise
    try:
        result, checkpoint = train(r, earlier.checkpoint if earlier else None)
        final, eval_s, reused = evaluate(r)
    except KeyboardInterrupt:
        stopped(r, "interrupted", f"stopped with Ctrl-C at step {r.trainer.state.global_step}")
        log.error("%s", interrupted_hint(work_dir, overrides or []))
        raise
    except Exception as e:
        stopped(r, "failed", f"{e.__class__.__name__}: {e}")
        raise
    return finish(r, result, checkpoint, final, eval_s, reused)


def interrupted_hint(work_dir: Path, overrides: list[str]) -> str:
    """Where an interrupted run stands and the command that continues it."""
    checkpoint = last_complete_checkpoint(work_dir / "checkpoints")
    saved = f"the newest checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
    command = shlex.join([*(o for o in overrides if not o.startswith("resume=")), f"resume={work_dir}"])
    launcher = "python train.py" if Path(sys.argv[0]).name == "train.py" else "ssaf-train"  # the checkout's or the tool
    return (
        f"interrupted: {saved}; continue with: {launcher} {command} "
        "(a multirun: launch the same multirun with resume=true; each unfinished job continues in its folder)"
    )


# ----------------------------------------------------------------------------- stages


def prepare(s: RunSettings, work_dir: Path, config: dict[str, Any], earlier: RunSummary | None = None) -> Built:
    """Data, model and trainer; the tracker started; the run's summary written as ``running``.

    ``earlier``: the record of the run this one continues; the running record keeps how far it got.
    """
    kind = s.task.record  # what differs between task kinds (ssaf.kinds)
    model, tokenizer = build_model(s.model, s.attn, kind.name, s.task.labels)
    data: Prepared = kind.load("prepare")(s, tokenizer)
    trainer: SsafTrainer = kind.load("trainer")(
        model=model,
        args=training_arguments(s.trainer, work_dir / "checkpoints", s.seed, selection_metric(s), s.data.num_workers),
        train_dataset=data.train,
        eval_dataset=data.evals,
        processing_class=tokenizer,
        record_stats=s.trainer.stats_every_eval,
        stats_sample_every=s.trainer.stats_sample_every,
        attn_learning_rate=s.trainer.attn_learning_rate,
        **data.trainer_kwargs,
    )
    summary = identity(s, work_dir, data, trainer.args.world_size)
    if earlier is not None:  # never less than the record it continues (until training passes it)
        summary = replace(summary, train=earlier.train, history=earlier.history)
    r = Built(s, work_dir, data, trainer, None, summary, earlier)
    if r.main:
        info = run_info(data.source, data.origin, data.sizes, data.dropped, data.fingerprint, data.answer_checks)
        write_json(work_dir / "run_info.json", run_info_of_segment(work_dir / "run_info.json", info, earlier))
        write_summary(work_dir, r.summary)
        r.tracker = start_tracker(
            s.logger,
            work_dir,
            name=f"{s.task.name}-{s.attn_name}-{s.model.name}-s{s.seed}",
            group=s.task.name,
            tags=[f"attn:{s.attn_name}", f"model:{s.model.name}", f"data:{data.source}"],
            config={**config, "run_info": info},
        )
        if r.tracker is not None:
            text_a, text_b = kind.picture(data.example)
            heatmap = partial(heatmap_figure, tokenizer=tokenizer, text_a=text_a, text_b=text_b)
            trainer.add_callback(
                TrackingCallback(
                    r.tracker,
                    stats=lambda: trainer.attention_stats,
                    heatmap=heatmap if s.logger.log_heatmaps else None,
                    on_curve=lambda: trainer.on_curve,
                )
            )
    return r


def run_info_of_segment(path: Path, info: dict[str, Any], earlier: RunSummary | None) -> dict[str, Any]:
    """The run's run_info.json: the first segment's (its command, commit, machine), and each resume's under
    ``resumed``, so the record says how every part of the run was made."""
    if earlier is None or not path.is_file():
        return info
    try:
        first = json.loads(path.read_text())
    except ValueError:
        return info
    return {**first, "resumed": [*first.get("resumed", []), info]}


def train(r: Built, checkpoint: str | None = None) -> tuple[Any, str | None]:
    """Train (from ``checkpoint`` when resuming); the model is saved before evaluating."""
    r.trainer.clock = TrainingClock.resumed_from(checkpoint)
    result = r.trainer.train(resume_from_checkpoint=checkpoint)
    if r.main:
        # Saved before the final evaluation, which on a large dev set can take as long as training (SQuAD's
        # 10,570 questions: 20-50 min on 2 cores), so a crash there keeps the model. (A failed evaluation
        # inside train() saves its step's checkpoint itself: SsafTrainer._evaluate.)
        r.trainer.save_model(str(r.work_dir / "model"))
    return result, checkpoint


def evaluate(r: Built) -> tuple[dict[str, float], float, bool]:
    """Metrics of the selected checkpoint on every eval split, and once on each test split.

    Returns the metrics, the seconds the final evaluation took and whether the selection splits' metrics
    are the last evaluation's (when the last step is the best checkpoint, evaluating it again would
    repeat the same computation: SQuAD's dev set, minutes).
    """
    started = time.time()
    final = last_evaluation_if_best(r.trainer.state)
    reused = final is not None
    try:
        # Not points of the training curve: the history and the trackers' curves end with the last training
        # step's evaluation; these metrics are the run's final ones (metrics.json, the trackers' final/ keys).
        with r.trainer.off_the_curve():
            if final is None:
                final = r.trainer.evaluate()  # the best checkpoint, loaded at the end of training
            for split, ds in r.data.tests.items():
                final.update(r.trainer.evaluate(eval_dataset=ds, metric_key_prefix=keys.prefix(split)))
    except Exception as e:
        raise RuntimeError(
            f"final evaluation failed ({e.__class__.__name__}: {e}); the trained model is in {r.work_dir / 'model'}"
        ) from e
    return final, time.time() - started, reused


def finish(
    r: Built, result: Any, checkpoint: str | None, final: dict[str, float], eval_s: float, reused: bool
) -> RunSummary:
    """The completed summary: written, logged to W&B, printed."""
    state, trainer = r.trainer.state, r.trainer
    segments = trainer.clock.segments
    steps, epochs = state.global_step, state.epoch or 0.0
    runtime = sum(segments)
    batch = trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps * trainer.args.world_size
    best_step = int(state.best_model_checkpoint.rsplit("-", 1)[-1]) if state.best_model_checkpoint else None
    kept = r.settings.trainer.keep_checkpoints  # else checkpoints/ is deleted below: name only what remains
    summary = replace(
        r.summary,
        status="completed",
        final=final,
        best={
            "metric": selection_metric(r.settings),
            "value": state.best_metric,
            "step": best_step,
            "model": str(r.work_dir / "model"),  # the selected step's weights (loaded at the end, then saved)
            "checkpoint": state.best_model_checkpoint if kept else None,
        },
        attention={k: v.summary() for k, v in trainer.attention_stats.items()},
        learned=learned_values(trainer.model),  # type: ignore[arg-type]
        routes=attention_routes(trainer.model),  # type: ignore[arg-type]
        train=Timing(
            runtime_s=runtime,
            segments=segments,
            steps=steps,
            epochs=epochs,
            train_loss=result.training_loss,
            examples_per_s=steps * batch / runtime if steps and runtime > 0 else None,
            seconds_per_epoch=runtime / epochs if epochs else None,
            final_eval_runtime_s=eval_s,
            final_eval_reused=reused,
        ),
        history=state.log_history,
    )
    if r.main:
        predictions = getattr(trainer, "last_predictions", {})
        for split, preds in predictions.items():
            name = "predictions.json" if len(predictions) == 1 else f"predictions_{split}.json"
            write_json(r.work_dir / name, preds)
        write_summary(r.work_dir, summary)
        if not r.settings.trainer.keep_checkpoints:
            # The best model is in model/; the checkpoints (with their optimizer state, ~3x the weights)
            # only served resuming, and the run is complete.
            shutil.rmtree(r.work_dir / "checkpoints", ignore_errors=True)
        if r.tracker is not None:
            log_prediction_table(r.tracker, trainer)
            r.tracker.finish(final)
        table = summary_table(summary)
        print(table)
        log.info("run summary:\n%s", table, extra={FILE_ONLY: True})  # train.log; the console has it printed
    return summary


def stopped(r: Built, status: str, error: str) -> None:
    """The one place a run that stops early is recorded: metrics.json (why, and how far it got) and W&B."""
    if not r.main:
        return
    state, segments = r.trainer.state, r.trainer.clock.segments
    timing = Timing(sum(segments), segments, state.global_step, state.epoch or 0.0, None, None, None, 0.0, False)
    train, history = timing, state.log_history
    before = r.earlier.train if r.earlier is not None else None
    if r.earlier is not None and before is not None and state.global_step < before.steps:
        # The resume stopped before it got as far as the run had (a checkpoint that does not load, Ctrl-C
        # while catching up): the record of how far the run got stays, with why this attempt stopped.
        was = f"{r.earlier.status}: {r.earlier.error}" if r.earlier.error else r.earlier.status
        reached = f"the run had reached step {before.steps} ({was})"
        error = f"a resume stopped at step {state.global_step} ({error}); {reached}"
        train, history = before, r.earlier.history
    routes = attention_routes(r.trainer.model)  # type: ignore[arg-type]
    summary = replace(r.summary, status=status, error=error, train=train, history=history, routes=routes)
    write_summary(r.work_dir, summary)
    if r.tracker is not None:
        r.tracker.finish(None)


# ----------------------------------------------------------------------------- helpers


def selection_metric(s: RunSettings) -> str:
    """The metric that selects the checkpoint: the headline metric on the first eval split."""
    return keys.metric(s.task.eval_splits[0], s.task.metric_for_best)


def identity(s: RunSettings, work_dir: Path, data: Prepared | None = None, world_size: int = 1) -> RunSummary:
    """The summary of a run that has not produced anything yet: what it is (``world_size``: its processes)."""
    t = s.attn.record
    param = t.param
    return RunSummary(
        status="running",
        task=s.task.name,
        kind=s.task.kind,
        metric=s.task.metric_for_best,
        splits=list(s.task.eval_splits),
        test_splits=list(s.task.test_splits),
        attn=AttentionInfo(
            name=s.attn_name,
            transform=s.attn.transform,
            param=param,
            value=getattr(s.attn, param) if param else None,
            learned=t.learned,
            own_lr=s.trainer.attn_learning_rate if t.learned else None,
            backend=s.attn.backend,
        ),
        model=s.model.name,
        pretrained=s.model.pretrained,
        seed=s.seed,
        budget=Budget(
            max_train_samples=s.trainer.max_train_samples,
            epochs=float(s.trainer.epochs),
            max_steps=s.trainer.max_steps,
            max_seq_length=s.trainer.max_seq_length,
            learning_rate=s.trainer.learning_rate,
            batch_size=s.trainer.batch_size * s.trainer.gradient_accumulation_steps,
            group_by_length=s.trainer.group_by_length,
            max_eval_samples=s.trainer.max_eval_samples,
            world_size=world_size,
        ),
        run_dir=str(work_dir),
        data=None
        if data is None
        else DataInfo(
            source=data.source, fingerprint=data.fingerprint, origin=data.origin, sizes=data.sizes, dropped=data.dropped
        ),
    )


def last_evaluation_if_best(state: Any) -> dict[str, float] | None:
    """The metrics of the evaluation at the final step when that step is also the best checkpoint.

    The attention statistics and predictions kept by the trainer are from that evaluation too.
    """
    best = state.best_model_checkpoint
    if not best or int(best.rsplit("-", 1)[-1]) != state.global_step:
        return None
    final: dict[str, float] = {}
    for entry in state.log_history:
        if entry.get("step") == state.global_step:
            final.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return final or None


def log_prediction_table(tracker: Tracker, trainer: Any, n: int = 20) -> None:
    """A table of the first ``n`` QA predictions next to their gold answers."""
    predictions = getattr(trainer, "last_predictions", None)
    if not predictions:
        return
    for split, preds in predictions.items():
        ex = trainer.eval_examples[split]
        rows = [
            [ex[i]["id"], ex[i]["question"], preds[ex[i]["id"]], " | ".join(ex[i]["answers"]["text"])]
            for i in range(min(n, len(ex)))
        ]
        tracker.predictions(split, ["id", "question", "prediction", "gold"], rows)


def summary_table(summary: RunSummary) -> str:
    """The console's (and train.log's) summary of a completed run; metrics in percent whatever the task."""
    kind = kinds.get(summary.kind)
    data = summary.data.source if summary.data else "?"
    head = f"{summary.task} | attn={summary.attn.label} | model={summary.model} | seed={summary.seed} | data={data}"
    scale = kind.scale
    widths = [max(13 if i == 0 else 11, len(m) + 2) for i, m in enumerate(kind.metrics)]  # room for "<m> %"
    names = " ".join(f"{m + ' %':>{w}}" for m, w in zip(kind.metrics, widths, strict=True))
    rows = ["", head, f"{'split':<24} {names} {'zeros':>7} {'support':>8} {'entropy':>8}"]
    nan = float("nan")
    for split in summary.all_splits:
        f = {k.removeprefix(keys.metric(split, "")): v for k, v in summary.final.items()}
        values = " ".join(f"{f.get(m, nan) * scale:>{w}.2f}" for m, w in zip(kind.metrics, widths, strict=True))
        rows.append(
            f"{split:<24} {values} {f.get('attn_zero_fraction', nan):>7.3f} {f.get('attn_support', nan):>8.2f} "
            f"{f.get('attn_entropy', nan):>8.3f}"
        )
    t = summary.train
    assert t is not None
    segments = f" in {len(t.segments)} segments" if len(t.segments) > 1 else ""
    rows.append(f"train: {t.steps} steps, {t.runtime_s:.0f} s{segments}, {t.examples_per_s or 0:.1f} examples/s")
    if summary.routes is not None:
        rows.append(f"attention (backend={summary.attn.backend}): {summary.routes.label}")
    best = summary.best
    if best.get("step") is not None:
        value = best["value"] * scale  # the headline metric: the scale of the columns above
        rows.append(f"selected: step {best['step']}, {best['metric']} = {value:.2f} %; its model: {best['model']}")
    if t.final_eval_reused:
        tests = f"; test splits {t.final_eval_runtime_s:.0f} s" if summary.test_splits else ""
        rows.append(f"final evaluation: the step-{best.get('step')} evaluation (the selected checkpoint) reused{tests}")
    else:
        rows.append(f"final evaluation: {t.final_eval_runtime_s:.0f} s")
    rows.append(f"run dir: {summary.run_dir}")
    return "\n".join(rows)
