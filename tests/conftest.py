"""Shared fixtures: a tiny random backbone (no download) and the shared real data, when present."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from types import ModuleType

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


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: object, reason: str) -> None:
    """Skip the calling test when `condition` is false; under CI=true fail instead, so that CI
    never passes by skipping what it was set up to run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """`pytest.importorskip`, except that a missing module fails under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        require(False, f"{name} is not installed ({error})")
        raise


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (or $MTEXP_SHARED_DATA); skips the test when absent
    (fails under CI=true)."""
    require((SHARED_DATA / "snips").is_dir(),
            f"real data not found at {SHARED_DATA} (set MTEXP_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder() -> SentenceEncoder:
    """A randomly initialised 2-layer BERT with the default's vocabulary. Do not train it in place."""
    return SentenceEncoder.random_init(seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_encoder: SentenceEncoder):
    return tiny_encoder.tokenizer
