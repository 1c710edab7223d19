"""`S2T`: one call from audio to a transcript and a ranked list of drug names.

    from s2t_hf import S2T
    recogniser = S2T.from_pretrained("outputs/quickstart")
    result = recogniser.recognize("metformin.wav", top_k=5)
    result.transcript, result.candidates[0].name, result.candidates[0].score

The ranking is `s2t_hf.ranking.CTCRanker`, the same code `CTCTrainer` uses for every reported
metric: what the report measures is what users get.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCTC, AutoProcessor

from .audio import SAMPLING_RATE, AudioInput, load_audio
from .lexicon import DEFAULT_LEXICON, DrugName, load_lexicon
from .ranking import CTCRanker, output_lengths
from .vocabulary import encode_labels

logger = logging.getLogger(__name__)

LEXICON_FILE = "lexicon.txt"


@dataclass
class Candidate:
    name: str
    score: float  # length-normalised CTC log-likelihood: higher is better, 0 is certain


@dataclass
class Recognition:
    transcript: str
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"transcript": self.transcript, "candidates": [{"name": c.name, "score": c.score} for c in self.candidates]}


def save_lexicon(lexicon: list[DrugName], folder: str | Path) -> Path:
    """Store the names a model was trained on beside it, so `S2T` ranks the same list."""
    path = Path(folder) / LEXICON_FILE
    path.write_text("".join(entry.name + "\n" for entry in lexicon), encoding="utf-8")
    return path


class S2T:
    """A trained recogniser plus the lexicon it ranks."""

    def __init__(self, model, processor, lexicon: list[DrugName], batch_size: int = 16):
        self.model = model.eval()
        self.processor = processor
        self.lexicon = lexicon
        self.batch_size = batch_size
        tokenizer = processor.tokenizer
        self.ranker = CTCRanker(lexicon, encode_labels(tokenizer, lexicon), tokenizer.pad_token_id)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | Path, lexicon: str | Path | list[DrugName] | None = None, device: str | None = None, **kwargs
    ) -> "S2T":
        """Load a model folder written by `run_ctc.py`, or any CTC checkpoint on the Hub.

        `lexicon` defaults to the list saved with the model (`lexicon.txt`), else the built-in
        common generic names.
        """
        model = AutoModelForCTC.from_pretrained(path_or_hub_id, **kwargs)
        processor = AutoProcessor.from_pretrained(path_or_hub_id, **kwargs)
        if device:
            model = model.to(device)
        if lexicon is None:
            saved = Path(path_or_hub_id) / LEXICON_FILE
            lexicon = saved if saved.is_file() else DEFAULT_LEXICON
        if not isinstance(lexicon, list):
            lexicon = load_lexicon(lexicon)
        return cls(model, processor, lexicon)

    def process(self, audio: AudioInput, sampling_rate: int | None = None) -> np.ndarray:
        """Read any audio (path, bytes, array with its rate; any rate, mono or stereo) as 16 kHz mono."""
        return load_audio(audio, sampling_rate)

    @torch.no_grad()
    def _log_probs(self, clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.processor.feature_extractor(clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
        logits = self.model(**inputs).logits
        lengths = output_lengths(self.model, torch.tensor([len(clip) for clip in clips]), logits.shape[1])
        return logits.float().log_softmax(-1).cpu(), lengths

    def _transcripts(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        tokenizer = self.processor.tokenizer
        greedy = log_probs.argmax(-1)
        return [tokenizer.decode(greedy[row, : int(lengths[row])]).lower() for row in range(len(greedy))]

    def transcribe(self, audio: AudioInput | list[AudioInput]) -> str | list[str]:
        """The model's free (greedy CTC) transcript; a list for a list of inputs."""
        single = not isinstance(audio, list)
        results = self.recognize([audio] if single else audio, top_k=0)
        transcripts = [result.transcript for result in results]
        return transcripts[0] if single else transcripts

    def recognize(self, audio: AudioInput | list[AudioInput], top_k: int = 5) -> Recognition | list[Recognition]:
        """Transcript and the `top_k` lexicon names by CTC likelihood; a list for a list of inputs."""
        single = not isinstance(audio, list)
        inputs = [audio] if single else audio
        results: list[Recognition] = []
        for start in range(0, len(inputs), self.batch_size):
            clips = [self.process(item) for item in inputs[start : start + self.batch_size]]
            log_probs, lengths = self._log_probs(clips)
            transcripts = self._transcripts(log_probs, lengths)
            if top_k > 0:
                ranking = self.ranker.rank(log_probs, lengths, top_k=top_k)
                for row, transcript in enumerate(transcripts):
                    candidates = [
                        Candidate(self.lexicon[int(index)].name, round(float(score), 4))
                        for index, score in zip(ranking.indices[row], ranking.scores[row])
                    ]
                    results.append(Recognition(transcript, candidates))
            else:
                results.extend(Recognition(transcript) for transcript in transcripts)
        return results[0] if single else results
