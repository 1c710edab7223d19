"""Baseline ranking: lexicon names by string similarity to a greedy transcript (rapidfuzz)."""

from __future__ import annotations

import numpy as np
from rapidfuzz import fuzz, process

from ..text.lexicon import DrugName


def fuzzy_rank(transcripts: list[str], lexicon: list[DrugName], top_k: int = 5) -> np.ndarray:
    """Baseline: lexicon indices ranked by string similarity to a greedy transcript (rapidfuzz)."""
    labels = [entry.label for entry in lexicon]
    top_k = min(top_k, len(labels))
    ranked = np.zeros((len(transcripts), top_k), dtype=np.int64)
    for row, transcript in enumerate(transcripts):
        matches = process.extract(transcript, labels, scorer=fuzz.ratio, limit=top_k)
        ranked[row] = [index for _, _, index in matches]
    return ranked
