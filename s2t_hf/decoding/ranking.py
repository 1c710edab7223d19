"""What every ranker returns: the top-k lexicon indices and scores per clip."""

from __future__ import annotations

from dataclasses import dataclass

import torch

RANKED_FOR_METRICS = 10  # candidates kept per clip at evaluation (top-k curves go to k=10)


@dataclass
class Ranking:
    """Top-k lexicon indices per clip, best first, with their scores (higher is better)."""

    indices: torch.Tensor  # (batch, k) long
    scores: torch.Tensor  # (batch, k) float


def pad_ids(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as one (rows, longest) tensor padded with `fill`, and their lengths."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    padded = torch.full((len(rows), int(lengths.max())), fill, dtype=torch.long)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = torch.tensor(row)
    return padded, lengths


def top_candidates(scores: torch.Tensor, top_k: int) -> Ranking:
    top = scores.topk(min(top_k, scores.shape[-1]), dim=-1)
    return Ranking(indices=top.indices, scores=top.values)
