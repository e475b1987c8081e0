"""Multi-task data: sources, label vocabularies, sub-word alignment, batching and task sampling."""

from mtexp.data.config import data_config
from mtexp.data.loader import load_data
from mtexp.data.textio import resolve_path
from mtexp.data.types import Corpus, DataError, Example, MultiTaskData, TaskSpec

__all__ = [
    "Corpus",
    "DataError",
    "Example",
    "MultiTaskData",
    "TaskSpec",
    "data_config",
    "load_data",
    "resolve_path",
]
