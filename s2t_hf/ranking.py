"""Ranking lexicon names for a clip, by CTC likelihood and (as a baseline) by string similarity.

The CTC score of a name is the log-likelihood of its letter sequence under the model's
frame-wise output, summed over all alignments (`ctc_loss`, reduction none), divided by the
label's length so that long names are not punished for being long. This uses everything the
model heard, not just its single best transcript, and is the ranking users get from
`S2T.recognize` and the one every reported metric measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz import fuzz, process

from .lexicon import DrugName


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


class CTCRanker:
    """Scores every lexicon name against a CTC model's log-probabilities."""

    def __init__(self, lexicon: list[DrugName], label_ids: list[list[int]], blank_id: int, max_batch_elements: int = 4_000_000):
        if len(lexicon) != len(label_ids):
            raise ValueError("lexicon and label_ids must have the same length")
        if any(len(ids) == 0 for ids in label_ids):
            raise ValueError("every lexicon name needs at least one token")
        self.lexicon = lexicon
        self.blank_id = blank_id
        self.targets, self.target_lengths = pad_ids(label_ids, fill=0)
        # bounds the (frames x clips*names x vocab) tensor ctc_loss works on
        self.max_batch_elements = max_batch_elements

    def __len__(self) -> int:
        return len(self.lexicon)

    @torch.no_grad()
    def scores(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Length-normalised log-likelihood of every name: (batch, frames, vocab) -> (batch, names).

        Names that cannot be aligned (more letters than frames) score -inf.
        """
        log_probs = log_probs.float()
        batch, frames, vocab = log_probs.shape
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long)
        names = len(self.lexicon)
        result = torch.empty(batch, names)
        names_per_chunk = max(1, self.max_batch_elements // max(1, frames * vocab))
        for clip in range(batch):
            length = int(lengths[clip])
            clip_log_probs = log_probs[clip, :length]
            for start in range(0, names, names_per_chunk):
                stop = min(names, start + names_per_chunk)
                count = stop - start
                nll = F.ctc_loss(
                    clip_log_probs.unsqueeze(1).expand(length, count, vocab),
                    self.targets[start:stop],
                    input_lengths=torch.full((count,), length, dtype=torch.long),
                    target_lengths=self.target_lengths[start:stop],
                    blank=self.blank_id,
                    reduction="none",
                    zero_infinity=False,
                )
                result[clip, start:stop] = -nll / self.target_lengths[start:stop]
        return result.masked_fill(result.isnan(), -float("inf"))

    def rank(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None, top_k: int = 5) -> Ranking:
        scores = self.scores(log_probs, lengths)
        top = scores.topk(min(top_k, len(self.lexicon)), dim=-1)
        return Ranking(indices=top.indices, scores=top.values)


def fuzzy_rank(transcripts: list[str], lexicon: list[DrugName], top_k: int = 5) -> np.ndarray:
    """Baseline: lexicon indices ranked by string similarity to a greedy transcript (rapidfuzz)."""
    labels = [entry.label for entry in lexicon]
    top_k = min(top_k, len(labels))
    ranked = np.zeros((len(transcripts), top_k), dtype=np.int64)
    for row, transcript in enumerate(transcripts):
        matches = process.extract(transcript, labels, scorer=fuzz.ratio, limit=top_k)
        ranked[row] = [index for _, _, index in matches]
    return ranked


def output_lengths(model: torch.nn.Module, input_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Valid output frames per clip, from its length in samples."""
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        return torch.full((len(input_lengths),), frames, dtype=torch.long)
    lengths = model._get_feat_extract_output_lengths(input_lengths.cpu()).long()
    return lengths.clamp(max=frames)


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Best token per frame, with frames past each clip's length set to -100 (padding)."""
    greedy = log_probs.argmax(-1)
    greedy[torch.arange(log_probs.shape[1])[None, :] >= lengths[:, None]] = -100
    return greedy
