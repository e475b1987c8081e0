"""Multi-task data: sources, label vocabularies, sub-word alignment, batching and task sampling."""

from mtexp.data.batching import (
    TrainBatches,
    task_probabilities,
    token_predictions_to_words,
    train_batches,
)
from mtexp.data.collate import IGNORE_INDEX, Collator, make_collator
from mtexp.data.config import DataConfig, SamplingConfig, data_config
from mtexp.data.features import Features, build_features
from mtexp.data.loader import load_data
from mtexp.data.presets import load_preset
from mtexp.data.registry import SOURCES, register_source
from mtexp.data.source import ReadContext, SourceConfig
from mtexp.data.textio import resolve_path
from mtexp.data.types import Corpus, DataError, Example, MultiTaskData, TaskSpec
from mtexp.data.vocab import SEQUENCE_FALLBACK

__all__ = [
    "IGNORE_INDEX",
    "SEQUENCE_FALLBACK",
    "SOURCES",
    "Collator",
    "Corpus",
    "DataConfig",
    "DataError",
    "Example",
    "Features",
    "MultiTaskData",
    "ReadContext",
    "SamplingConfig",
    "SourceConfig",
    "TaskSpec",
    "TrainBatches",
    "build_features",
    "data_config",
    "load_data",
    "load_preset",
    "make_collator",
    "register_source",
    "resolve_path",
    "task_probabilities",
    "token_predictions_to_words",
    "train_batches",
]
