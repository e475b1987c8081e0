"""Task 2: one shared sentence encoder with a head per task, trained on a weighted sum of losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mtexp.data.types import TaskSpec
from mtexp.encoder import EncoderOutput, SentenceEncoder
from mtexp.parts import EMBEDDINGS, ENCODER_OTHER, OTHER, Part

IGNORE_INDEX = -100


@dataclass
class ModelOutput:
    logits: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None


def make_head(in_features: int, num_labels: int, hidden: int | None, dropout: float) -> nn.Module:
    """A linear classifier, or a one-hidden-layer MLP when `hidden` is set; dropout on the input."""
    if not hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_labels))
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_labels),
    )


class MultiTaskModel(nn.Module):
    """`sequence` heads read the pooled embedding; `token` heads read every token's state."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        tasks: Sequence[TaskSpec],
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = {task.name: task for task in tasks}
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout
        self.heads = nn.ModuleDict(
            {
                task.name: make_head(encoder.hidden_size, len(task.labels), head_hidden, head_dropout)
                for task in tasks
            }
        )
        weights = dict(loss_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"loss weights name unknown tasks {unknown}: tasks are {sorted(self.tasks)}")
        self.loss_weights = {name: float(weights.get(name, 1.0)) for name in self.tasks}

    def forward(self, batch: Mapping[str, object]) -> ModelOutput:
        encoded: EncoderOutput = self.encoder(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        return self.forward_features(encoded.token_states, encoded.pooled, batch.get("labels") or {})

    def forward_features(
        self,
        token_states: torch.Tensor,
        pooled: torch.Tensor,
        labels: Mapping[str, torch.Tensor],
    ) -> ModelOutput:
        """Run only the heads, on encoder outputs computed here or read from a feature cache."""
        logits = {
            name: head(pooled if self.tasks[name].kind == "sequence" else token_states)
            for name, head in self.heads.items()
        }
        losses = {
            name: task_loss(logits[name], target) for name, target in labels.items() if name in logits
        }
        total = None
        if losses:
            total = sum(self.loss_weights[name] * loss for name, loss in losses.items())
        return ModelOutput(logits, losses, total)

    def parameter_parts(self) -> dict[str, Part]:
        """Every parameter's part (embeddings, encoder layer, rest of the encoder, task head,
        other), by parameter name: what freezes and takes a learning rate together."""
        owner: dict[int, Part] = {id(param): ENCODER_OTHER for param in self.encoder.parameters()}
        owner.update({id(param): EMBEDDINGS for param in self.encoder.embeddings.parameters()})
        for index, layer in enumerate(self.encoder.layers):
            owner.update({id(param): Part.of_layer(index) for param in layer.parameters()})
        for task, head in self.heads.items():
            owner.update({id(param): Part.of_head(task) for param in head.parameters()})
        return {name: owner.get(id(param), OTHER) for name, param in self.named_parameters()}

    def predict(self, sentences: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """Every task's prediction per sentence, in input order (`mtexp.predict.predict_sentences`).

        A sentence is split into words at whitespace; a sequence task gives `{"label",
        "probability"}`, a token task `{"tags", "entities"}` with one tag per word.
        """
        from mtexp.predict import predict_sentences  # it imports this module

        return predict_sentences(self, sentences, batch_size)


def task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension, ignoring positions labelled -100."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    if not (target != IGNORE_INDEX).any():
        return flat_logits.sum() * 0.0  # keeps the graph; mean over zero targets would be NaN
    return nn.functional.cross_entropy(flat_logits, target.reshape(-1), ignore_index=IGNORE_INDEX)
