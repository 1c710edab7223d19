"""Whisper spotting (s2t_hf/decoding/whisper_spotting.py): candidate spans of the transcript,
names ranked in place exactly (the whole sentence with the name in it, teacher-forced), the
word-timing alignment, and the packaged tiny.en finding a name inside a synthesised sentence
at the time it was said."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import soundfile
import torch

from s2t_hf.decoding.whisper import GreedySteps, WhisperRanker, _cross_keys_values, _parts, decoder_states, stacked_cross_keys_values
from s2t_hf.decoding.whisper_spotting import WhisperSpotter, candidate_spans, cut_repetition, dtw_path, word_bounds
from s2t_hf.text.lexicon import build_lexicon
from tests.test_whisper_ranking import NAMES, prompt_of, steered, tiny_whisper

HEADS = [(0, 0), (1, 1)]  # any heads: a random model's times are not tested, only their shape


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; `tokenizer` comes from there too


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_whisper(tokenizer, sharpness=3.0)


@pytest.fixture(scope="module")
def ranker(tokenizer):
    return WhisperRanker(build_lexicon(NAMES), tokenizer, prompt_of(tokenizer), spellings="label")


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def test_dtw_path_is_the_cheapest_monotonic_path():
    rng = np.random.default_rng(0)
    for rows, columns in [(1, 4), (3, 3), (3, 5), (4, 6)]:
        cost = rng.normal(size=(rows, columns))
        path_rows, path_columns = dtw_path(cost)
        assert (path_rows[0], path_columns[0]) == (0, 0) and (path_rows[-1], path_columns[-1]) == (rows - 1, columns - 1)
        steps = set(zip(np.diff(path_rows).tolist(), np.diff(path_columns).tolist()))
        assert steps <= {(1, 1), (1, 0), (0, 1)}

        def cheapest(row, column):  # brute force over every monotonic path to (row, column)
            if (row, column) == (0, 0):
                return cost[0, 0]
            previous = [(row - a, column - b) for a, b in [(1, 1), (1, 0), (0, 1)] if row - a >= 0 and column - b >= 0]
            return cost[row, column] + min(cheapest(*cell) for cell in previous)

        assert cost[path_rows, path_columns].sum() == pytest.approx(cheapest(rows - 1, columns - 1))


def test_dtw_path_breaks_ties_as_the_cell_by_cell_recurrence_does():
    """The path, computed an anti-diagonal at a time, against the recurrence written out cell by
    cell (ties: the diagonal step first, then down, then right), on costs full of equal values."""
    rng = np.random.default_rng(1)
    for rows, columns in [(1, 1), (1, 7), (6, 1), (5, 5), (12, 90)]:
        cost = rng.integers(0, 3, size=(rows, columns)).astype(float)
        total = np.full((rows + 1, columns + 1), np.inf)
        total[0, 0] = 0.0
        step = np.zeros((rows + 1, columns + 1), dtype=int)
        for column in range(1, columns + 1):
            for row in range(1, rows + 1):
                choices = [total[row - 1, column - 1], total[row - 1, column], total[row, column - 1]]
                step[row, column] = int(np.argmin(choices))
                total[row, column] = cost[row - 1, column - 1] + choices[step[row, column]]
        row, column, expected = rows, columns, []
        while row > 0 and column > 0:
            expected.append((row - 1, column - 1))
            row, column = [(row - 1, column - 1), (row - 1, column), (row, column - 1)][step[row, column]]
        path_rows, path_columns = dtw_path(cost)
        assert list(zip(path_rows.tolist(), path_columns.tolist())) == expected[::-1]


def test_words_and_candidate_spans(tokenizer):
    tokens = encode(tokenizer, " the patient takes metformin twice")
    words = word_bounds(tokenizer, tokens)
    assert [tokenizer.decode(tokens[first:end]) for first, end in words] == [" the", " patient", " takes", " metformin", " twice"]
    labels = [entry.label for entry in build_lexicon(NAMES)]
    spans = candidate_spans(tokenizer, tokens, labels, max_words=1)
    assert [text for _, _, text in spans] == ["metformin"]
    first, end, _ = spans[0]
    assert (first, end) == words[3]
    # a misheard name spread over words is a candidate when joined
    misheard = encode(tokenizer, " take met for min now")
    joined = [text for _, _, text in candidate_spans(tokenizer, misheard, labels, max_words=3)]
    assert joined == ["met for min"]


def test_in_place_scores_are_the_whole_sentence_teacher_forced(model, tokenizer, ranker):
    """Each ranked name's score is log P(prefix, name, rest, <|endoftext|>) - log P(prefix) by
    plain teacher forcing; the span's own words are scored alike; every name the search left
    out is more than its gap below the best entry."""
    hidden = steered(model, tokenizer, [" the patient takes metformin tablet"])[0]
    tokens = encode(tokenizer, " the patient takes metformin tablet")
    first, end = word_bounds(tokenizer, tokens)[3]
    spotter = WhisperSpotter(ranker, HEADS, max_gap=6.0)
    scores, heard = spotter.in_place(model, hidden, tokens, first, end)
    end_id = ranker.end_id
    prefix, suffix = tokens[:first], tokens[end:]
    teacher = ranker.sequence_scores(model, hidden[None], None, [prefix])[0]

    def sentence(middle: list[int]) -> float:
        return float(ranker.sequence_scores(model, hidden[None], None, [prefix + middle + suffix + [end_id]])[0] - teacher)

    expected = torch.tensor([sentence(list(spellings[0])) for spellings in ranker.token_sequences])
    assert heard == pytest.approx(sentence(tokens[first:end]), abs=1e-3)
    ranked = torch.isfinite(scores)
    assert ranked.sum() >= 2
    torch.testing.assert_close(scores[ranked], expected[ranked], atol=1e-3, rtol=0)
    best = max(float(expected.max()), heard)
    assert (expected[~ranked] < best - 6.0 + 1e-3).all()
    assert NAMES[int(scores.argmax())] == NAMES[int(expected.argmax())] == "metformin"
    # with one word of context: the sentence up to the end of the next word, not ended
    shorter = WhisperSpotter(ranker, HEADS, max_gap=6.0, context_words=1)
    scores, heard = shorter.in_place(model, hidden, tokens[:end] + encode(tokenizer, " tablet tablet"), first, end)
    expected = torch.tensor([float(ranker.sequence_scores(model, hidden[None], None, [prefix + list(spellings[0]) + suffix])[0] - teacher)
                             for spellings in ranker.token_sequences])
    ranked = torch.isfinite(scores)
    torch.testing.assert_close(scores[ranked], expected[ranked], atol=1e-3, rtol=0)


def test_given_a_threshold_the_best_name_is_found_as_far_down_as_the_threshold_lets_its_tokens_be(model, tokenizer, ranker):
    """At a carrier word every name is far below the word itself (beyond `max_gap`): with a
    detection threshold per token, the best name is still scored exactly when the threshold
    times its tokens reaches it."""
    hidden = steered(model, tokenizer, [" the patient takes metformin tablet"])[0]
    tokens = encode(tokenizer, " the patient takes metformin tablet")
    first, end = word_bounds(tokenizer, tokens)[2]  # "takes"
    prefix, suffix = tokens[:first], tokens[end:] + [ranker.end_id]
    teacher = ranker.sequence_scores(model, hidden[None], None, [prefix])[0]
    expected = torch.tensor([float(ranker.sequence_scores(model, hidden[None], None, [prefix + list(spelled[0]) + suffix])[0] - teacher)
                             for spelled in ranker.token_sequences])
    spotter = WhisperSpotter(ranker, HEADS, max_gap=6.0)
    scores, heard = spotter.in_place(model, hidden, tokens, first, end)
    best = int(expected.argmax())
    below = heard - float(expected[best])  # how far the best name is below the word
    assert below > 6.0 and not torch.isfinite(scores[best])  # beyond max_gap: not ranked
    per_token = below / float(spotter.name_tokens[best])
    reaching, _ = spotter.in_place(model, hidden, tokens, first, end, threshold=-(per_token + 0.1))
    assert int(reaching.argmax()) == best and float(reaching[best]) == pytest.approx(float(expected[best]), abs=1e-3)


def test_in_place_scores_read_from_the_greedy_steps_are_the_same(model, tokenizer, ranker, monkeypatch):
    """Given the steps of the decoding that wrote the transcript, the search reads the prefix
    and the nodes along the transcript's own tokens from them (no decoder pass, no projection
    there) and scores every entry as it does without them."""
    text = " the patient takes metformin tablet"
    hidden = steered(model, tokenizer, [text])[0]
    tokens = encode(tokenizer, text)
    steps = forced_steps(model, hidden, ranker.prompt_ids, tokens, ranker.end_id)
    stacked = stacked_cross_keys_values(_parts(model)[0], hidden[None])
    stats = []
    original = WhisperRanker.scores

    def recorded(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        stats.append({**self.last_stats[0], "entries": len(self)})
        return result

    monkeypatch.setattr(WhisperRanker, "scores", recorded)
    left_out = []
    for gap in (6.0, 1.0):  # a narrow gap: names the bound leaves out
        spotter = WhisperSpotter(ranker, HEADS, max_gap=gap)
        for first, end in word_bounds(tokenizer, tokens):
            searched, heard = spotter.in_place(model, hidden, tokens, first, end, stacked_cross=stacked)
            read, read_heard = spotter.in_place(model, hidden, tokens, first, end, stacked_cross=stacked, greedy=steps)
            assert read_heard == pytest.approx(heard, abs=1e-3)
            # the names within the gap of the best entry, ranked alike (a name further down is scored or not
            # as the search's path happened to reach it: -inf or its exact score)
            ranked = searched >= max(float(searched.max()), heard) - gap
            assert torch.equal(read >= max(float(read.max()), read_heard) - gap, ranked)
            torch.testing.assert_close(read[ranked], searched[ranked], atol=1e-3, rtol=0)
            both = torch.isfinite(read) & torch.isfinite(searched)
            torch.testing.assert_close(read[both], searched[both], atol=1e-3, rtol=0)
            without, known = stats[-2:]
            # every node along the rest of the transcript but its last (a leaf) is read: the root and one per token
            assert known["nodes_known"] == len(tokens) - first + 1 and without["nodes_known"] == 0
            assert known["nodes_expanded"] < without["nodes_expanded"] and known["projections"] < without["projections"]
            # every name in the tree without the steps; with them, the names whose bound shows them beyond their gap are left out
            assert without["entries"] == len(NAMES) + 1 and known["entries"] <= without["entries"]
            left_out.append(without["entries"] - known["entries"])
    assert any(left_out), left_out  # some span's tree had names left out, and the scores above came out the same
    with pytest.raises(ValueError, match="prompt"):  # steps of another transcript
        spotter.in_place(model, hidden, encode(tokenizer, " a patient takes metformin tablet"), 3, 4, stacked_cross=stacked, greedy=steps)


def forced_steps(model, hidden: torch.Tensor, prompt: list[int], tokens: list[int], end_id: int) -> GreedySteps:
    """The greedy steps a decoder would have recorded had it written `tokens` and <|endoftext|>:
    the states predicting each of them (teacher forcing) and their logsumexps."""
    decoder, projection = _parts(model)
    states, keys_values = decoder_states(decoder, torch.tensor([prompt + tokens + [end_id]]), _cross_keys_values(decoder, hidden))
    rows, read = states[0, len(prompt) - 1 :], len(prompt) + len(tokens)
    return GreedySteps(tokens + [end_id], len(prompt), rows, projection(rows).float().logsumexp(-1),
                       [keys[0, :read] for keys, _ in keys_values], [values[0, :read] for _, values in keys_values])


def spot_transcript(spotter, model, tokenizer, clip, text: str, monkeypatch):
    """`spotter.spot` on a clip steered towards `text`, with `text` as the transcript (a tiny random
    model cannot be steered to write 20-odd byte tokens greedily; the packaged tiny.en test below
    covers the greedy transcript), and the steps its greedy decoding would have recorded."""
    tokens = encode(tokenizer, text)

    def transcribe_windows(model, hidden, *args, steps=None, **kwargs):
        steps.append(forced_steps(model, hidden[0], spotter.ranker.prompt_ids, tokens, spotter.ranker.end_id))
        return [tokens]

    monkeypatch.setattr(spotter, "transcribe_windows", transcribe_windows)
    return spotter.spot(model, clip, audio_frames=20)


def test_a_span_is_passed_over_only_where_the_search_would_rank_no_name(model, tokenizer):
    """The greedy steps give the span's own words' in-place score and a bound on every name's;
    a span passed over by them is one where every name is further below than its gap. (Two names whose first
    tokens the carrier words do not start with, and one word of context: this random model
    is sure of the words, not of <|endoftext|>, so only there is the bound tight enough.)"""
    ranker = WhisperRanker(build_lexicon(["warfarin", "Lipitor"]), tokenizer, prompt_of(tokenizer), spellings="label")
    text = " the patient takes warfarin tablet"
    hidden = steered(model, tokenizer, [text], steps=150)[0]
    tokens = encode(tokenizer, text)
    steps = forced_steps(model, hidden, ranker.prompt_ids, tokens, ranker.end_id)
    passed_over = []
    for context in [None, 1]:
        spotter = WhisperSpotter(ranker, HEADS, max_gap=1.0, context_words=context)
        for first, end in word_bounds(tokenizer, tokens):
            scores, heard = spotter.in_place(model, hidden, tokens, first, end)
            heard_bound, name_bounds = spotter.greedy_bounds(model, steps, tokens, first, end)
            assert heard_bound == pytest.approx(heard, abs=1e-3)
            assert (scores <= name_bounds + 1e-3).all()
            skipped = spotter.no_name_within_gap(model, steps, tokens, first, end)
            assert not skipped or bool((scores < heard - spotter.gaps() + 1e-3).all())  # none could be within its gap
            passed_over.append((context, tokenizer.decode(tokens[first:end]).strip(), skipped))
    assert {word for context, word, skipped in passed_over if skipped} == {"the", "patient", "takes", "tablet"}, passed_over
    assert (1, "warfarin", False) in passed_over


def test_a_name_in_the_middle_is_found_and_drug_free_words_are_not(model, tokenizer, ranker, monkeypatch):
    spotter = WhisperSpotter(ranker, HEADS, fuzzy_cutoff=30.0)  # a low cutoff: carrier words become candidates too
    with_name, drug_free = steered(model, tokenizer, [" the patient takes metformin tablet", " the patient takes a tablet"], steps=150)
    tokens, spans = spot_transcript(spotter, model, tokenizer, with_name, " the patient takes metformin tablet", monkeypatch)
    found = [span for span in spans if span.spot_score >= -1.0]
    assert len(found) == 1 and NAMES[int(found[0].scores.argmax())] == "metformin" and found[0].heard == "metformin"
    assert (found[0].first, found[0].end) == word_bounds(tokenizer, tokens)[3]
    assert 0.0 <= found[0].start <= found[0].stop <= 20 * 0.02
    tokens, spans = spot_transcript(spotter, model, tokenizer, drug_free, " the patient takes a tablet", monkeypatch)
    assert spans and all(span.spot_score < -1.0 for span in spans)  # candidates, each far worse with a name in it


def test_two_names_in_one_sentence_are_both_found(model, tokenizer, ranker, monkeypatch):
    spotter = WhisperSpotter(ranker, HEADS)
    clip = steered(model, tokenizer, [" stop warfarin take heparin"], steps=150)[0]
    _, spans = spot_transcript(spotter, model, tokenizer, clip, " stop warfarin take heparin", monkeypatch)
    assert [NAMES[int(span.scores.argmax())] for span in spans if span.spot_score >= -1.0] == ["warfarin", "heparin"]


def test_windows_spotted_side_by_side_give_what_each_gives_alone(model, tokenizer, ranker):
    """`spot_windows` decodes the windows' transcripts together (one vocabulary projection a
    step for all): the same transcripts, spans, scores and times as `spot` on each window."""
    spotter = WhisperSpotter(ranker, HEADS, fuzzy_cutoff=0.0)  # every run of words a candidate: spans to compare
    clips = steered(model, tokenizer, [" stop warfarin take heparin", " the patient takes a tablet", " metformin"], steps=60)
    together = spotter.spot_windows(model, clips, [20, 14, 8])
    alone = [spotter.spot(model, clip, frames) for clip, frames in zip(clips, [20, 14, 8])]
    assert sum(len(spans) for _, spans in alone) >= 3
    for (tokens, spans), (own_tokens, own_spans) in zip(together, alone):
        assert tokens == own_tokens and len(spans) == len(own_spans)
        for span, own in zip(spans, own_spans):
            assert (span.first, span.end, span.heard) == (own.first, own.end, own.heard)
            assert (span.start, span.stop) == pytest.approx((own.start, own.stop))
            torch.testing.assert_close(span.scores, own.scores, atol=1e-3, rtol=0)
            assert span.spot_score == pytest.approx(own.spot_score, abs=1e-3)
    # above every spot_score (<= 0): the same spans, untimed (times are read only where a name is reported)
    untimed = spotter.spot_windows(model, clips, [20, 14, 8], threshold=0.5)
    for (_, spans), (_, timed) in zip(untimed, together):
        assert [span.first for span in spans] == [span.first for span in timed]
        assert all(np.isnan(span.start) and np.isnan(span.stop) for span in spans)
        assert all(np.isfinite(span.start) and np.isfinite(span.stop) for span in timed)


def test_a_looping_transcript_is_cut_after_its_first_saying():
    assert cut_repetition([1, 2, 3, 7, 7, 7, 7, 7]) == [1, 2, 3, 7]
    assert cut_repetition([1, 5, 6, 5, 6, 5, 6, 5]) == [1, 5, 6]  # a run of two tokens, three times
    assert cut_repetition([1, 2, 2, 3, 4, 3, 4]) == [1, 2, 2, 3, 4, 3, 4]  # twice is speech ('ten ten'), not a loop
    sentence = list(range(10, 24))  # a whole sentence looped, 14 tokens
    assert cut_repetition([1, *sentence * 6, 9]) == [1, *sentence]
    assert cut_repetition([1, *sentence * 2, 9]) == [1, *sentence * 2, 9]
    assert cut_repetition([]) == []


def test_long_recordings_are_cut_at_pauses_without_overlap():
    from s2t_hf.inference.spotting import pause_windows

    rng = np.random.default_rng(0)
    clip = rng.normal(size=16000 * 13).astype(np.float32)
    pauses = [4.6, 9.2]  # seconds: 100 ms of silence each, inside each window's last 2 s
    for pause in pauses:
        clip[int(pause * 16000) : int((pause + 0.1) * 16000)] = 0.0
    windows = pause_windows(clip, window=6 * 16000, search=2 * 16000)
    assert windows[0][0] == 0 and windows[-1][1] == len(clip)
    assert all(end == next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))
    assert all(end - start <= 6 * 16000 for start, end in windows)
    assert len(windows) == 3 and all(pause <= end / 16000 <= pause + 0.1 for (_, end), pause in zip(windows, pauses))
    assert pause_windows(clip[:16000], window=6 * 16000, search=2 * 16000) == [(0, 16000)]


def test_a_model_without_alignment_heads_is_refused_by_name(ranker):
    with pytest.raises(ValueError, match="alignment_heads"):
        WhisperSpotter(ranker, None)


def test_packaged_tiny_en_spots_a_name_where_it_was_said(tmp_path):
    """The real pretrained tiny.en, zero-shot (30-s window), on a sentence joined from three
    pieces spoken by Flite: the name is found, and its times come from the alignment heads
    within 0.3 s of where the piece was put."""
    from tests.test_whisper_import import require_wheel

    require_wheel("tiny.en")
    from s2t_hf.inference.recognizer import S2T
    from s2t_hf.speech.sentences import join_pieces
    from s2t_hf.speech.synthesis import clip_path, synthesize_batch
    from s2t_hf.speech.tts import parse_voices

    voice = parse_voices(["flite:slt"])[0]
    pieces = build_lexicon(["please refill my", "metformin", "tablets today"])
    synthesize_batch(voice, pieces, tmp_path, timeout=60)
    parts = [soundfile.read(tmp_path / clip_path(voice, piece), dtype="float32")[0] for piece in pieces]
    audio, times = join_pieces(parts, random.Random(0))
    recogniser = S2T.from_pretrained("packaged:whisper-tiny.en", lexicon="common")
    result = recogniser.spot((audio, 16000), threshold=-1.0)
    assert [name.name for name in result.names] == ["metformin"], result.to_dict()
    name = result.names[0]
    assert abs(name.start - times[1][0]) < 0.3 and abs(name.end - times[1][1]) < 0.3, (name, times[1])
    assert name.probability > 0.5 and name.candidates[0].name == "metformin"


def test_of_overlapping_candidates_the_most_alike_is_kept(tokenizer):
    """'metformin' alone and 'metformin tablet' both resemble a name; only the closer one is a
    candidate. A name misheard as three words is one candidate, not three."""
    labels = [entry.label for entry in build_lexicon(NAMES)]
    tokens = encode(tokenizer, " the patient takes metformin tablet")
    words = word_bounds(tokenizer, tokens)
    spans = candidate_spans(tokenizer, tokens, labels, max_words=2, cutoff=40.0)  # a low cutoff: 'metformin tablet' passes it too
    assert (*words[3], "metformin") in spans and not any(first <= words[3][0] and words[4][1] <= end for first, end, _ in spans)
    spans = candidate_spans(tokenizer, encode(tokenizer, " take met for min now"), labels, max_words=3)
    assert [text for _, _, text in spans] == ["met for min"]
    assert not any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(candidate_spans(
        tokenizer, tokens, labels, max_words=3, cutoff=20.0), 2))
