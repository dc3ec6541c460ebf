"""Each check once, at the schema boundary: an API entry point used without a config (building training
arguments, loading task data) asks the same function and says the same thing."""

from __future__ import annotations

import pytest
import torch

from ssaf.config import ConfigError
from ssaf.settings import DataSettings, TaskSpec

SQUAD = dict(name="squad", kind="qa", metric_for_best="f1", text_fields=("question", "context"), local="squad")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for a machine without CUDA")
def test_mixed_precision_without_a_gpu_is_the_configs_error():
    from ssaf.training import mixed_precision

    with pytest.raises(ConfigError, match=r"trainer.precision=bf16 needs a CUDA device; use trainer.precision=fp32"):
        mixed_precision("bf16")


def test_local_data_without_a_folder_is_the_schemas_error_from_the_data_api_too():
    from ssaf.data.load import load_task_data

    with pytest.raises(ValueError, match=r"data.source=local needs a data folder") as schema:
        DataSettings(source="local")
    sst2 = TaskSpec(name="sst2", labels=("negative", "positive"), text_fields=("sentence",), local="sst2")
    with pytest.raises(ValueError) as api:
        load_task_data(sst2, "local", None, ("train",))
    assert str(api.value) == str(schema.value)


def test_a_kind_without_test_splits_refuses_them_in_the_schema():
    TaskSpec(**SQUAD, splits=("train", "validation", "test"))
    with pytest.raises(ValueError, match=r"task squad: test splits are not supported for qa; set task.test_splits"):
        TaskSpec(**SQUAD, splits=("train", "validation", "test"), test_splits=("test",))
