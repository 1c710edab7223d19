"""Known sound-alike / look-alike drug-name pairs (FDA and ISMP lists; see lexicons/README.md)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from .lexicon import normalize_name

SOUND_ALIKE_PAIRS = Path(__file__).parent / "lexicons" / "sound_alike_pairs.tsv"


def load_sound_alike_pairs(path: str | Path = SOUND_ALIKE_PAIRS) -> list[tuple[str, str, str]]:
    """(name, confused_with, source) rows, names normalised as lexicon labels."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(normalize_name(row["name"]), normalize_name(row["confused_with"]), row["source"]) for row in csv.DictReader(handle, delimiter="\t")]


def partners_in_lexicon(labels: set[str] | list[str], pairs: list[tuple[str, str, str]] | None = None) -> dict[str, set[str]]:
    """For each lexicon name with a known sound-alike partner that is also in the lexicon: its partners."""
    labels = set(labels)
    partners: dict[str, set[str]] = defaultdict(set)
    for name, other, _ in pairs if pairs is not None else load_sound_alike_pairs():
        if name in labels and other in labels:
            partners[name].add(other)
            partners[other].add(name)
    return dict(partners)
