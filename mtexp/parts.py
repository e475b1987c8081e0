"""The parts of a multi-task model that freeze and take a learning rate together.

A part's `name` ("encoder.embeddings", "encoder.layer_3", "encoder.other", "heads.intent",
"other") names its optimizer parameter group and its `lr.<name>` column in history.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

PartKind = Literal["embeddings", "layer", "encoder-other", "head", "other"]


@dataclass(frozen=True)
class Part:
    """One part: the embeddings, encoder layer `layer`, the rest of the encoder, the head of
    `task`, or anything else."""

    kind: PartKind
    layer: int | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(PartKind):
            raise ValueError(f"{self!r}: kind must be one of {get_args(PartKind)}")
        if (self.kind == "layer") != (self.layer is not None):
            raise ValueError(f"{self!r}: a layer index goes with kind 'layer', and only with it")
        if (self.kind == "head") != (self.task is not None):
            raise ValueError(f"{self!r}: a task goes with kind 'head', and only with it")

    @classmethod
    def of_layer(cls, index: int) -> Part:
        return cls("layer", layer=index)

    @classmethod
    def of_head(cls, task: str) -> Part:
        return cls("head", task=task)

    @property
    def name(self) -> str:
        """The group name: "encoder.embeddings", "encoder.layer_<i>", "encoder.other",
        "heads.<task>" or "other"."""
        if self.kind == "layer":
            return f"encoder.layer_{self.layer}"
        if self.kind == "head":
            return f"heads.{self.task}"
        return {"embeddings": "encoder.embeddings", "encoder-other": "encoder.other"}.get(self.kind, "other")

    @property
    def in_encoder(self) -> bool:
        return self.kind in ("embeddings", "layer", "encoder-other")

    def __str__(self) -> str:
        return self.name


EMBEDDINGS = Part("embeddings")
ENCODER_OTHER = Part("encoder-other")
OTHER = Part("other")
