"""Shared fixtures: a tiny random backbone (no download) and the shared real data, when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from mtexp.encoder import SentenceEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTEXP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Feature caches of the tests go to a fresh folder, not the checkout's .cache.
os.environ.setdefault("MTEXP_CACHE", tempfile.mkdtemp(prefix="mtexp-test-cache-"))
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (or $MTEXP_SHARED_DATA); skips the test when absent."""
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set MTEXP_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder() -> SentenceEncoder:
    """A randomly initialised 2-layer BERT with the default's vocabulary. Do not train it in place."""
    return SentenceEncoder.random_init(seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_encoder: SentenceEncoder):
    return tiny_encoder.tokenizer
