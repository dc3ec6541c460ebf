"""Task data: specs, loading from local files / the hub / a generated demo set, and tokenisation."""

from ssaf.data.errors import DataError
from ssaf.data.load import SOURCES, TaskData, load_task_data
from ssaf.data.spec import HubSource, TaskSpec

__all__ = ["SOURCES", "DataError", "HubSource", "TaskData", "TaskSpec", "load_task_data"]
