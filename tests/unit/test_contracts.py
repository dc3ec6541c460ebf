"""The contracts ssaf relies on but no library promises: private methods it overrides or calls, and what
importing ssaf costs. An upgrade of transformers or Hydra that renames one fails here, with the place in ssaf
to change, instead of silently bypassing ssaf's behaviour (a renamed ``_save_checkpoint`` would make the
timing record vanish; a renamed ``_evaluate`` would lose the save-on-failed-evaluation)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from transformers import Trainer

# Trainer's private methods SsafTrainer overrides or calls, with the parameters it passes (after self).
TRAINER_PRIVATE = {
    "_evaluate": ["trial", "ignore_keys_for_eval"],  # overridden: save the step's checkpoint when evaluation fails
    "_save_checkpoint": ["model", "trial"],  # overridden (the timing record) and called (the unevaluated save)
    "_load_optimizer_and_scheduler": ["checkpoint"],  # overridden: a clear message when the groups differ
    "_determine_best_metric": ["metrics", "trial"],  # called: a resumed, unevaluated step competes for best
    "_load_from_checkpoint": ["resume_from_checkpoint"],  # called: resuming from the last step
}


@pytest.mark.parametrize("name,params", TRAINER_PRIVATE.items())
def test_the_private_trainer_methods_ssaf_relies_on_still_exist(name, params):
    fn = getattr(Trainer, name, None)
    assert fn is not None, f"transformers.Trainer.{name} is gone: ssaf.training.SsafTrainer relies on it"
    got = list(inspect.signature(fn).parameters)[1 : 1 + len(params)]
    assert got == params, f"transformers.Trainer.{name} now takes {got}; ssaf.training.SsafTrainer passes {params}"


def test_the_trainer_calls_save_checkpoint_and_evaluate_where_ssaf_hooks_in():
    source = inspect.getsource(Trainer)
    assert "self._evaluate(" in source, "Trainer no longer evaluates through _evaluate: see SsafTrainer._evaluate"
    assert "self._save_checkpoint(" in source, "Trainer no longer saves through _save_checkpoint: see SsafTrainer"


def test_the_trainer_evaluates_through_evaluation_loop_then_logs_then_calls_on_evaluate():
    # SsafTrainer.evaluation_loop stores a split's attention statistics, which the tracking callback's
    # on_evaluate reads; SsafTrainer.log keeps the final evaluation off the training curve.
    source = inspect.getsource(Trainer.evaluate)
    order = [source.find(s) for s in ("self.evaluation_loop(", "self.log(", "callback_handler.on_evaluate(")]
    assert -1 not in order and order == sorted(order), "Trainer.evaluate changed: see SsafTrainer.evaluation_loop"


def test_hydra_job_return_still_carries_the_failed_jobs_exception():
    from hydra.core.utils import JobReturn, JobStatus

    job = JobReturn()
    assert hasattr(job, "_return_value"), "hydra's JobReturn._return_value is gone: see ssaf.sweeps.MultirunSummary"
    job.status, job._return_value = JobStatus.FAILED, ValueError("x")
    assert isinstance(job._return_value, ValueError) and hasattr(job, "working_dir") and hasattr(job, "hydra_cfg")


@pytest.mark.parametrize(
    "module,absent",
    [
        ("ssaf.transforms", ("transformers", "datasets", "hydra", "wandb", "matplotlib")),
        ("ssaf.settings", ("torch", "transformers", "datasets")),
        ("ssaf.registry", ("torch", "transformers", "omegaconf")),
        ("ssaf.summary", ("torch", "transformers", "omegaconf")),
        ("ssaf.config", ("torch", "transformers", "datasets")),
        ("ssaf", ("torch", "transformers")),
        ("ssaf.report", ("torch", "transformers")),
        ("ssaf.allocator", ("torch", "numpy")),
    ],
)
def test_importing_a_module_costs_only_what_it_needs(module, absent):
    """No import-time side effects: the maths needs torch alone, the schema and the report neither."""
    code = f"import sys, {module}; print(','.join(m for m in {absent!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"importing {module} imported {r.stdout.strip()}"


def test_importing_ssaf_registers_nothing_and_register_is_idempotent():
    code = (
        "import ssaf\n"
        "from transformers.modeling_utils import AttentionInterface\n"
        "assert 'ssaf' not in AttentionInterface._global_mapping, 'import ssaf registered the attention'\n"
        "ssaf.register(); ssaf.register()\n"
        "from transformers import AutoConfig\n"
        "assert 'ssaf' in AttentionInterface._global_mapping\n"
        "AutoConfig.for_model('ssaf_bert')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_transformers_still_collects_attentions_through_the_context_variable_ssaf_reads():
    """ssaf.attention.attentions_requested reads it to keep output_attentions=True off the fused kernel."""
    from transformers.utils import output_capturing

    collector = getattr(output_capturing, "_active_collector", None)
    assert collector is not None, "transformers.utils.output_capturing._active_collector is gone: see ssaf.attention"
    token = collector.set({"attentions": []})
    try:
        from ssaf.attention import attentions_requested

        assert attentions_requested()
    finally:
        collector.reset(token)
    assert not attentions_requested()
