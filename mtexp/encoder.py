"""Task 1: a sentence encoder, a transformer backbone plus pooling into fixed-length embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

from mtexp.backbones import DEFAULT_BACKBONE, resolve_backbone
from mtexp.pooling import check_pooling_mode, pool
from mtexp.precision import resolve_precision

PROGRESS_THRESHOLD = 1_000


@dataclass
class EncoderOutput:
    """Token states `(B, T, H)`, pooled embeddings `(B, H)`, and optionally every layer's states."""

    token_states: torch.Tensor
    pooled: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class SentenceEncoder(nn.Module):
    """A transformer backbone with masked pooling; `encode()` turns sentences into embeddings."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        check_pooling_mode(pooling)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("SentenceEncoder needs a fast tokenizer (word_ids() aligns token labels)")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "all-MiniLM-L6-v2",
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = 256,
        trust_remote_code: bool = False,
        **model_kwargs,
    ) -> SentenceEncoder:
        """Load any `AutoModel` encoder: a hub name, a local folder, or the bundled default."""
        source = resolve_backbone(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        backbone = AutoModel.from_pretrained(
            source, trust_remote_code=trust_remote_code, **model_kwargs
        )
        _drop_unused_pooler(backbone)
        return cls(backbone, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length)

    @classmethod
    def random_init(
        cls,
        num_layers: int = 2,
        hidden_size: int = 64,
        num_heads: int = 2,
        intermediate_size: int = 128,
        seed: int = 0,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = 128,
        tokenizer_source: str = DEFAULT_BACKBONE,
    ) -> SentenceEncoder:
        """A small randomly initialised BERT with the default's vocabulary: no download, for tests."""
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(tokenizer_source))
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max(512, max_length),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = BertModel(config, add_pooling_layer=False)
        return cls(backbone, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length)

    @classmethod
    def from_config(
        cls,
        backbone_config: Mapping[str, Any],
        tokenizer,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = 128,
        trust_remote_code: bool = False,
    ) -> SentenceEncoder:
        """The architecture of a Hugging Face model config (`config.to_dict()`), weights unset.

        Nothing is downloaded: the backbone is built with `AutoModel.from_config` and its
        parameters are left as initialised, for a saved state dict to fill. The global random
        state is left as it was.
        """
        settings = dict(backbone_config)
        model_type = settings.pop("model_type", None)
        if not model_type:
            raise ValueError("the backbone config has no 'model_type'; cannot rebuild its architecture")
        config = AutoConfig.for_model(model_type, **settings)
        with torch.random.fork_rng(devices=[]):
            backbone = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        _drop_unused_pooler(backbone)
        return cls(backbone, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    @property
    def embeddings(self) -> nn.Module:
        """The backbone's embedding block (token, position and type embeddings)."""
        embeddings = getattr(self.backbone, "embeddings", None)
        return embeddings if embeddings is not None else self.backbone.get_input_embeddings()

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers, bottom to top."""
        return find_layer_list(self.backbone, self.num_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.backbone(**inputs, output_hidden_states=output_hidden_states)
        token_states = outputs.last_hidden_state
        pooled = pool(token_states, attention_mask, self.pooling)
        return EncoderOutput(token_states, pooled, outputs.hidden_states)

    def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            sentences,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    @torch.inference_mode()
    def encode(
        self,
        sentences: list[str],
        batch_size: int = 64,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        convert_to: Literal["numpy", "torch"] = "numpy",
        precision: Literal["auto", "fp32", "bf16"] = "auto",
    ) -> np.ndarray | torch.Tensor:
        """Embed `sentences` into an `(n, hidden)` array, in input order.

        Sentences are sorted by length so that batches carry little padding; the order is
        restored before returning. `precision="bf16"` runs the backbone under bfloat16 autocast
        (faster where the CPU or GPU has bf16 units); `"auto"` (the default) picks bf16 where the
        device runs it natively and fp32 elsewhere (`mtexp.precision`). Embeddings are returned
        in float32; bf16 ones stay within cosine 0.9999 of fp32's (README, Task 1).
        """
        device = next(self.parameters()).device
        precision = resolve_precision(precision, device)
        if isinstance(sentences, str):
            raise TypeError("encode() takes a list of sentences, not a single string")
        normalize = self.normalize if normalize is None else normalize
        show_progress = len(sentences) >= PROGRESS_THRESHOLD if show_progress is None else show_progress
        was_training = self.training
        self.eval()
        order = np.argsort([-len(sentence) for sentence in sentences], kind="stable")
        chunks = []
        starts = range(0, len(sentences), batch_size)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        for start in tqdm(starts, desc="encode", disable=not show_progress, unit="batch"):
            batch = [sentences[i] for i in order[start : start + batch_size]]
            inputs = {key: value.to(device) for key, value in self.tokenize(batch).items()}
            with autocast:
                chunks.append(self(**inputs).pooled.float())
        self.train(was_training)
        embeddings = _restore_order(chunks, order, self.hidden_size)
        if normalize:
            embeddings = nn.functional.normalize(embeddings, p=2, dim=1)
        return embeddings.cpu().numpy() if convert_to == "numpy" else embeddings


def _restore_order(chunks: list[torch.Tensor], order: np.ndarray, hidden_size: int) -> torch.Tensor:
    if not chunks:
        return torch.empty(0, hidden_size)
    stacked = torch.cat(chunks)
    restored = torch.empty_like(stacked)
    restored[torch.as_tensor(order, device=stacked.device)] = stacked
    return restored


def _drop_unused_pooler(backbone: nn.Module) -> None:
    """Remove BERT's [CLS] pooler: our pooling replaces it, and untrained weights skew counts."""
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None


def find_layer_list(backbone: nn.Module, num_layers: int) -> nn.ModuleList:
    """The first `nn.ModuleList` holding exactly `num_layers` blocks: the transformer layers."""
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(f"could not find the {num_layers} transformer layers of {type(backbone).__name__}")
