"""Task data: specs, loading from local files / the hub / a generated demo set, and tokenisation."""

from ssaf.data.errors import DataError
from ssaf.data.load import TaskData, load_task_data

__all__ = ["DataError", "TaskData", "load_task_data"]
