"""Finding lexicon names inside a sentence with Whisper: candidate spans of its transcript,
every name rescored exactly in place, times from its cross-attention.

CTC models spot with a filler arc around the lexicon graph (`decoding.spotting`). Whisper, an
encoder-decoder, has no output frames to align a name to; for one window of audio instead:

1. The model writes its greedy transcript (a model fine-tuned on sentences,
   recipes/whisper-spotting.json, writes the names it hears in their lexicon spelling); a
   recording's windows are decoded side by side (`spot_windows`).
2. Candidate spans: runs of 1 to `max_words` of its words that resemble some lexicon name
   (rapidfuzz ratio at least `fuzzy_cutoff`; of overlapping runs the most alike): where a name
   may have been said, heard right or misheard. Most carrier words resemble none and cost
   nothing more (`FUZZY_CUTOFF`: measured on the validation voices' sentences).
3. Every lexicon name is scored in place at each candidate span, exactly (the words before the
   span and the span's own words are read from the transcript's greedy steps, not decoded
   again; a span where no name can come within its gap, below, of the span's own words, by a
   bound from those steps, is passed over without a search: `no_name_within_gap`, and a
   searched span's tree holds only the names that bound leaves within their gap): log P(the transcript
   with the span's words replaced by the name | audio), the words before the span given as
   the decoder prompt and the words after it following every name, so a name's score includes
   how well the rest of the sentence follows it. One pruned search over the lexicon's prefix
   tree per span (`WhisperRanker` with `complete_sequences`: name + rest of the sentence), in which
   the span's own words are one more entry, scored alike. `spot_score` is the best name's score
   less the span's own words', per token of the name, at most 0 (0: the model's own reading is
   the name), on the scale of CTC spotting's per-letter ratio. Names are ranked within
   `max_gap` nats of the best entry; given the detection threshold, the best name is also
   found as far below the span's own words as the threshold lets a name of its tokens be (a
   long name misheard may be further down than `max_gap` and still count). A span whose best
   name is further down than both is no detection.
4. Times: OpenAI's word timing from the cross-attention of the alignment heads its generation
   config names (`alignment_heads`): each head's weights normalised over the tokens,
   median-filtered over frames, averaged, and aligned to the frames by dynamic time warping;
   a span starts where its first token's row starts and ends where the next token's does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from rapidfuzz import fuzz, process
from scipy.ndimage import median_filter

from ..text.lexicon import DrugName
from .whisper import (
    MAX_POSITIONS,
    GreedySteps,
    Prompted,
    WhisperRanker,
    _cross_keys_values,
    _parts,
    decoder_states,
    known_log_probabilities,
    stacked_cross_keys_values,
)

FUZZY_CUTOFF = 60.0  # rapidfuzz ratio (0-100) with some lexicon name that makes a run of words a candidate span
MAX_SPAN_WORDS = 3  # words a candidate span joins (names of more words are matched on their first three)
CONTEXT_WORDS = None  # words after a span that its in-place scores include (None: the rest of the transcript)
# nats below the best entry within which names are ranked in place: at a fitted temperature of about 2, a name further
# down has under 2% of the best one's probability; 12 gave the same F1 on a third of the validation voices' sentences and
# words, 1.4x slower (RTF 0.174 vs 0.126; benchmarks/whisper_spotting_knobs.py)
IN_PLACE_GAP = 8.0
# nats by which the greedy transcript's own arithmetic may differ from the search's where a span is passed over
# (`no_name_within_gap`): float32 rounding is ~1e-4; an int8 projection's normaliser against float row products, ~0.1
GREEDY_TOLERANCE = 0.5
MEDIAN_WIDTH = 7  # frames of the median filter over the alignment heads' weights (OpenAI's)
SECONDS_PER_FRAME = 0.02  # Whisper's encoder: 50 frames a second
TOKENS_PER_SECOND = 15  # the most a window's transcript holds: Whisper's 448 decoder positions per 30 s
HEARD = "<heard>"  # the span's own words, ranked beside the names


@dataclass
class InPlaceSpan:
    """A candidate span of one window's transcript: text tokens [first, end), its seconds from
    the window's start (NaN in a window where no span reached the threshold given to `spot`:
    times are read only where a name is reported), every name's in-place score (names,) (-inf:
    not ranked), the span's own words' score on the same scale, and `spot_score` (see the module
    docstring)."""

    first: int
    end: int
    heard: str
    start: float
    stop: float
    scores: torch.Tensor
    heard_score: float
    spot_score: float


def word_bounds(tokenizer, tokens: list[int]) -> list[tuple[int, int]]:
    """[first, end) token indices of each word of a transcript: a word starts at a token whose
    text starts with a space (Whisper's byte-level BPE puts the space before the word)."""
    starts = [index for index, token in enumerate(tokens) if index == 0 or tokenizer.decode([token]).startswith(" ")]
    return list(zip(starts, [*starts[1:], len(tokens)]))


def plain_words(text: str) -> str:
    """Lower case, letters, digits, spaces and hyphens only: what a span is compared by."""
    return " ".join(re.sub(r"[^a-z0-9\- ]", " ", text.lower()).split())


def candidate_spans(
    tokenizer, tokens: list[int], labels: list[str], max_words: int = MAX_SPAN_WORDS, cutoff: float = FUZZY_CUTOFF
) -> list[tuple[int, int, str]]:
    """(first, end, text) of the runs of 1 to `max_words` words of the transcript `tokens` that
    resemble a lexicon label (rapidfuzz ratio >= `cutoff`), in order. Of overlapping runs the
    most alike is kept (on a tie, the one of fewer words): 'metformin' rather than 'metformin
    twice', 'met for min' rather than 'met'."""
    words = word_bounds(tokenizer, tokens)
    matches = []
    for first_word in range(len(words)):
        for last_word in range(first_word, min(len(words), first_word + max_words)):
            first, end = words[first_word][0], words[last_word][1]
            text = plain_words(tokenizer.decode(tokens[first:end]))
            match = process.extractOne(text, labels, scorer=fuzz.ratio, score_cutoff=cutoff) if text else None
            if match is not None:
                matches.append((-match[1], last_word - first_word, first, end, text))
    kept = best_disjoint(sorted(matches), lambda match: (match[2], match[3]))
    return sorted((first, end, text) for _, _, first, end, text in kept)


def best_disjoint(ranked: list, bounds) -> list:
    """`ranked` (best first) less every item whose [first, end) = `bounds(item)` overlaps an
    item kept before it."""
    kept: list = []
    for item in ranked:
        first, end = bounds(item)
        if all(end <= other_first or other_end <= first for other_first, other_end in map(bounds, kept)):
            kept.append(item)
    return kept


def cut_repetition(tokens: list[int], longest: int | None = None, times: int = 3) -> list[int]:
    """The transcript up to where it starts repeating itself: at the first run of 1 to `longest`
    tokens (None: any length) said `times` times in a row, only its first saying is kept ('stop
    phenazopyridine phenazopyridine phenazopyridine ...' -> 'stop phenazopyridine'). Greedy
    decoding loops like this where a window holds more speech than the model was trained on, or
    starts inside a word, on a word or on a whole sentence (a test window looped "i ran out of
    alodaterol yesterday please check the interaction between", 14 tokens, six times); every
    repeat would otherwise be a candidate span of its own, searched with the rest of the loop
    after it (that window took 85 s)."""
    for start in range(len(tokens)):
        for size in range(1, (longest or len(tokens)) + 1):
            if len(tokens) < start + size * times:
                break
            run = tokens[start : start + size]
            repeats = [tokens[start + size * k : start + size * (k + 1)] for k in range(1, times)]
            if all(repeat == run for repeat in repeats):
                return tokens[: start + size]
    return tokens


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through a (rows, columns) cost matrix from the first cell to
    the last (steps: down, right, or both), as (row, column) index arrays. Written out (a few
    lines, as OpenAI's word timing does) rather than pulling in librosa and numba for it; the
    cells of one anti-diagonal depend only on the two before it, so each is one array step."""
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    total[0, 0] = 0.0
    step = np.zeros((rows + 1, columns + 1), dtype=np.int8)
    for diagonal in range(2, rows + columns + 1):  # cells (row, column), row + column = diagonal, 1-based
        row = np.arange(max(1, diagonal - columns), min(rows, diagonal - 1) + 1)
        column = diagonal - row
        choices = np.stack([total[row - 1, column - 1], total[row - 1, column], total[row, column - 1]])
        best = np.argmin(choices, axis=0)  # the first of equals: diagonal, then down, then right
        total[row, column] = cost[row - 1, column - 1] + choices[best, np.arange(len(row))]
        step[row, column] = best
    row, column, path = rows, columns, []
    while row > 0 and column > 0:
        path.append((row - 1, column - 1))
        move = step[row, column]
        row, column = (row - 1, column - 1) if move == 0 else (row - 1, column) if move == 1 else (row, column - 1)
    path.reverse()
    indices = np.array(path)
    return indices[:, 0], indices[:, 1]


@torch.no_grad()
def token_times(
    model, encoder_hidden: torch.Tensor, prompt_ids: list[int], tokens: list[int], end_id: int, audio_frames: int,
    alignment_heads: list[tuple[int, int]], cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> np.ndarray:
    """Seconds from the window's start at which each text token begins, and (last) where
    <|endoftext|> does: (len(tokens) + 1,). `encoder_hidden` (frames, d_model) is one clip's;
    `audio_frames`: the encoder frames that hold audio (the rest of the window is padding);
    `cross`: its cross-attention keys and values if already computed (`_cross_keys_values`)."""
    decoder, _ = _parts(model)
    weights: list[torch.Tensor] = []
    ids = torch.tensor([prompt_ids + tokens + [end_id]], device=encoder_hidden.device)
    decoder_states(decoder, ids, cross or _cross_keys_values(decoder, encoder_hidden), weights)
    audio_frames = max(1, min(audio_frames, encoder_hidden.shape[0]))
    # the row predicting text token i is the prompt's last position + i; one more predicts <|endoftext|>
    rows = slice(len(prompt_ids) - 1, len(prompt_ids) + len(tokens))
    heads = torch.stack([weights[layer][head, rows, :audio_frames] for layer, head in alignment_heads]).float().cpu().numpy()
    std, mean = heads.std(axis=1, keepdims=True), heads.mean(axis=1, keepdims=True)
    heads = (heads - mean) / np.maximum(std, 1e-9)
    heads = median_filter(heads, size=(1, 1, MEDIAN_WIDTH), mode="nearest")
    token_rows, frames = dtw_path(-heads.mean(axis=0))
    starts = np.zeros(len(tokens) + 1)
    for row in range(len(tokens) + 1):  # the first frame the path spends on each row
        starts[row] = frames[np.argmax(token_rows == row)] if (token_rows == row).any() else starts[row - 1]
    return starts * SECONDS_PER_FRAME


class WhisperSpotter:
    """Spans of a Whisper model's transcript where lexicon names were said, each ranked in place
    against the whole lexicon (see the module docstring). `ranker`: the model's `WhisperRanker`
    (its lexicon, spellings and prompt)."""

    def __init__(self, ranker: WhisperRanker, alignment_heads: list[tuple[int, int]] | None, fuzzy_cutoff: float = FUZZY_CUTOFF,
                 max_words: int = MAX_SPAN_WORDS, max_gap: float = IN_PLACE_GAP, context_words: int | None = CONTEXT_WORDS):
        if not alignment_heads:
            raise ValueError("Whisper spotting times names by the alignment heads of the model's generation config "
                             "(generation_config.alignment_heads); this model names none")
        self.ranker = ranker
        self.alignment_heads = [tuple(pair) for pair in alignment_heads]
        self.labels = [plain_words(entry.label) for entry in ranker.lexicon]
        self.fuzzy_cutoff = fuzzy_cutoff
        self.max_words = max_words
        self.max_gap = max_gap
        self.context_words = context_words
        # the most tokens a name takes in place: what the transcript after a span must leave room for
        self.longest_spelling = max(len(spelling) for spellings in ranker.token_sequences for spelling in spellings)
        # each spelling's first token and name; each name's tokens as `spot_score` counts them (its shortest spelling)
        self.first_tokens = torch.tensor([spelling[0] for spellings in ranker.token_sequences for spelling in spellings])
        self.name_of_spelling = torch.tensor([name for name, spellings in enumerate(ranker.token_sequences) for _ in spellings])
        self.name_tokens = torch.tensor([min(map(len, spellings)) for spellings in ranker.token_sequences], dtype=torch.float64)

    def gaps(self, threshold: float | None = None) -> torch.Tensor | None:
        """Each name's gap (names,): nats below the best entry within which it is searched in
        place (`WhisperRanker`'s `name_gaps`), `max_gap` or, for a detection `threshold` per
        token, -threshold x its tokens, whichever is more (None: `max_gap` None, every name)."""
        if self.max_gap is None:
            return None
        gaps = torch.full_like(self.name_tokens, self.max_gap)
        return gaps if threshold is None else torch.maximum(gaps, -threshold * self.name_tokens)

    @torch.no_grad()
    def transcribe_windows(self, model, encoder_hidden: torch.Tensor, max_new_tokens: int | None = None,
                           stacked_cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                           steps: list[GreedySteps] | None = None) -> list[list[int]]:
        """Each window's greedy transcript, text tokens only, the windows (`encoder_hidden`
        (windows, frames, d_model)) decoded side by side: each step projects every running
        window's state onto the vocabulary in one product, whose weights (80 MB in float32 for
        tiny.en) are read once for all of them. At most `TOKENS_PER_SECOND` tokens a second of
        the window (Whisper's own 448 per 30 s): a transcript that loops on itself is cut there.
        `stacked_cross`: the windows' cross-attention keys and values if already computed
        (`stacked_cross_keys_values`). `steps`: an empty list to receive each window's greedy
        steps (`GreedySteps`)."""
        decoder, _ = _parts(model)
        window_tokens = max(1, round(encoder_hidden.shape[1] * SECONDS_PER_FRAME * TOKENS_PER_SECOND))
        limit = min(window_tokens, max_new_tokens or window_tokens)
        prompted = Prompted(decoder, list(encoder_hidden), self.ranker.prompt_ids, stacked_cross)
        transcripts, _ = self.ranker.greedy(model, prompted, limit, steps)
        return [cut_repetition([token for token in tokens if token != self.ranker.end_id]) for tokens in transcripts]

    def transcribe(self, model, encoder_hidden: torch.Tensor, max_new_tokens: int | None = None,
                   stacked_cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                   steps: list[GreedySteps] | None = None) -> list[int]:
        """One window's greedy transcript (`encoder_hidden` (frames, d_model)): `transcribe_windows`."""
        return self.transcribe_windows(model, encoder_hidden[None], max_new_tokens, stacked_cross, steps)[0]

    def heard_sequence(self, tokens: list[int], first: int, end: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The span's own words and what follows them in place, as `in_place` scores every
        entry: (span tokens, suffix), the suffix being the rest of the transcript and
        <|endoftext|> (the next `context_words` words only, if set), cut to Whisper's positions."""
        suffix = tuple(tokens[end:]) + (self.ranker.end_id,)
        if self.context_words is not None:  # the next words only (and <|endoftext|> if they end the text)
            after = word_bounds(self.ranker.tokenizer, list(suffix[:-1]))
            if self.context_words < len(after):
                suffix = suffix[: after[self.context_words][0]]
        room = MAX_POSITIONS - len(self.ranker.prompt_ids) - first - max(self.longest_spelling, end - first)
        return tuple(tokens[first:end]), suffix[: max(0, room)]  # near Whisper's 448 positions: the words after the span that fit

    def greedy_bounds(self, model, steps: GreedySteps, tokens: list[int], first: int, end: int) -> tuple[float, torch.Tensor] | None:
        """From the greedy transcript's steps alone (no decoder pass): the span's own words'
        in-place score (as `in_place` gives it), and a bound on each name's (names,): at most
        its first token's log-probability at the span's start (the best of its spellings'),
        every later token's being <= 0. None if the steps do not reach the end of the span's
        suffix."""
        span, suffix = self.heard_sequence(tokens, first, end)
        heard = torch.tensor(span + suffix)
        positions = torch.arange(first, first + len(heard))
        if int(positions[-1]) >= len(steps.states):
            return None
        projection, device = _parts(model)[1], steps.states.device
        rows = torch.cat([positions, torch.full_like(self.first_tokens, first)]).to(device)
        log_probs = known_log_probabilities(projection, steps.states, rows, torch.cat([heard, self.first_tokens]).to(device),
                                            steps.log_normalisers).double().cpu()
        names = torch.full((len(self.name_tokens),), -float("inf"), dtype=torch.float64)
        names.scatter_reduce_(0, self.name_of_spelling, log_probs[len(heard) :], "amax")
        return float(log_probs[: len(heard)].sum()), names

    def names_within_gap(self, model, steps: GreedySteps | None, tokens: list[int], first: int, end: int,
                         threshold: float | None = None) -> torch.Tensor | None:
        """The names that, by `greedy_bounds`, can score within their gap (`gaps`) of the span's
        own words in place (indices, increasing); None where there is no bound (no steps, or no
        gap: every name is searched). `GREEDY_TOLERANCE` covers the two computations' rounding."""
        gaps = self.gaps(threshold)
        bounds = None if steps is None or gaps is None else self.greedy_bounds(model, steps, tokens, first, end)
        return None if bounds is None else torch.nonzero(bounds[1] >= bounds[0] - gaps - GREEDY_TOLERANCE)[:, 0]

    def no_name_within_gap(self, model, steps: GreedySteps | None, tokens: list[int], first: int, end: int,
                           threshold: float | None = None) -> bool:
        """Whether no lexicon name can score within its gap of the span's own words in place
        (`names_within_gap`): then no name can pass `threshold` there, and the span is passed
        over without the search (which would prove the same at a few decoder passes and
        projections)."""
        names = self.names_within_gap(model, steps, tokens, first, end, threshold)
        return names is not None and not len(names)

    @torch.no_grad()
    def in_place(
        self, model, encoder_hidden: torch.Tensor, tokens: list[int], first: int, end: int, top_k: int = 5,
        stacked_cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None, greedy: GreedySteps | None = None,
        threshold: float | None = None,
    ) -> tuple[torch.Tensor, float]:
        """Every name's in-place score at tokens [first, end) of the transcript (names,), and the
        span's own words' score: log P(prefix, entry, rest of the transcript, <|endoftext|> |
        audio) less log P(prefix | audio), the same for every entry. `stacked_cross`: as for
        `transcribe`; `greedy`: the steps of the greedy decoding that wrote `tokens` (with
        `stacked_cross`): the prefix and the span's own words are read from them, and the names
        further below the span's own words than their gap by `names_within_gap` (-inf here, as
        the search would leave them) are left out of the search's tree.
        `threshold`: the detection threshold per token that the names' gaps allow for (`gaps`)."""
        span, suffix = self.heard_sequence(tokens, first, end)
        gaps = self.gaps(threshold)
        names = self.names_within_gap(model, greedy, tokens, first, end, threshold)  # the tree holds only these
        if names is None:
            names = torch.arange(len(self.ranker.lexicon))
        sequences = [[tuple(spelling) + suffix for spelling in self.ranker.token_sequences[name]] for name in names.tolist()]
        sequences.append([span + suffix])
        if gaps is not None:
            gaps = torch.cat([gaps[names], gaps.new_tensor([-float("inf")])])  # the span's own words: no gap of their own, not a name
        in_place = WhisperRanker(
            [*(self.ranker.lexicon[name] for name in names.tolist()), DrugName(HEARD, HEARD)], self.ranker.tokenizer,
            self.ranker.prompt_ids + list(tokens[:first]), prune_margin=0.0, top_k=top_k + 1, max_gap=self.max_gap,
            complete_sequences=sequences, name_gaps=gaps,
        )
        searched = in_place.scores(model, encoder_hidden[None], stacked_cross=stacked_cross, known=greedy)[0]
        scores = torch.full((len(self.ranker.lexicon),), -float("inf"), dtype=searched.dtype)
        scores[names] = searched[:-1]
        return scores, float(searched[-1])

    @torch.no_grad()
    def spot(self, model, encoder_hidden: torch.Tensor, audio_frames: int, top_k: int = 5,
             max_new_tokens: int | None = None, threshold: float | None = None) -> tuple[list[int], list[InPlaceSpan]]:
        """One window (`encoder_hidden` (frames, d_model); `audio_frames` of them hold audio):
        its transcript's text tokens and every candidate span, ranked in place, best
        `spot_score` first, overlapping spans dropped after the first. `threshold`: the
        detection threshold (per token) the caller will apply, so that a span's best name is
        found wherever it could pass it (`gaps`), and times are read only for a window where a
        span passes it."""
        return self.spot_windows(model, encoder_hidden[None], [audio_frames], top_k, max_new_tokens, threshold)[0]

    @torch.no_grad()
    def spot_windows(self, model, encoder_hidden: torch.Tensor, audio_frames: list[int], top_k: int = 5,
                     max_new_tokens: int | None = None, threshold: float | None = None) -> list[tuple[list[int], list[InPlaceSpan]]]:
        """`spot` for several windows at once (`encoder_hidden` (windows, frames, d_model), a
        recording's or several's): their transcripts are decoded side by side
        (`transcribe_windows`), then each window's spans are ranked in place as `spot` does."""
        stacked = stacked_cross_keys_values(_parts(model)[0], encoder_hidden)  # the windows', once for all their reads
        steps: list[GreedySteps] = []
        transcripts = self.transcribe_windows(model, encoder_hidden, max_new_tokens, stacked, steps=steps)
        results = []
        for window, tokens in enumerate(transcripts):
            own = [(keys[window : window + 1], values[window : window + 1]) for keys, values in stacked]
            greedy = steps[window] if steps else None
            results.append((tokens, self._ranked_spans(model, encoder_hidden[window], audio_frames[window], tokens, own, greedy,
                                                       top_k, threshold)))
        return results

    def _ranked_spans(self, model, encoder_hidden: torch.Tensor, audio_frames: int, tokens: list[int],
                      stacked: list[tuple[torch.Tensor, torch.Tensor]], greedy: GreedySteps | None, top_k: int,
                      threshold: float | None) -> list[InPlaceSpan]:
        """One window's candidate spans of its transcript `tokens`, each ranked in place (see `spot`)."""
        candidates = candidate_spans(self.ranker.tokenizer, tokens, self.labels, self.max_words, self.fuzzy_cutoff)
        candidates = [(first, end, text) for first, end, text in candidates
                      if not self.no_name_within_gap(model, greedy, tokens, first, end, threshold)]
        spans = []
        for first, end, text in candidates:
            scores, heard_score = self.in_place(model, encoder_hidden, tokens, first, end, top_k, stacked, greedy, threshold)
            best = int(scores.argmax())
            if not torch.isfinite(scores[best]):
                continue  # no name within its gap of the span's own words
            name_tokens = min(len(spelling) for spelling in self.ranker.token_sequences[best])
            ratio = min(0.0, (float(scores[best]) - heard_score) / name_tokens) if np.isfinite(heard_score) else 0.0
            spans.append(InPlaceSpan(first, end, text, float("nan"), float("nan"), scores, heard_score, ratio))
        kept = sorted(best_disjoint(sorted(spans, key=lambda span: -span.spot_score), lambda span: (span.first, span.end)),
                      key=lambda span: span.first)
        if any(threshold is None or span.spot_score >= threshold for span in kept):  # times only where a name is reported
            times = token_times(model, encoder_hidden, self.ranker.prompt_ids, tokens, self.ranker.end_id, audio_frames,
                                self.alignment_heads, [(keys[0], values[0]) for keys, values in stacked])
            for span in kept:
                span.start, span.stop = float(times[span.first]), float(times[span.end])
        return kept
