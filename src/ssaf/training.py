"""The trainer: transformers.Trainer plus attention statistics at each evaluation (summed over torchrun processes),
final evaluations kept off the training curve, and a stop on non-finite loss."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ssaf import keys
from ssaf.attention import AttentionStats, learned_parameters, learned_values, record_attention_stats
from ssaf.config import check_precision
from ssaf.console import interactive
from ssaf.metrics import load_metric
from ssaf.qa import postprocess_predictions
from ssaf.settings import TrainerSettings


def mixed_precision(precision: str) -> tuple[bool, bool]:
    """(fp16, bf16) for TrainingArguments; 'auto' is bf16 on a CUDA device that supports it, else fp32."""
    if precision == "auto":
        return False, bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    check_precision(precision)  # ssaf.config's check, for callers without a config
    return precision == "fp16", precision == "bf16"


def training_arguments(
    s: TrainerSettings, output_dir: Path, seed: int, metric_for_best: str, num_workers: int = 0
) -> TrainingArguments:
    fp16, bf16 = mixed_precision(s.precision)
    per_epoch = s.eval_every == 0
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        warmup_steps=s.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the total steps
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        # Batches of similar lengths pad less: on SST-2 phrases (13.5 tokens on average) random batches pad
        # to 40.5 tokens and length-grouped ones to ~14, so a CPU step costs about a third as much.
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
        eval_strategy="epoch" if per_epoch else "steps",
        save_strategy="epoch" if per_epoch else "steps",
        eval_steps=s.eval_every or None,
        save_steps=s.eval_every or 500,  # ignored when saving per epoch
        logging_steps=s.report_every,
        save_total_limit=s.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric_for_best,
        greater_is_better=True,
        fp16=fp16,
        bf16=bf16,
        seed=seed,
        data_seed=seed,
        report_to="none",  # W&B is driven by ssaf.tracking with the settings it needs
        dataloader_num_workers=num_workers,
        disable_tqdm=not interactive(),  # bars only on a terminal (see ssaf.console)
        use_cpu=not torch.cuda.is_available(),
    )


class ClassificationMetrics:
    """compute_metrics for Trainer: accuracy and macro F1 from the shipped `evaluate` module."""

    def __init__(self) -> None:
        self.metric = load_metric("classification")

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = np.asarray(logits).argmax(-1)
        return self.metric.compute(predictions=preds.tolist(), references=np.asarray(labels).tolist())


def own_learning_rate(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lr: float) -> None:
    """Move ``params`` out of the optimiser's groups into a group of their own with learning rate ``lr``
    and no weight decay. Call before the scheduler is built: it scales every group's initial rate by the
    same factor, so these parameters follow the warm-up and decay of the rest at their own scale.

    Why: a learned alpha / lam is one scalar per head behind a sigmoid / exp; at a fine-tuning rate
    (2e-5 to 1e-4, a few hundred steps) Adam moves it by about 1e-3 and it ends where it started.
    """
    if not params:
        return
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
    optimizer.add_param_group({"params": params, "lr": lr, "weight_decay": 0.0})


TIMING = "ssaf_timing.json"  # in each checkpoint: the training wall time up to it, per process segment


class TrainingClock:
    """The wall time of training, across the processes of a resumed run.

    Each saved checkpoint records the segments so far (the earlier processes' time up to the checkpoint
    they were resumed from, then this process's own); a run resumed from it starts from that record, so
    the total counts the training that produced the model once, whatever was interrupted and redone.
    """

    def __init__(self, earlier: list[float] | None = None) -> None:
        self.earlier = list(earlier or [])
        self.started = time.time()

    @classmethod
    def resumed_from(cls, checkpoint: str | None) -> TrainingClock:
        if checkpoint is None:
            return cls()
        try:
            return cls(json.loads((Path(checkpoint) / TIMING).read_text())["segments"])
        except (OSError, ValueError, KeyError):  # a checkpoint of an older ssaf: its time is unknown
            logging.getLogger(__name__).warning(
                "%s has no %s: the training time before it is not counted", checkpoint, TIMING
            )
            return cls()

    @property
    def segments(self) -> list[float]:
        return [*self.earlier, time.time() - self.started]

    def write(self, folder: Path) -> None:
        (folder / TIMING).write_text(json.dumps({"segments": self.segments}))


LOSS = "ssaf_loss.json"  # in each checkpoint: the sum of the training loss over every step up to it


def loss_sum_at(checkpoint: Path) -> float | None:
    """The summed training loss of the steps up to ``checkpoint``; None for a checkpoint of an older ssaf."""
    try:
        return float(json.loads((checkpoint / LOSS).read_text())["loss_sum"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class NonFiniteLossError(RuntimeError):
    """Raised inside the training step, before the optimiser step, so the last checkpoint stays good."""


UNEVALUATED = "ssaf_unevaluated"  # marks a checkpoint saved by an evaluation that did not finish


class EvaluationFailedError(RuntimeError):
    """An evaluation during training failed; the model of that step was saved first (see ``SsafTrainer``)."""


class SsafTrainer(Trainer):
    """Trainer that records attention statistics during evaluation, refuses to step on a NaN/inf loss and
    saves the step's checkpoint when an evaluation during training fails."""

    def __init__(
        self,
        *args: Any,
        record_stats: bool = True,
        stats_sample_every: int = 1,
        attn_learning_rate: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.record_stats, self.stats_sample_every = record_stats, stats_sample_every
        self.attn_learning_rate = attn_learning_rate
        self.attention_stats: dict[str, AttentionStats] = {}  # eval prefix -> stats of the last evaluation
        self.clock = TrainingClock()  # the pipeline sets one that counts the earlier segments of a resumed run
        # The summed loss of the steps before the checkpoint this process resumed from: transformers' train_loss
        # is the mean over the steps of one train() call, so a resumed run's would cover its last segment only.
        self.loss_before: float | None = None
        self.on_curve = True  # evaluations are logged at their step (see off_the_curve)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        fresh = self.optimizer is None  # transformers returns an existing optimiser as it is
        optimizer = super().create_optimizer(model)
        if fresh and self.attn_learning_rate is not None:
            target: Any = self.model if model is None else model
            own_learning_rate(optimizer, list(learned_parameters(target).values()), self.attn_learning_rate)
        return optimizer

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        folder = Path(str(self.args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        loss_sum = self.loss_sum()  # every process: the not yet logged part is gathered over them
        if self.is_world_process_zero() and folder.is_dir():
            self.clock.write(folder)
            (folder / LOSS).write_text(json.dumps({"loss_sum": loss_sum, "step": self.state.global_step}))

    def loss_sum(self) -> float:
        """The summed training loss of every step so far, this process's and those before its checkpoint.

        transformers keeps this call's logged part in ``_total_loss_scalar`` and the part since the last log
        in ``_tr_loss`` (a tensor, zeroed in place when logged).
        """
        # Read as they are (no getattr default): a transformers that renames them fails here, not silently.
        unlogged = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        return (self.loss_before or 0.0) + self._total_loss_scalar + unlogged

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if not self.on_curve:  # see off_the_curve
            return
        if "train_loss" in logs and self.loss_before is not None:  # a resumed run's: the mean over every step
            logs = {**logs, "train_loss": self.mean_train_loss()}
        super().log(logs, *args, **kwargs)

    def mean_train_loss(self) -> float:
        """The mean training loss over every step, once training has ended (``_tr_loss`` is drained then)."""
        return ((self.loss_before or 0.0) + self._total_loss_scalar) / max(self.state.global_step, 1)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as e:  # torch's message says the groups differ, not why
            raise ValueError(
                f"the optimiser state in {checkpoint} does not fit this run's parameter groups ({e}); "
                "resume with the trainer.attn_learning_rate the run was started with (null or a rate: "
                "see its .hydra/config.yaml)"
            ) from e

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step + 1}; training stopped before the "
                f"optimiser step. Lower trainer.learning_rate or check the inputs; the last good checkpoint "
                f"is kept in {self.args.output_dir}."
            )
        return loss

    def _evaluate(self, trial: Any, ignore_keys_for_eval: Any, *args: Any, **kwargs: Any) -> Any:
        # transformers evaluates before it saves the step's checkpoint, so an evaluation that fails (out of
        # memory, an error in a metric) or is stopped with Ctrl-C because it runs too long would lose all
        # training since the last checkpoint: on SQuAD the whole epoch. Save it first, then stop.
        try:
            return super()._evaluate(trial, ignore_keys_for_eval, *args, **kwargs)
        except KeyboardInterrupt:  # re-raised as it is: a multirun must stop, not go on to its next job
            logging.getLogger(__name__).warning("evaluation interrupted; %s", self._save_unevaluated(trial))
            raise
        except Exception as e:
            raise EvaluationFailedError(
                f"evaluation at step {self.state.global_step} failed ({e.__class__.__name__}: {e}); "
                f"{self._save_unevaluated(trial)}"
            ) from e

    def _save_unevaluated(self, trial: Any) -> str:
        """Save the step's checkpoint, marked as not evaluated; says where (or why not) for the error."""
        step = self.state.global_step
        if self.args.world_size > 1:  # the other ranks may be elsewhere; a save would wait on them forever
            return f"the model of step {step} is not saved (distributed run)"
        folder = Path(str(self.args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        try:
            self._save_checkpoint(self.model_wrapped, trial)
            (folder / UNEVALUATED).write_text(f"the evaluation at step {step} did not finish\n")
        except Exception as e:  # the evaluation's error is the one to report; this one is added to it
            return f"saving the model of step {step} failed too ({e.__class__.__name__}: {e})"
        return (
            f"the model of step {step} is saved in {folder}: fix the cause and continue with resume=<run dir>, "
            "which evaluates that step first"
        )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(resume_from_checkpoint, str):
            folder = Path(resume_from_checkpoint)
            state = TrainerState.load_from_json(str(folder / TRAINER_STATE_NAME))
            if (folder / UNEVALUATED).exists():
                self.evaluate_checkpoint(folder, state)
            self.loss_before = loss_sum_at(folder)
            if self.loss_before is None:
                logging.getLogger(__name__).warning(
                    "%s has no %s: train_loss will be the mean over the resumed steps only", folder, LOSS
                )
            if 0 < state.max_steps <= state.global_step:
                return self.already_trained(state, folder)
        result = super().train(resume_from_checkpoint, *args, **kwargs)
        if self.loss_before is not None:
            mean = self.mean_train_loss()
            result = TrainOutput(result.global_step, mean, {**result.metrics, "train_loss": mean})
        return result

    def already_trained(self, state: TrainerState, folder: Path) -> TrainOutput:
        """Resuming from the last step's checkpoint: nothing is left to train (transformers would take one
        more step, at learning rate 0, before noticing). Load the model training would have ended with."""
        self.state = state
        best = state.best_model_checkpoint if self.args.load_best_model_at_end else None
        self._load_from_checkpoint(best or str(folder))
        if self.loss_before is not None:
            return TrainOutput(state.global_step, self.loss_before / max(state.global_step, 1), {})
        losses = [h["loss"] for h in state.log_history if "loss" in h]  # the logged ones: an approximation
        return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else math.nan, {})

    def evaluate_checkpoint(self, folder: Path, state: TrainerState) -> dict[str, float]:
        """Run the evaluation a checkpoint missed and record it in ``state`` (and the checkpoint's copy) as
        transformers would have: logged at its step, and the best model if it is the best.

        transformers never evaluates the step it resumes from, so without this the step would take no
        part in choosing the best model, and a run whose last evaluation failed would end on an older one.
        """
        self._load_from_checkpoint(str(folder))
        self.state = state  # the evaluation logs into the checkpoint's history, at its step
        metrics = self.evaluate()
        if self._determine_best_metric(metrics=metrics, trial=None):
            state.best_model_checkpoint = str(folder)
        if self.is_world_process_zero():
            state.save_to_json(str(folder / TRAINER_STATE_NAME))
            (folder / UNEVALUATED).unlink()
        self.accelerator.wait_for_everyone()
        return metrics

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> Any:
        target = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(target, dict):  # Trainer loops over the splits and calls back here for each
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        return self.evaluate_split(eval_dataset, ignore_keys, metric_key_prefix)

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: Any = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        """Trainer's loop over one split, with the attention statistics of exactly its forward passes (summed
        over the processes of a torchrun run): stored in ``attention_stats`` and added to the metrics before
        the evaluation logs them and calls the callbacks' ``on_evaluate`` (which read them, and whose heatmap
        runs a forward pass that is not measured)."""
        args = (dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if not self.record_stats:
            return super().evaluation_loop(*args)
        with record_attention_stats(self.model, self.stats_sample_every) as stats:  # type: ignore[arg-type]
            output = super().evaluation_loop(*args)
        if self.args.world_size > 1:  # each process measured its own share of the batches
            device = self.accelerator.device
            stats.combine(lambda t: self.accelerator.reduce(t.to(device), reduction="sum").cpu())
        self.attention_stats[metric_key_prefix] = stats
        metrics: dict[str, float] = output.metrics if output.metrics is not None else {}
        metrics.update({keys.stat_mean(metric_key_prefix, k): v for k, v in stats.means().items()})
        metrics[keys.stat_mean(metric_key_prefix, "batches_measured")] = stats.batches_measured
        for name, values in learned_values(self.model).items():  # type: ignore[arg-type]
            flat = [v for layer in values for v in layer]
            metrics[keys.learned_mean(metric_key_prefix, name)] = sum(flat) / len(flat)
        return output._replace(metrics=metrics)

    @contextmanager
    def off_the_curve(self) -> Iterator[None]:
        """Evaluations inside are not points of the training curve (the selected checkpoint evaluated again
        at the end, the test splits): they return their metrics and log nothing, to the history or to a
        tracker; the run records them as its final metrics."""
        self.on_curve = False
        try:
            yield
        finally:
            self.on_curve = True

    def evaluate_split(self, eval_dataset: Any, ignore_keys: Any, metric_key_prefix: str) -> dict[str, float]:
        """Evaluate one split (a dataset, or the name of one of the trainer's eval datasets)."""
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)


class QATrainer(SsafTrainer):
    """Evaluates extractive QA the standard way: logits of every window -> best span per question ->
    exact match / F1 against the gold answers."""

    def __init__(
        self,
        *args: Any,
        eval_examples: dict[str, Any],
        n_best: int = 20,
        max_answer_length: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.n_best, self.max_answer_length = n_best, max_answer_length
        self.metric = load_metric("squad")
        self.last_predictions: dict[str, dict[str, str]] = {}

    def evaluate_split(self, eval_dataset: Any, ignore_keys: Any, metric_key_prefix: str) -> dict[str, float]:
        if eval_dataset is None or isinstance(eval_dataset, str):
            names = list(self.eval_examples) if eval_dataset is None else [eval_dataset]
            if len(names) != 1:
                raise ValueError(f"evaluate one QA split at a time, got {names}")
            name = names[0]
        else:
            raise ValueError("QATrainer evaluates its own eval splits by name (features need their examples)")
        features: Any = self.eval_dataset[name] if isinstance(self.eval_dataset, dict) else self.eval_dataset
        examples = self.eval_examples[name]
        start_time = time.perf_counter()
        output = self.evaluation_loop(
            self.get_eval_dataloader(features),
            description="Evaluation",
            prediction_loss_only=False,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        start, end = output.predictions[0], output.predictions[1]
        preds = postprocess_predictions(examples, features, start, end, self.n_best, self.max_answer_length)
        scores = self.metric.compute(
            predictions=[{"id": k, "prediction_text": v} for k, v in preds.items()],
            references=[{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"], strict=True)],
        )
        metrics: dict[str, float] = {
            **(output.metrics or {}),
            **{f"{metric_key_prefix}_{k}": v for k, v in scores.items()},
        }
        metrics[f"{metric_key_prefix}_questions"] = len(examples)
        metrics[f"{metric_key_prefix}_windows"] = len(features)
        # Trainer.evaluate times itself; this path bypasses it, so the forward passes, the span search
        # and the metric are timed here (the wall time of evaluating this split).
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start_time, 3)
        self.last_predictions[name] = preds
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` that was written to the end, or None.

    Trainer writes ``trainer_state.json`` last; a run killed while saving leaves a checkpoint folder
    without it (or with it cut short), which ``resume_from_checkpoint`` cannot load.
    """
    if not folder.is_dir():
        return None
    steps = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name.removeprefix("checkpoint-").isdigit():
            steps.append((int(p.name.removeprefix("checkpoint-")), p))
    for _, p in sorted(steps, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text())
            return str(p)
        except (OSError, ValueError):
            logging.getLogger(__name__).warning("skipping incomplete checkpoint %s", p)
    return None
