"""Ranking lexicon names with an encoder-decoder (Speech2Text) model.

An encoder-decoder has no frame-wise output to align names with, so each lexicon name is
scored by its teacher-forced sequence log-likelihood given the audio, divided by its token
count: the encoder runs once per clip, the decoder once per (clip, chunk of names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..text.lexicon import DrugName
from ..text.vocabulary import model_text
from .ranking import pad_ids


class Seq2SeqRanker:
    """Scores every lexicon name with an encoder-decoder model."""

    def __init__(self, lexicon: list[DrugName], tokenizer, max_batch_names: int = 2048):
        self.lexicon = lexicon
        self.tokenizer = tokenizer
        texts = [model_text(entry.label, tokenizer) for entry in lexicon]
        self.labels, self.lengths = pad_ids(tokenizer(texts).input_ids, fill=-100)  # rows end with </s>
        self.max_batch_names = max_batch_names

    def __len__(self) -> int:
        return len(self.lexicon)

    @staticmethod
    def _sequence_scores(model, hidden: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-likelihood per token of each label row given its encoder output row."""
        from transformers.models.speech_to_text.modeling_speech_to_text import shift_tokens_right

        config = model.config
        labels = labels.to(hidden.device)
        decoder_inputs = shift_tokens_right(labels.clamp(min=0), config.pad_token_id, config.decoder_start_token_id)
        states = model.get_decoder()(input_ids=decoder_inputs, encoder_hidden_states=hidden, encoder_attention_mask=mask).last_hidden_state
        logits = model.lm_head(states) if hasattr(model, "lm_head") else model.get_output_embeddings()(states)
        token_log_probs = F.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(labels < 0, 0.0)
        return (token_log_probs.sum(-1) / lengths.to(token_log_probs.device)).cpu()

    @torch.no_grad()
    def scores(self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None) -> torch.Tensor:
        """Length-normalised log-likelihood of every name: (batch, names)."""
        result = torch.empty(encoder_hidden.shape[0], len(self.lexicon))
        for clip in range(encoder_hidden.shape[0]):
            for start in range(0, len(self.lexicon), self.max_batch_names):
                stop = min(len(self.lexicon), start + self.max_batch_names)
                count = stop - start
                hidden = encoder_hidden[clip : clip + 1].expand(count, -1, -1)
                mask = encoder_mask[clip : clip + 1].expand(count, -1) if encoder_mask is not None else None
                result[clip, start:stop] = self._sequence_scores(model, hidden, mask, self.labels[start:stop], self.lengths[start:stop])
        return result

    @torch.no_grad()
    def transcript_scores(self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None, transcripts: list[str]) -> torch.Tensor:
        """Log-likelihood per token of each clip's own free transcript: the measure `scores` uses."""
        labels, lengths = pad_ids(self.tokenizer(transcripts).input_ids, fill=-100)
        return self._sequence_scores(model, encoder_hidden, encoder_mask, labels, lengths)


def encoder_attention_mask(model, outputs_length: int, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The encoder output's mask, from the input feature mask (Speech2Text subsamples 4x)."""
    if attention_mask is None:
        return None
    lengths = model.model.encoder._get_feat_extract_output_lengths(attention_mask.sum(-1))
    return (torch.arange(outputs_length, device=attention_mask.device) < lengths.unsqueeze(1)).long()


def greedy_generate(model, inputs: dict, max_new_tokens: int | None = None) -> torch.Tensor:
    """Greedy transcripts, capped by the model's generation config unless `max_new_tokens` is given."""
    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    return model.generate(**{key: value for key, value in inputs.items() if value is not None}, num_beams=1, **limit)


@torch.no_grad()
def transcribe_and_score(
    model, ranker, features: torch.Tensor, mask: torch.Tensor | None, max_new_tokens: int | None = None, top_k: int | None = None,
    encoder_outputs=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From one encoder pass (or `encoder_outputs` already computed for `features`): greedy
    transcript ids, every name's score (batch, names) and the score of each clip's own transcript
    (batch,). Whisper decodes its transcript with the ranker's own decoder pass
    (`WhisperRanker.transcribe_and_score`: the same ids as `generate`, scored on the way).
    `top_k`: the names a pruned ranker (Whisper's) must score exactly; the others may
    be left at -inf."""
    if encoder_outputs is None:
        encoder_outputs = model.get_encoder()(input_features=features, attention_mask=mask)
    hidden = encoder_outputs.last_hidden_state
    if not isinstance(ranker, Seq2SeqRanker):  # Whisper: a fixed window, attended to whole (the model ignores masks)
        return ranker.transcribe_and_score(model, hidden, top_k, max_new_tokens)
    generated = greedy_generate(model, {"encoder_outputs": encoder_outputs, "attention_mask": mask}, max_new_tokens)
    hidden_mask = encoder_attention_mask(model, hidden.shape[1], mask)
    texts = [text.strip().lower() for text in ranker.tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return generated, ranker.scores(model, hidden, hidden_mask), ranker.transcript_scores(model, hidden, hidden_mask, texts)


# Whisper ranks the names within 8 nats of the best (a probability ratio of 3e-4). With the
# quickstart model, every top-5 hit of exact ranking was within it: 600 unseen-voice test clips
# (the farthest 3.6 nats below the best), 572 real-voice clips (7.7) and 400 test clips with white
# noise at 10 dB (6.1), measured by benchmarks/whisper_ranking_gaps.py. Proving the
# order of names farther down is most of the search: 8 instead of 12 nats expands half the nodes.
WHISPER_MAX_GAP = 8.0
LEXICON_SPELLING = "lexicon_spelling"  # config field: how a fine-tuned Whisper writes names ('label'); absent: zero-shot spellings


def encoder_decoder_ranker(model, lexicon: list[DrugName], tokenizer):
    """The ranker for an encoder-decoder: Whisper's pruned search over the names' token tree
    (`whisper.WhisperRanker`), or teacher forcing of every name (Speech2Text)."""
    if getattr(model.config, "model_type", None) == "whisper":
        from .whisper import WhisperRanker

        spellings = getattr(model.config, LEXICON_SPELLING, None) or "zero_shot"
        return WhisperRanker(lexicon, tokenizer, prompt_ids=list(tokenizer.prefix_tokens), spellings=spellings, max_gap=WHISPER_MAX_GAP)
    return Seq2SeqRanker(lexicon, tokenizer)
