"""What a recogniser returns: ranked candidates, a clip's recognition, a batch's raw scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Candidate:
    name: str
    score: float  # log-likelihood per letter (CTC), per token (Speech2Text) or of the whole name (Whisper): higher is better, 0 is certain
    probability: float  # over the whole lexicon, at the model's calibrated temperature
    generic: str | None = None  # for a brand name, its generic ("Lipitor" -> "atorvastatin")


@dataclass
class Recognition:
    transcript: str
    candidates: list[Candidate] = field(default_factory=list)
    ambiguous: bool = False  # the best two names are too close to tell apart (margin under the fitted threshold)
    out_of_lexicon: bool = False  # only when asked for: the audio fits no lexicon name as well as its own transcript
    sound_alike_partners: list[str] = field(default_factory=list)  # known confusable partners (FDA/ISMP) of the best name, in the lexicon

    @property
    def decision(self) -> str | None:
        """The name to act on: None when the result is not in the lexicon (or nothing was ranked)."""
        return None if self.out_of_lexicon or not self.candidates else self.candidates[0].name

    def to_dict(self) -> dict:
        return {
            "transcript": self.transcript,
            "decision": self.decision,
            "ambiguous": self.ambiguous,
            "out_of_lexicon": self.out_of_lexicon,
            "sound_alike_partners": self.sound_alike_partners,
            "candidates": [{"name": c.name, "generic": c.generic, "score": c.score, "probability": c.probability} for c in self.candidates],
        }


@dataclass
class BatchScores:
    """What one forward pass gives for a batch of clips: free transcripts, every lexicon name's
    score (clips, names) and each clip's own transcript's score (clips,), on the same scale."""

    transcripts: list[str]
    scores: torch.Tensor
    transcript_scores: torch.Tensor
    # tokens of each transcript (CTC: what its score's length term divides by; None for encoder-decoders)
    transcript_lengths: torch.Tensor | None = None

    def select(self, rows: list[int]) -> "BatchScores":
        """The same scores for some of the clips (a server answers each caller from a shared batch)."""
        lengths = None if self.transcript_lengths is None else self.transcript_lengths[rows]
        return BatchScores([self.transcripts[row] for row in rows], self.scores[rows], self.transcript_scores[rows], lengths)
