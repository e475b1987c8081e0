"""Multi-task data: sources, label vocabularies, sub-word alignment, batching and task sampling."""

from mtexp.data.batching import (
    TrainBatches,
    eval_batches,
    task_probabilities,
    token_predictions_to_words,
    train_batches,
)
from mtexp.data.collate import IGNORE_INDEX, Collator, make_collator
from mtexp.data.config import data_config
from mtexp.data.features import Features, build_features
from mtexp.data.loader import load_data
from mtexp.data.textio import resolve_path
from mtexp.data.types import Corpus, DataError, Example, MultiTaskData, TaskSpec
from mtexp.data.vocab import SEQUENCE_FALLBACK

__all__ = [
    "IGNORE_INDEX",
    "SEQUENCE_FALLBACK",
    "Collator",
    "Corpus",
    "DataError",
    "Example",
    "Features",
    "MultiTaskData",
    "TaskSpec",
    "TrainBatches",
    "build_features",
    "data_config",
    "eval_batches",
    "load_data",
    "make_collator",
    "resolve_path",
    "task_probabilities",
    "token_predictions_to_words",
    "train_batches",
]
