"""`S2T`: one call from audio to a transcript and a ranked list of drug names.

    from s2t_hf import S2T
    recogniser = S2T.from_pretrained("outputs/quickstart")
    result = recogniser.recognize("metformin.wav", top_k=5)
    result.transcript, result.candidates[0].name, result.candidates[0].score

The ranking is `s2t_hf.ranking.CTCRanker` (or `s2t_hf.seq2seq.Seq2SeqRanker` for Speech2Text),
the same code the trainers use for every reported metric: what the report measures is what
users get.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCTC, AutoModelForSpeechSeq2Seq, AutoProcessor

from .audio import SAMPLING_RATE, AudioInput, load_audio
from .lexicon import DEFAULT_LEXICON, DrugName, load_lexicon
from .metrics import decode_ids
from .ranking import CTCRanker, Ranking, greedy_ids, output_lengths
from .seq2seq import Seq2SeqRanker, transcribe_and_rank
from .vocabulary import encode_labels

logger = logging.getLogger(__name__)

LEXICON_FILE = "lexicon.txt"


@dataclass
class Candidate:
    name: str
    score: float  # log-likelihood per letter (CTC) or per token (seq2seq): higher is better, 0 is certain


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
    """A trained recogniser (CTC or encoder-decoder) plus the lexicon it ranks."""

    def __init__(self, model, processor, lexicon: list[DrugName], batch_size: int = 16, max_new_tokens: int | None = None):
        self.model = model.eval()
        self.processor = processor
        self.lexicon = lexicon
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        tokenizer = processor.tokenizer
        if self.is_seq2seq:
            self.ranker = Seq2SeqRanker(lexicon, tokenizer)
        else:
            self.ranker = CTCRanker(lexicon, encode_labels(tokenizer, lexicon), tokenizer.pad_token_id)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | Path, lexicon: str | Path | list[DrugName] | None = None, device: str | None = None, **kwargs
    ) -> "S2T":
        """Load a model folder written by `run_ctc.py` / `run_seq2seq.py`, or a checkpoint on the Hub
        (wav2vec 2.0, HuBERT, XLSR, Speech2Text, or the from-scratch mel-conformer).

        `lexicon` defaults to the list saved with the model (`lexicon.txt`), else the built-in
        common generic names.
        """
        config = AutoConfig.from_pretrained(path_or_hub_id, **kwargs)
        model_class = AutoModelForSpeechSeq2Seq if getattr(config, "is_encoder_decoder", False) else AutoModelForCTC
        model = model_class.from_pretrained(path_or_hub_id, **kwargs)
        processor = AutoProcessor.from_pretrained(path_or_hub_id, **kwargs)
        if device:
            model = model.to(device)
        if lexicon is None:
            saved = Path(path_or_hub_id) / LEXICON_FILE
            lexicon = saved if saved.is_file() else DEFAULT_LEXICON
        if not isinstance(lexicon, list):
            lexicon = load_lexicon(lexicon)
        return cls(model, processor, lexicon)

    def process(self, audio: AudioInput, sampling_rate: int | None = None) -> dict[str, torch.Tensor]:
        """The model's normalised input for one clip: any audio (path, bytes, an array with its
        `sampling_rate`; any rate, mono or stereo) read as 16 kHz mono and passed through the
        model's feature extractor."""
        clip = load_audio(audio, sampling_rate)
        return dict(self.processor.feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt"))

    @torch.no_grad()
    def _run_batch(self, clips: list[np.ndarray], top_k: int) -> tuple[list[str], Ranking | None]:
        """Greedy transcripts and (when top_k > 0) the lexicon ranking for a batch of clips."""
        inputs = self.processor.feature_extractor(clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
        tokenizer = self.processor.tokenizer
        if self.is_seq2seq:
            generated, ranking = transcribe_and_rank(
                self.model, self.ranker, inputs["input_features"], inputs.get("attention_mask"), top_k, self.max_new_tokens
            )
            return decode_ids(tokenizer, generated.cpu().numpy(), ctc_output=True), ranking
        log_probs = self.model(**inputs).logits.float().log_softmax(-1).cpu()
        lengths = output_lengths(self.model, torch.tensor([len(clip) for clip in clips]), log_probs.shape[1])
        transcripts = decode_ids(tokenizer, greedy_ids(log_probs, lengths).numpy(), ctc_output=True)
        return transcripts, self.ranker.rank(log_probs, lengths, top_k) if top_k > 0 else None

    def transcribe(self, audio: AudioInput | list[AudioInput]) -> str | list[str]:
        """The model's free transcript (greedy); a list for a list of inputs."""
        single = not isinstance(audio, list)
        results = self.recognize([audio] if single else audio, top_k=0)
        transcripts = [result.transcript for result in results]
        return transcripts[0] if single else transcripts

    def recognize(self, audio: AudioInput | list[AudioInput], top_k: int = 5) -> Recognition | list[Recognition]:
        """Transcript and the `top_k` lexicon names by model likelihood; a list for a list of inputs."""
        single = not isinstance(audio, list)
        inputs = [audio] if single else audio
        results: list[Recognition] = []
        for start in range(0, len(inputs), self.batch_size):
            clips = [load_audio(item) for item in inputs[start : start + self.batch_size]]
            transcripts, ranking = self._run_batch(clips, top_k)
            for row, transcript in enumerate(transcripts):
                candidates = []
                if ranking is not None:
                    candidates = [
                        Candidate(self.lexicon[int(index)].name, round(float(score), 4))
                        for index, score in zip(ranking.indices[row], ranking.scores[row])
                    ]
                results.append(Recognition(transcript, candidates))
        return results[0] if single else results
