"""A trained model from its run directory, and its predictions on new sentences.

    model = load_model("outputs/2024-05-01/12-00-00")
    model.predict(["turn on the kitchen lights"])
    # [{"text": "turn on the kitchen lights", "words": [...],
    #   "intent": {"label": "HassTurnOn", "probability": 0.97},
    #   "slots": {"tags": ["O", "O", "O", "B-area", "O"],
    #             "entities": [{"type": "area", "start": 3, "end": 4, "text": "kitchen"}]}}]

Words are the sentence split at whitespace, as the JointBERT, CoNLL and table readers split
raw text; their spelling is kept, so entity texts quote the input. The built-in data also
lowercases and strips punctuation from its words; the bundled and `tiny` backbones' tokenizers
lowercase by themselves, and a word with punctuation attached takes its first sub-token's tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from mtexp.data.align import encode_words
from mtexp.data.batching import token_predictions_to_words
from mtexp.data.bio import tag_type
from mtexp.data.collate import Ragged, Table, make_collator
from mtexp.data.types import TaskSpec
from mtexp.encoder import SentenceEncoder
from mtexp.model import MultiTaskModel
from mtexp.savedmodel import read_model_config
from mtexp.weights import load_weights

SENTENCE_KEYS = ("text", "words")  # keys of a prediction beside the task names


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu", trust_remote_code: bool = False
) -> MultiTaskModel:
    """The trained model of a run directory, in eval mode, built from the directory alone.

    Reads `model.json` (architecture, pooling, heads, tasks), `tokenizer/` and
    `model.safetensors`; nothing is downloaded and the training config is not needed. Raises
    `mtexp.savedmodel.SavedModelError` when the directory holds no complete saved model.
    """
    run_dir = Path(run_dir)
    config = read_model_config(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / config["tokenizer"]))
    backbone = config["backbone"]
    tasks = [TaskSpec(task["name"], task["kind"], tuple(task["labels"])) for task in config["tasks"]]
    with torch.random.fork_rng(devices=[]):  # the heads' initialisation draws from the global RNG
        encoder = SentenceEncoder.from_config(
            backbone["config"], tokenizer, pooling=backbone["pooling"], normalize=backbone["normalize"],
            max_length=backbone["max_length"], trust_remote_code=trust_remote_code,
        )
        heads = config["heads"]
        model = MultiTaskModel(encoder, tasks, heads["hidden"], heads["dropout"], config["loss_weights"])
    model.load_state_dict(load_weights(run_dir / config["weights"]))
    return model.to(device).eval()


def split_words(sentence: str) -> list[str]:
    """A sentence's words: whitespace-separated, spelling kept (see the module docstring)."""
    return sentence.split()


@torch.inference_mode()
def predict_sentences(
    model: MultiTaskModel, sentences: Sequence[str], batch_size: int = 64
) -> list[dict[str, Any]]:
    """Each task's prediction per sentence, in input order.

    Sentences are tokenised as training tokenises words, sorted by length into batches and run
    in eval mode; the model's train/eval mode is restored afterwards. A token task's tag per
    word is its first sub-token's prediction (as training scores them); words cut off by the
    encoder's `max_length` are tagged "O".
    """
    words = _checked_words(model, sentences, batch_size)
    if not words:
        return []
    tokenizer = model.encoder.tokenizer
    table = word_table(tokenizer, words, model.encoder.max_length)
    collate = make_collator(tokenizer).collate
    order = np.argsort(-table.lengths, kind="stable")
    device = next(model.parameters()).device
    predictions: list[dict[str, Any]] = [{} for _ in sentences]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = collate(table, index)
            inputs = {key: value.to(device) for key, value in batch.items() if torch.is_tensor(value)}
            logits = model({**inputs, "labels": {}}).logits
            for row, i in enumerate(index.tolist()):
                tasks = _task_predictions(model.tasks, logits, batch["word_ids"], row, words[i])
                predictions[i] = {"text": sentences[i], "words": words[i], **tasks}
    finally:
        model.train(was_training)
    return predictions


def _checked_words(model: MultiTaskModel, sentences: Sequence[str], batch_size: int) -> list[list[str]]:
    if isinstance(sentences, str):
        raise TypeError("predict() takes a list of sentences, not a single string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    clash = sorted(set(model.tasks) & set(SENTENCE_KEYS))
    if clash:
        raise ValueError(f"task names {clash} clash with the prediction keys {list(SENTENCE_KEYS)}")
    words = [split_words(sentence) for sentence in sentences]
    empty = [i for i, sentence_words in enumerate(words) if not sentence_words]
    if empty:
        raise ValueError(f"sentence {empty[0]} has no words; every sentence needs at least one")
    return words


def word_table(tokenizer: Any, words: list[list[str]], max_length: int) -> Table:
    """Sub-token ids and word ids of pre-split sentences, tokenised as the training features are."""
    encoding, word_ids, _ = encode_words(tokenizer, words, max_length)
    columns = {
        name: Ragged.from_rows(encoding[name])
        for name in ("input_ids", "attention_mask", "token_type_ids")
        if name in encoding
    }
    columns["word_ids"] = Ragged.from_rows(word_ids)
    return Table(columns)


def _task_predictions(
    tasks: Mapping[str, TaskSpec],
    logits: Mapping[str, torch.Tensor],
    word_ids: torch.Tensor,
    row: int,
    words: list[str],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        scores = logits[name][row].float()
        if task.kind == "sequence":
            probabilities = scores.softmax(dim=-1)
            best = int(probabilities.argmax())
            out[name] = {"label": task.labels[best], "probability": float(probabilities[best])}
            continue
        label_ids = token_predictions_to_words(scores.argmax(dim=-1), word_ids[row], len(words))
        tags = [task.labels[i] for i in label_ids]
        out[name] = {"tags": tags, "entities": entities(tags, words)}
    return out


def iob2_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """`(type, start, end)` word spans, end exclusive, read as strict IOB2 (as the scores are).

    A span is a `B-x` and the `I-x` tags right after it; an `I-` tag that does not continue a
    span of its type starts none, as seqeval's strict mode has it.
    """
    spans: list[tuple[str, int, int]] = []
    current: list[Any] | None = None
    for i, tag in enumerate(tags):
        kind = tag_type(tag)
        if current is not None and tag.startswith("I-") and kind == current[0]:
            current[2] = i + 1
            continue
        if current is not None:
            spans.append(tuple(current))
        current = [kind, i, i + 1] if tag.startswith("B-") else None
    if current is not None:
        spans.append(tuple(current))
    return spans


def entities(tags: Sequence[str], words: Sequence[str]) -> list[dict[str, Any]]:
    """The spans of `tags` with their text: `{"type", "start", "end" (exclusive), "text"}`."""
    return [
        {"type": kind, "start": start, "end": end, "text": " ".join(words[start:end])}
        for kind, start, end in iob2_spans(tags)
    ]


def format_prediction(prediction: Mapping[str, Any], precision: int = 3) -> str:
    """One readable line: `text  ->  intent: Label (0.973)  slots: [type: text] ...`."""
    parts = [f"{prediction['text']}  ->"]
    for name, value in prediction.items():
        if name in SENTENCE_KEYS:
            continue
        if "label" in value:
            parts.append(f"{name}: {value['label']} ({value['probability']:.{precision}f})")
        else:
            spans = " ".join(f"[{entity['type']}: {entity['text']}]" for entity in value["entities"])
            parts.append(f"{name}: {spans or '-'}")
    return "  ".join(parts)
