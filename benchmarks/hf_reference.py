"""The reference a practitioner would write: joint intent + slot model trained by the HF `Trainer`.

Follows the Transformers token-classification guide: tokenise words with `is_split_into_words`,
label the first sub-token of each word (-100 elsewhere), pad with `DataCollatorForTokenClassification`,
and let `Trainer` run AdamW with a linear schedule, its length-grouped sampler switched on (as
mtexp groups its batches by length) and the same allocator setting as mtexp's training. The model
is an `AutoModel` backbone with two linear heads (intent on the mean-pooled states, slots on every
token) returning its loss.

    python benchmarks/hf_reference.py --backbone DIR --data ../shared/data/snips --out ref.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, SequentialSampler
from transformers import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, snips_config

from mtexp.resources import reuse_freed_memory


class JointIntentSlotModel(nn.Module):
    """AutoModel encoder, mean-pooled intent head and per-token slot head; loss = sum of both."""

    def __init__(self, backbone: str, num_intents: int, num_slots: int, dropout: float = 0.1) -> None:
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_pretrained(backbone, add_pooling_layer=False)
        hidden = self.backbone.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.intent_head = nn.Linear(hidden, num_intents)
        self.slot_head = nn.Linear(hidden, num_slots)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                intent_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        intent_logits = self.intent_head(self.dropout(pooled))
        slot_logits = self.slot_head(self.dropout(states))
        outputs = {"intent_logits": intent_logits, "slot_logits": slot_logits}
        if labels is not None and intent_labels is not None:
            loss_fn = nn.CrossEntropyLoss()
            outputs["loss"] = loss_fn(intent_logits, intent_labels) + loss_fn(
                slot_logits.reshape(-1, slot_logits.shape[-1]), labels.reshape(-1))
        return outputs


def build_dataset(examples: list, tokenizer: Any, intents: list[str], slots: list[str], max_length: int):
    """Tokenised dataset with `labels` (first sub-token of each word) and `intent_labels`."""
    from datasets import Dataset

    intent_ids = {label: i for i, label in enumerate(intents)}
    slot_ids = {label: i for i, label in enumerate(slots)}
    raw = Dataset.from_dict({
        "tokens": [example.words for example in examples],
        "tags": [[slot_ids[tag] for tag in example.labels["slots"]] for example in examples],
        "intent_labels": [intent_ids[example.labels["intent"]] for example in examples],
    })

    def tokenize_and_align_labels(batch: dict[str, list]) -> dict[str, list]:
        tokenized = tokenizer(batch["tokens"], truncation=True, max_length=max_length,
                              is_split_into_words=True)
        labels, word_ids = [], []
        for i, tags in enumerate(batch["tags"]):
            ids = tokenized.word_ids(batch_index=i)
            previous, row = None, []
            for word in ids:
                row.append(-100 if word is None or word == previous else tags[word])
                previous = word
            labels.append(row)
            word_ids.append([-1 if word is None else word for word in ids])
        tokenized["labels"] = labels
        tokenized["word_ids"] = word_ids
        return tokenized

    return raw.map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "tags"])


def word_tags(slot_logits: np.ndarray, word_ids: list[list[int]], examples: list, slots: list[str]) -> list:
    """Each word's tag from its first sub-token; words lost to truncation get "O"."""
    predicted = []
    for row, (ids, example) in enumerate(zip(word_ids, examples, strict=True)):
        tags = ["O"] * len(example.words)
        seen = set()
        for position, word in enumerate(ids):
            if word >= 0 and word not in seen:
                seen.add(word)
                tags[word] = slots[int(slot_logits[row, position].argmax())]
        predicted.append(tags)
    return predicted


class InOrderTrainer(Trainer):
    """`Trainer` whose predictions follow the dataset's order: under
    `train_sampling_strategy="group_by_length"` transformers 5 groups evaluation batches by length
    too, and `predict()` would return the test sentences shuffled against their gold labels."""

    def _get_eval_sampler(self, eval_dataset: Dataset) -> SequentialSampler:
        return SequentialSampler(eval_dataset)


SAMPLING = ("group_by_length", "random")  # the Trainer's length-grouped sampler, or its default


def sampling_arguments(sampling: str) -> dict[str, Any]:
    """TrainingArguments for `sampling`: `train_sampling_strategy` in transformers 5,
    `group_by_length` before it."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": sampling}
    return {"group_by_length": sampling == "group_by_length"}


def train_reference(backbone: str, data_path: Path, train_examples: int, epochs: int, batch_size: int = 32,
                    max_length: int = 64, lr: float = 1e-4, seed: int = 0, precision: str = "fp32",
                    work_dir: Path = Path("hf-reference"),
                    sampling: str = "group_by_length") -> dict[str, Any]:
    """Train on the same SNIPS sentences mtexp selects; samples/s and test scores.

    `sampling="group_by_length"` switches on the Trainer's own length grouping (batches of similar
    length, as mtexp makes them); `"random"` is the Trainer's default."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, TrainingArguments
    from transformers import set_seed as hf_set_seed

    from mtexp.data import load_data

    data = load_data(snips_config(data_path, train_examples), seed=seed)
    tasks = {task.name: list(task.labels) for task in data.tasks}
    splits = data.corpora[0].splits
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    train = build_dataset(splits["train"], tokenizer, tasks["intent"], tasks["slots"], max_length)
    test = build_dataset(splits["test"], tokenizer, tasks["intent"], tasks["slots"], max_length)
    hf_set_seed(seed)
    model = JointIntentSlotModel(backbone, len(tasks["intent"]), len(tasks["slots"]))
    args = TrainingArguments(
        output_dir=str(work_dir), per_device_train_batch_size=batch_size, per_device_eval_batch_size=128,
        num_train_epochs=epochs, learning_rate=lr, weight_decay=0.01, warmup_steps=0.1,
        lr_scheduler_type="linear", max_grad_norm=1.0, bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(), eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, seed=seed,
        label_names=["labels", "intent_labels"], **sampling_arguments(sampling),
    )
    trainer = InOrderTrainer(model=model, args=args, train_dataset=train,
                             data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    prediction = trainer.predict(test)
    intent_logits, slot_logits = prediction.predictions
    if not np.array_equal(np.asarray(prediction.label_ids[1]), np.asarray(test["intent_labels"])):
        raise RuntimeError("Trainer.predict returned the test sentences out of their order")
    gold_intents = [example.labels["intent"] for example in splits["test"]]
    pred_intents = [tasks["intent"][i] for i in np.asarray(intent_logits).argmax(-1)]
    gold_tags = [list(example.labels["slots"]) for example in splits["test"]]
    pred_tags = word_tags(np.asarray(slot_logits), test["word_ids"], splits["test"], tasks["slots"])
    samples = len(train) * epochs
    return {
        "train_examples": len(train),
        "epochs": epochs,
        "train_seconds": round(seconds, 3),
        "train_runtime": output.metrics["train_runtime"],
        "train_samples_per_second": round(samples / output.metrics["train_runtime"], 2),
        "test_intent_accuracy": float(np.mean(np.array(gold_intents) == np.array(pred_intents))),
        "test_slot_f1": float(f1_score(gold_tags, pred_tags, mode="strict", scheme=IOB2)),
        "params_total": sum(p.numel() for p in model.parameters()),
        "padding_fraction": padding_fraction(trainer),
        "settings": effective_settings(trainer, max_length),
    }


def padding_fraction(trainer: Any) -> float:
    """Share of the padded token positions in an epoch of the Trainer's own training batches."""
    real = total = 0
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"]
        real += int(mask.sum())
        total += mask.numel()
    return round(1 - real / total, 4) if total else 0.0


def effective_settings(trainer: Any, max_length: int) -> dict[str, Any]:
    """What the `Trainer` ran with, read back from it (for the parity check against mtexp)."""
    args = trainer.args
    return {
        "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps,
        "lr": args.learning_rate,
        "schedule": getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type)),
        "warmup": args.warmup_steps,
        "epochs": args.num_train_epochs,
        "optimizer_steps": trainer.state.global_step,
        "max_length": max_length,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "group_by_length": (getattr(args, "train_sampling_strategy", None) == "group_by_length"
                            or bool(getattr(args, "group_by_length", False))),  # transformers 5, 4
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "seed": args.seed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="folder of an AutoModel encoder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sampling", choices=SAMPLING, default="group_by_length",
                        help="group_by_length: the Trainer's length-grouped batches (as mtexp's); "
                             "random: the Trainer's default")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the result")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        reuse_freed_memory()  # the allocator setting mtexp's training applies on the CPU
    result = train_reference(args.backbone, args.data, args.train_examples, args.epochs, args.batch_size,
                             args.max_length, args.lr, args.seed, args.precision, args.out.parent / "hf-work",
                             args.sampling)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
