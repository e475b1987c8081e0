"""BIO tags: validation, IOB1 -> IOB2 conversion and repair of `I-` tags that start a span."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtexp.data.types import DataError

OUTSIDE = "O"
SCHEMES = ("iob1", "iob2")


def tag_type(tag: str) -> str | None:
    """The entity type of a tag (`B-loc` -> `loc`), None for `O`."""
    return None if tag == OUTSIDE else tag[2:]


def check_tag(tag: str, where: str) -> None:
    if tag != OUTSIDE and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
        raise DataError(f"{where}: tag {tag!r} is not BIO; expected 'O', 'B-<type>' or 'I-<type>'")


def to_iob2(tags: list[str]) -> tuple[list[str], list[int]]:
    """Turn every `I-x` that does not continue an `x` span into `B-x`; returns (tags, positions)."""
    out = list(tags)
    fixed: list[int] = []
    previous: str | None = None
    for i, tag in enumerate(tags):
        kind = tag_type(tag)
        if tag.startswith("I-") and previous != kind:
            out[i] = "B-" + kind
            fixed.append(i)
        previous = kind
    return out, fixed


@dataclass
class BioPolicy:
    """How a source's tags are read: `scheme` iob1 (converted silently) or iob2 (repaired/strict)."""

    scheme: str = "iob2"
    strict: bool = False
    repaired: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DataError(f"tag scheme must be 'iob1' or 'iob2', got {self.scheme!r}")

    def normalise(
        self, tags: list[str], where: str, split: str, word_where: Sequence[str] | None = None
    ) -> list[str]:
        """Validate `tags` and return them as IOB2; `where` (file:line) goes into errors, or,
        where each tag has its own line (CoNLL), `word_where[i]` for the tag at word i."""
        locate = (lambda i: word_where[i]) if word_where is not None else (lambda i: where)
        for i, tag in enumerate(tags):
            check_tag(tag, locate(i))
        out, fixed = to_iob2(tags)
        if not fixed:
            return out
        if self.scheme == "iob1":
            self.converted[split] += len(fixed)
        elif self.strict:
            pos = fixed[0]
            raise DataError(
                f"{locate(pos)}: malformed BIO: {tags[pos]!r} at word {pos + 1} of its sentence does not "
                "continue a span (I- without B-); set strict_bio: false to repair it to IOB2"
            )
        else:
            self.repaired[split] += len(fixed)
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        return {"bio_repaired": dict(self.repaired), "iob1_converted": dict(self.converted)}
