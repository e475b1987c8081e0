"""The frozen-feature store: a frozen encoder's outputs (`FeatureCache`) kept on disk and shared
by every run that would compute the same ones: the seeds of a sweep, tuning trials, launchers
running in parallel.

An entry's key hashes what its contents depend on: the encoder's weights (its state dict, so a
checkpoint, a bundled model and a seeded random backbone are all covered) and architecture, the
tokenised features' key (tokenizer, data, max length), the precision, the pooling, the batch size
the encoder ran at, the device type, the thread count and the torch and transformers versions,
so that a run reading an entry gets what it would have computed itself, bit for bit. Entries
are written and checked like the tokenised-feature cache's (`mtexp.data.cache`): a temporary
folder renamed into place, a manifest of sizes and checksums checked on every read, a damaged
entry rebuilt; a lock per entry makes processes that want the same entry at once build it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

from mtexp.data.cache import DamagedEntry, cache_key, commit_entry, discard_entry, entry_lock, load_entry
from mtexp.data.textio import resolve_path
from mtexp.feature_cache import FeatureCache

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS_FILE = "features.safetensors"
UNHASHED_CONFIG_KEYS = ("_name_or_path", "transformers_version")  # where it came from, not what it is
STATUSES = ("hit", "miss", "rebuilt")  # what `cached_features` did; "memory": built, not stored


def store_root(cache_root: str | None) -> Path | None:
    """Where frozen features are stored: `<cache_root>/frozen` (`paths.cache_root`, resolved
    against the launch directory); None without a cache root."""
    if not cache_root:
        return None
    return resolve_path(cache_root, "paths.cache_root", must_exist=False) / "frozen"


def encoder_hash(encoder: nn.Module) -> str:
    """sha256 of every tensor of `encoder.state_dict()` (name, dtype, shape, bytes), in name
    order, and of the backbone's class and config when it has one."""
    digest = hashlib.sha256()
    backbone = getattr(encoder, "backbone", encoder)
    config = getattr(backbone, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k not in UNHASHED_CONFIG_KEYS}
        digest.update(json.dumps([type(backbone).__name__, settings], sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\n{name}:{data.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(data.view(torch.uint8).numpy() if data.numel() else b"")
    return digest.hexdigest()


def store_key(encoder: nn.Module, features: Any, precision: str, batch_size: int,
              device: torch.device) -> tuple[str, dict[str, Any]]:
    """The entry name for `encoder`'s outputs on `features` and the metadata stored beside it.

    `features` is a `mtexp.data.features.Features`; its tokenised-cache key names the data.
    """
    data_key = features.cache_path.name if features.cache_path is not None else cache_key(
        features.data, encoder.tokenizer, features.max_length, features.label_all_tokens)[0]
    meta = {
        "version": FORMAT_VERSION,
        "encoder_hash": encoder_hash(encoder),
        "features": data_key,
        "max_length": int(features.max_length),
        "precision": precision,
        "pooling": str(getattr(encoder, "pooling", "")),
        "batch_size": int(batch_size),
        "device": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    return f"{data_key.rsplit('-', 1)[0]}-{key}", meta


def save_cache(cache: FeatureCache, folder: Path) -> dict[str, Any]:
    """Write `cache`'s tensors and keys into `folder`; returns the keys' groups for meta.json."""
    keys = cache.keys()
    groups = list(dict.fromkeys(group for group, _ in keys))
    number = {group: n for n, group in enumerate(groups)}
    tensors = {
        "tokens": cache.tokens, "pooled": cache.pooled, "lengths": cache.lengths,
        "key_group": torch.tensor([number[group] for group, _ in keys], dtype=torch.long),
        "key_index": torch.tensor([index for _, index in keys], dtype=torch.long),
    }
    on_cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    save_file(on_cpu, str(folder / TENSORS_FILE))
    return {"groups": [list(group) for group in groups]}


def load_cache(folder: Path, meta: dict[str, Any], device: torch.device | str) -> FeatureCache:
    """The `FeatureCache` that `save_cache` wrote into `folder`, its tensors on `device`."""
    tensors = load_file(str(folder / TENSORS_FILE), device=str(device))
    groups = [(str(corpus), None if split is None else str(split)) for corpus, split in meta["groups"]]
    keys = [(groups[g], index) for g, index in
            zip(tensors["key_group"].tolist(), tensors["key_index"].tolist(), strict=True)]
    return FeatureCache(tensors["tokens"], tensors["lengths"], tensors["pooled"], keys)


def cached_features(root: Path, key: str, meta: dict[str, Any], build: Callable[[], FeatureCache],
                    device: torch.device | str) -> tuple[FeatureCache, str]:
    """The entry `<root>/<key>` when it is there and whole ("hit"); else `build()`, stored under
    the entry's lock ("miss", or "rebuilt" when a damaged entry was found and removed).

    A process that finds another building the same entry waits for it and reads its entry.
    When the entry cannot be written (a full disk), the built cache is returned ("memory").
    """
    entry = root / key
    cache, status = _read(entry, device)
    if cache is not None:
        return cache, status
    with entry_lock(root, key):
        cache, again = _read(entry, device)  # another process may have written it meanwhile
        if cache is not None:
            return cache, again
        built = build()
        try:
            commit_entry(root, key, lambda folder: {**meta, **save_cache(built, folder)})
        except OSError as error:  # a full disk, a read-only root: the run goes on without the store
            log.warning("could not store the frozen features as %s (%s); kept in memory only", entry, error)
            return built, "memory"
    return built, "rebuilt" if "rebuilt" in (status, again) else "miss"


def _read(entry: Path, device: torch.device | str) -> tuple[FeatureCache | None, str]:
    """(the entry's cache, "hit"), (None, "miss"), or (None, "rebuilt") when a damaged entry
    was named in a warning and removed."""
    try:
        cache = load_entry(entry, lambda folder, meta: load_cache(folder, meta, device))
    except DamagedEntry as damage:
        log.warning("frozen-feature cache entry %s is damaged: %s; rebuilding it", entry, damage)
        discard_entry(entry, damage.build_id)
        return None, "rebuilt"
    return cache, "miss" if cache is None else "hit"
