"""`S2T.spot`: every lexicon name said anywhere in a recording, with its times.

A recording is cut into overlapping windows (minutes of dictation are fine; a model with a
window of its own, Whisper's and Whisper-CTC's, sets their length). In each, a CTC model's
output is searched for every name's best span (`decoding.spotting.CTCSpotter`, a name against
filler), and a span that scores at least the threshold per letter is then rescored exactly,
with every other name, on its own frames, as `S2T.recognize` ranks a clip. A Whisper model
writes its transcript, and every lexicon name is scored in place at each stretch of it that
resembles a name (`decoding.whisper_spotting.WhisperSpotter`: the whole sentence with the name
in it, exactly); a stretch whose best name scores at least the threshold per token against the
model's own words there is a detection. Either way the calibrated probability, the runner-up
names, the ambiguous flag, the sound-alike partners and the not-in-lexicon answer (the span's
own free reading fits much better than any name, by the calibration's gap: something drug-like
the lexicon lacks) are those of that ranking, and its best name is the one reported. Windows'
detections are merged so a name heard by two overlapping windows counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..audio.reading import SAMPLING_RATE, AudioInput, read_usable_audio
from ..decoding.ctc import ctc_log_probs, greedy_ids, output_lengths, word_break_id
from ..decoding.spotting import CTCSpotter, TimedName, merge_windows
from ..decoding.transcripts import decode_ids
from ..decoding.whisper import WhisperRanker
from ..decoding.whisper_spotting import WhisperSpotter
from ..models.processor import INPUT_LENGTHS, clip_features, pad_features
from ..text.vocabulary import encode_labels
from .results import BatchScores, Candidate

# Per-letter log-likelihood ratio against filler a span needs to count (0: the model's own best
# reading spells the name there). Chosen on the validation voices' sentences for recipes/spotting.json
# (F1 0.90 there; benchmarks/results/spotting_validation.json); another model may want another.
DEFAULT_THRESHOLD = -2.0
SPAN_MARGIN_FRAMES = 2  # frames either side of a span kept when the span is rescored
# Whisper windows decoded side by side: each greedy step reads the vocabulary projection's weights once for all of them
WHISPER_WINDOW_BATCH = 8


@dataclass
class SpottedName:
    name: str
    start: float  # seconds from the start of the recording
    end: float
    spot_score: float  # per-letter log-likelihood ratio of the span against filler (<= 0; 0 is a perfect fit)
    probability: float  # of `name` among the lexicon on the span, calibrated as `recognize`'s
    candidates: list[Candidate] = field(default_factory=list)  # the span's ranking, best first (the name, then runners-up)
    ambiguous: bool = False
    sound_alike_partners: list[str] = field(default_factory=list)
    generic: str | None = None
    # the span fits its own free reading (`heard`) much better than any lexicon name, by the
    # calibration's not-in-lexicon gap: something drug-like was said that the lexicon lacks
    out_of_lexicon: bool = False
    heard: str = ""  # the model's free reading of the span

    def to_dict(self) -> dict:
        return {
            "name": self.name, "generic": self.generic, "start": self.start, "end": self.end, "spot_score": self.spot_score,
            "probability": self.probability, "ambiguous": self.ambiguous, "out_of_lexicon": self.out_of_lexicon, "heard": self.heard,
            "sound_alike_partners": self.sound_alike_partners,
            "candidates": [{"name": c.name, "generic": c.generic, "score": c.score, "probability": c.probability} for c in self.candidates],
        }


@dataclass
class Spotting:
    duration: float
    names: list[SpottedName] = field(default_factory=list)
    transcript: str = ""  # the greedy transcript, window by window

    def to_dict(self) -> dict:
        return {"duration": self.duration, "transcript": self.transcript, "names": [name.to_dict() for name in self.names]}


def spotter_for(recogniser) -> CTCSpotter | WhisperSpotter:
    """The recogniser's (an `S2T`) spotter over its lexicon, built once."""
    if getattr(recogniser, "_spotter", None) is not None:
        return recogniser._spotter
    if recogniser.is_seq2seq:
        if not isinstance(recogniser.ranker, WhisperRanker):
            raise ValueError(
                f"{recogniser.source} is a Speech2Text model: spotting needs Whisper (recipes/whisper-spotting.json trains one on "
                "sentences) or a CTC model (the conformer, wav2vec 2.0, HuBERT, XLSR or Whisper-CTC)"
            )
        heads = getattr(getattr(recogniser.model, "generation_config", None), "alignment_heads", None)
        recogniser._spotter = WhisperSpotter(recogniser.ranker, heads)
        return recogniser._spotter
    tokenizer = recogniser.processor.tokenizer
    recogniser._spotter = CTCSpotter(recogniser.lexicon, encode_labels(tokenizer, recogniser.lexicon), recogniser.ranker.blank_id,
                                     word_break_id(tokenizer))
    return recogniser._spotter


def window_starts(samples: int, window: int, step: int) -> list[int]:
    """Window starts covering `samples`; the last window ends at the recording's end."""
    if samples <= window:
        return [0]
    starts = list(range(0, samples - window, step))
    return [*starts, samples - window]


def pause_windows(clip, window: int, search: int, frame: int = SAMPLING_RATE // 50) -> list[tuple[int, int]]:
    """Consecutive (start, end) sample ranges covering `clip`, each at most `window` long, each
    (but the last) ending at the quietest `frame` (20 ms) of its last `search` samples: at a
    pause between words where there is one."""
    windows, start = [], 0
    while len(clip) - start > window:
        first = start + max(window - search, frame)
        frames = (start + window - first) // frame
        energy = (clip[first : first + frames * frame].reshape(frames, frame) ** 2).sum(1)
        end = first + int(energy.argmin()) * frame + frame // 2
        windows.append((start, end))
        start = end
    windows.append((start, len(clip)))
    return windows


@torch.no_grad()
def spot(
    recogniser, audio: AudioInput, threshold: float = DEFAULT_THRESHOLD, top_k: int = 5,
    window_seconds: float = 20.0, overlap_seconds: float = 4.0, log_prior: torch.Tensor | None = None,
) -> Spotting:
    """`S2T.spot` (see there) for the recogniser `recogniser` (an `S2T` of a CTC or Whisper model)."""
    if overlap_seconds >= window_seconds or window_seconds <= 0:
        raise ValueError(f"overlap_seconds ({overlap_seconds}) must be below window_seconds ({window_seconds}), which must be positive")
    spotter = spotter_for(recogniser)
    fixed = getattr(recogniser.processor.feature_extractor, "n_samples", None)  # Whisper, Whisper-CTC: a window of their own (e.g. 8 s)
    if fixed and window_seconds > fixed / SAMPLING_RATE:
        window_seconds = fixed / SAMPLING_RATE
        overlap_seconds = min(overlap_seconds, window_seconds / 4)
    clip = read_usable_audio(audio)  # no duration limit: recordings of minutes are cut into windows
    window, step = round(window_seconds * SAMPLING_RATE), round((window_seconds - overlap_seconds) * SAMPLING_RATE)
    if isinstance(spotter, WhisperSpotter):
        # Whisper reads a window as a whole utterance: windows end at pauses, without overlap
        # (a window starting inside a word is heard as another word, or as a loop); they are
        # decoded `WHISPER_WINDOW_BATCH` at a time
        pieces = pause_windows(clip, window, round(overlap_seconds * SAMPLING_RATE))
        results = _whisper_windows(recogniser, spotter, [clip[start:stop] for start, stop in pieces], threshold, top_k, log_prior)
    else:
        pieces = [(start, start + window) for start in window_starts(len(clip), window, step)]
        results = (_ctc_window(recogniser, spotter, clip[start:stop], threshold, top_k, log_prior) for start, stop in pieces)
    found: list[list[TimedName]] = []
    details: list[SpottedName] = []
    transcripts = []
    for (start, _), (transcript, spotted) in zip(pieces, results):
        transcripts.append(transcript)
        offset = start / SAMPLING_RATE
        window_found = []
        for name in spotted:
            name.start, name.end = round(offset + name.start, 3), round(offset + name.end, 3)
            window_found.append(TimedName(name.name, name.start, name.end, name.spot_score))
            details.append(name)
        found.append(window_found)
    kept = merge_windows(found)
    return Spotting(round(len(clip) / SAMPLING_RATE, 3), [details[index] for index in kept], " ".join(text for text in transcripts if text))


def _spotted(ranked, start: float, end: float, spot_score: float) -> SpottedName:
    """A detection from the ranking of its span (`S2T.results`' `Recognition`), times from the window's start."""
    best = ranked.candidates[0]
    return SpottedName(best.name, start, end, round(spot_score, 4), best.probability, ranked.candidates, ranked.ambiguous,
                       ranked.sound_alike_partners, best.generic, ranked.out_of_lexicon, ranked.transcript)


def _ctc_window(recogniser, spotter: CTCSpotter, piece, threshold: float, top_k: int, log_prior) -> tuple[str, list[SpottedName]]:
    """One window of a CTC model: its greedy transcript and the names found in it (times from the window's start)."""
    extractor = recogniser.processor.feature_extractor
    inputs = pad_features(extractor, clip_features(extractor, [piece]))
    input_lengths = inputs.pop(INPUT_LENGTHS)
    inputs = {key: value.to(recogniser.model.device) for key, value in inputs.items()}
    log_probs = ctc_log_probs(recogniser.model, inputs, input_lengths)
    frames = int(output_lengths(recogniser.model, input_lengths, log_probs.shape[1])[0])
    log_probs = log_probs[0, :frames]
    seconds_per_frame = len(piece) / SAMPLING_RATE / frames
    greedy = greedy_ids(log_probs[None], torch.tensor([frames]))
    transcript = decode_ids(recogniser.processor.tokenizer, greedy.numpy(), ctc_output=True)[0]
    spotted = []
    for span in spotter.spot(log_probs, threshold):
        first, last = max(0, span.start - SPAN_MARGIN_FRAMES), min(frames, span.end + SPAN_MARGIN_FRAMES)
        ranked = recogniser.results(
            recogniser.scores_from_log_probs(log_probs[None, first:last], torch.tensor([last - first])), top_k,
            allow_out_of_lexicon=True, log_prior=log_prior,
        )[0]
        if ranked.candidates:
            spotted.append(_spotted(ranked, span.start * seconds_per_frame, span.end * seconds_per_frame, span.per_letter))
    return transcript, spotted


def _whisper_windows(recogniser, spotter: WhisperSpotter, pieces: list, threshold: float, top_k: int,
                     log_prior) -> list[tuple[str, list[SpottedName]]]:
    """Windows of a Whisper model, `WHISPER_WINDOW_BATCH` at a time through the encoder and the
    greedy transcript: each one's transcript and the names found in it, each ranked in place
    (`WhisperSpotter`); the span's own words stand in for the free transcript of `S2T.results`'
    not-in-lexicon answer. With a prior, names the in-place search left out (more than its gap
    below the best) stay out. Times from each window's start."""
    extractor, tokenizer = recogniser.processor.feature_extractor, recogniser.processor.tokenizer
    results = []
    for first in range(0, len(pieces), WHISPER_WINDOW_BATCH):
        inputs = pad_features(extractor, clip_features(extractor, pieces[first : first + WHISPER_WINDOW_BATCH]))
        # the frames holding audio: the encoder halves the mel frames
        audio_frames = [-(-int(length) // extractor.hop_length // 2) for length in inputs.pop(INPUT_LENGTHS)]
        hidden = recogniser.model.get_encoder()(input_features=inputs["input_features"].to(recogniser.model.device)).last_hidden_state
        for tokens, spans in spotter.spot_windows(recogniser.model, hidden, audio_frames, top_k, recogniser.max_new_tokens, threshold):
            spotted = []
            for span in spans:
                if span.spot_score < threshold:
                    continue
                scores = BatchScores([span.heard], span.scores[None], torch.tensor([span.heard_score]))
                ranked = recogniser.results(scores, top_k, allow_out_of_lexicon=True, log_prior=log_prior)[0]
                if ranked.candidates:
                    spotted.append(_spotted(ranked, span.start, span.stop, span.spot_score))
            results.append((tokenizer.decode(tokens).strip(), spotted))
    return results
