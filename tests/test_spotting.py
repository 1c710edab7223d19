"""Word spotting: names found anywhere in a CTC output, against filler; windows merged."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from s2t_hf import S2T
from s2t_hf.decoding.spotting import CTCSpotter, TimedName, merge_windows
from s2t_hf.text.lexicon import build_lexicon

BLANK = 0
LETTERS = "_abcdefghijklmnopqrstuvwxyz"  # index 0 is the blank


def ids(word: str) -> list[int]:
    return [LETTERS.index(letter) for letter in word]


def spotter(names: list[str]) -> CTCSpotter:
    return CTCSpotter(build_lexicon(names), [ids(name) for name in names], BLANK)


def frames_spelling(text: str, confidence: float = 0.9) -> torch.Tensor:
    """(frames, vocab) log-probabilities whose best token per frame spells `text` ('_' a blank)."""
    rest = (1 - confidence) / (len(LETTERS) - 1)
    probabilities = torch.full((len(text), len(LETTERS)), rest)
    for frame, letter in enumerate(text):
        probabilities[frame, LETTERS.index(letter)] = confidence
    return probabilities.log()


def viterbi(log_probs: torch.Tensor, label: list[int]) -> float:
    """Best single CTC alignment of `label` over all of `log_probs` (brute force, no tree)."""
    states = [BLANK]
    for token in label:
        states += [token, BLANK]
    best = [-np.inf] * len(states)
    best[0], best[1] = float(log_probs[0, BLANK]), float(log_probs[0, label[0]])
    for frame in range(1, log_probs.shape[0]):
        new = [-np.inf] * len(states)
        for state, token in enumerate(states):
            options = [best[state]] + ([best[state - 1]] if state >= 1 else [])
            if state >= 2 and token != BLANK and states[state - 2] != token:
                options.append(best[state - 2])
            new[state] = max(options) + float(log_probs[frame, token])
        best = new
    return max(best[-1], best[-2])


def test_best_spans_equal_brute_force_over_every_start_and_end():
    rng = torch.Generator().manual_seed(0)
    names = ["ab", "aab", "abba", "ba", "cab", "b"]
    found = spotter(names)
    for _ in range(5):
        log_probs = torch.randn(9, 4, generator=rng).log_softmax(-1)  # blank, a, b, c
        log_probs = torch.cat([log_probs, torch.full((9, len(LETTERS) - 4), -30.0)], dim=1).log_softmax(-1)
        ratios = log_probs - log_probs.max(dim=-1, keepdim=True).values
        spans = found.best_spans(log_probs)
        for name, span in zip(names, spans):
            brute = max(
                (viterbi(ratios[start:end], ids(name)) for start, end in itertools.combinations(range(10), 2)),
                default=-np.inf,
            )
            assert span.score == pytest.approx(brute, abs=1e-4), name
            assert viterbi(ratios[span.start : span.end], ids(name)) == pytest.approx(span.score, abs=1e-4), name  # the span is where it is


def test_a_name_among_filler_is_found_at_its_frames():
    log_probs = frames_spelling("xyzqq_" + "meet_form_in" + "_wwxy")
    spans = spotter(["metformin", "warfarin"]).spot(log_probs, threshold=-0.5)
    assert [(span.name, span.start, span.end) for span in spans] == [(0, 6, 18)]
    assert spans[0].score == pytest.approx(0.0, abs=1e-5)  # the greedy reading spells it exactly


def test_two_names_in_one_clip_are_both_found_in_order():
    log_probs = frames_spelling("uu_warfarin_zzqq_xx_metformin_yy")
    names = ["metformin", "warfarin", "heparin"]
    spans = spotter(names).spot(log_probs, threshold=-0.5)
    assert [names[span.name] for span in spans] == ["warfarin", "metformin"]


def test_a_name_said_twice_is_found_twice():
    spans = spotter(["heparin"]).spot(frames_spelling("heparin_xx_yy_heparin"), threshold=-0.5)
    assert [(span.start, span.end) for span in spans] == [(0, 7), (14, 21)]


def test_drug_free_frames_give_nothing():
    names = ["metformin", "warfarin", "heparin", "insulin"]
    spans = spotter(names).spot(frames_spelling("the_quick_brown_fox_jumps_over_the_lazy_dog"), threshold=-0.5)
    assert spans == []


def test_a_name_on_a_window_boundary_counts_once_and_others_stay():
    # two 20-s windows overlapping from 16 s to 20 s: metformin at 17.1 s is heard by both
    first = [TimedName("warfarin", 3.0, 3.6, -0.1), TimedName("metformin", 17.1, 17.8, -0.2)]
    second = [TimedName("metformin", 17.12, 17.79, -0.05), TimedName("metformin", 30.0, 30.7, -0.1)]
    kept = merge_windows([first, second])
    flat = first + second
    assert [(flat[index].name, flat[index].start) for index in kept] == [("warfarin", 3.0), ("metformin", 17.12), ("metformin", 30.0)]


@pytest.fixture(scope="module")
def recogniser(untrained_model):
    return S2T.from_pretrained(untrained_model)


def test_s2t_spot_cuts_a_long_recording_into_windows_and_reports_times_within_it(recogniser):
    samples = np.random.default_rng(0).standard_normal(16000 * 47).astype(np.float32) * 0.1
    result = recogniser.spot((samples, 16000), threshold=-1e9, window_seconds=20, overlap_seconds=4)  # every best span counts
    assert result.duration == pytest.approx(47.0)
    assert result.names, "with no threshold every window reports names"
    for name in result.names:
        assert 0 <= name.start < name.end <= 47.0 + 1e-6
        assert name.candidates[0].name == name.name and name.probability == name.candidates[0].probability
    starts = [name.start for name in result.names]
    assert starts == sorted(starts)
    json.dumps(result.to_dict())
    none = recogniser.spot((samples, 16000), threshold=0.0)  # nothing in noise reads exactly as a name
    assert none.names == []


def test_whisper_windows_batched_spot_as_one_at_a_time(tmp_path, lexicon, monkeypatch):
    """A recording of several windows: decoded side by side (`WHISPER_WINDOW_BATCH`), each
    window's transcript and names are what it gives decoded alone."""
    from s2t_hf.inference import spotting

    from .families import whisper_tiny_en

    whisper = S2T.from_pretrained(whisper_tiny_en(tmp_path / "tiny"), lexicon=lexicon)  # random weights: some transcript per window
    samples = np.random.default_rng(1).normal(size=16000 * 50).astype(np.float32) * 0.1
    together = whisper.spot((samples, 16000))
    monkeypatch.setattr(spotting, "WHISPER_WINDOW_BATCH", 1)
    alone = whisper.spot((samples, 16000))
    assert len(spotting.pause_windows(samples, 20 * 16000, 4 * 16000)) == 3
    assert together.transcript and together.to_dict() == alone.to_dict()


def test_spotting_with_a_model_that_cannot_names_what_to_use(tmp_path, lexicon):
    from .families import speech2text_small, whisper_tiny_en

    speech2text = S2T.from_pretrained(speech2text_small(tmp_path / "s2t"), lexicon=lexicon)
    with pytest.raises(ValueError, match="spotting needs Whisper .* or a CTC model"):
        speech2text.spot((np.zeros(16000, dtype=np.float32) + 0.01, 16000))
    whisper = S2T.from_pretrained(whisper_tiny_en(tmp_path / "tiny"), lexicon=lexicon)  # random weights, tiny.en's alignment heads
    assert whisper.spot((np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.1, 16000)).duration == 1.0
    whisper.model.generation_config.alignment_heads = None
    whisper._spotter = None
    with pytest.raises(ValueError, match="alignment_heads"):
        whisper.spot((np.zeros(16000, dtype=np.float32) + 0.01, 16000))


def test_cli_spot_json(untrained_model, corpus, capsys):
    from s2t_hf.cli import main

    wav = sorted(corpus[0].glob("clips/*/*.wav"))[0]
    assert main(["spot", str(untrained_model), str(wav), "--json", "--threshold=-1e9"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(wav) and record["names"] and {"name", "start", "end", "probability", "candidates"} <= set(record["names"][0])


def test_with_word_delimiters_a_name_is_found_only_as_a_whole_word():
    names = ["one", "oxymorphone"]
    delimited = CTCSpotter(build_lexicon(names), [ids(name) for name in names], BLANK, word_delimiter_id=LETTERS.index("z"))
    log_probs = frames_spelling("z_refill_z_my_z_oxymorphone_z_one_z")  # 'z' stands for the word delimiter here
    spans = delimited.spot(log_probs, threshold=-0.5)
    assert [(names[span.name], span.start) for span in spans] == [("oxymorphone", 16), ("one", 30)]
    undelimited = spotter(names).spot(log_probs, threshold=-0.5)
    assert any(names[span.name] == "one" and span.start < 28 for span in undelimited)  # without edges, 'one' inside 'oxymorphone'


# ---- spotting measured on sentences, and the threshold fitted on them ------------------------

def sentences_for_fitting() -> list[dict]:
    """Three sentences whose detections make every threshold's scores countable by hand."""
    return [
        {"duration": 3.0, "names": [{"name": "metformin", "start": 1.0, "end": 1.5}],
         "found": [{"name": "metformin", "start": 1.1, "end": 1.4, "spot_score": -0.5},
                   {"name": "warfarin", "start": 2.0, "end": 2.3, "spot_score": -1.5}]},  # outside every name: a false alarm
        {"duration": 3.0, "names": [], "found": [{"name": "lisinopril", "start": 0.2, "end": 0.9, "spot_score": -2.5}]},  # drug-free
        {"duration": 2.0, "names": [{"name": "warfarin", "start": 0.5, "end": 1.0}, {"name": "one", "start": 1.2, "end": 1.4}],
         "found": [{"name": "warfarin", "start": 0.55, "end": 1.05, "spot_score": -1.2}]},
    ]


def test_spotting_scores_by_threshold_and_the_fitted_threshold_has_the_best_f1():
    from s2t_hf.evaluation.spotting import fit_spot_threshold, score_spotting

    sentences, names = sentences_for_fitting(), {"metformin", "warfarin", "lisinopril"}  # "one" is not a drug name
    by_hand = {-0.5: (1, 1, 2 / 3), -1.2: (2, 2, 1.0), -1.5: (2, 3, 0.8), -2.5: (2, 4, 2 / 3)}  # right, detections, F1
    for threshold, (right, detections, f1) in by_hand.items():
        scored = score_spotting(sentences, threshold, names)
        assert (scored["right"], scored["detections"], scored["references"]) == (right, detections, 2)
        assert scored["f1"] == pytest.approx(f1, abs=1e-4)
    lowest = score_spotting(sentences, -2.5, names)
    assert lowest["false_alarms"] == 1 and lowest["false_alarms_per_10_min"] == pytest.approx(200.0)  # 1 in 3 s of drug-free speech
    assert lowest["false_alarms_outside_names"] == 2 and lowest["start_error_ms"] == pytest.approx(75.0)  # (100 + 50) / 2
    assert fit_spot_threshold(sentences, names)["threshold"] == pytest.approx(-1.2 - 5e-5)  # just below: scores are rounded
    assert fit_spot_threshold(sentences, names, floor=-1.0)["threshold"] == pytest.approx(-0.5 - 5e-5)  # only what reaches the floor
    tied = [*sentences, {"duration": 2.0, "names": [{"name": "heparin", "start": 0.1, "end": 0.6}],
                         "found": [{"name": "heparin", "start": 0.1, "end": 0.6, "spot_score": -3.0},  # right, but below
                                   {"name": "heparin", "start": 1.0, "end": 1.5, "spot_score": -0.2}]}]  # a false alarm above
    names_tied = names | {"heparin"}
    assert score_spotting(tied, -1.2, names_tied)["f1"] == score_spotting(tied, -3.0, names_tied)["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert fit_spot_threshold(tied, names_tied)["threshold"] == pytest.approx(-1.2 - 5e-5)  # a tie: the higher threshold
    with pytest.raises(ValueError, match="drug-free"):
        fit_spot_threshold([sentences[1]], names)
    with pytest.raises(ValueError, match="nothing was spotted"):
        fit_spot_threshold(sentences, names, floor=0.0)
    with pytest.raises(ValueError, match="F1 is 0"):
        fit_spot_threshold(sentences, {"aspirin"})  # none of the references is in this lexicon


def test_a_false_alarm_limit_fits_the_best_threshold_that_keeps_to_it():
    from s2t_hf.evaluation.spotting import fit_spot_threshold, score_spotting

    names = {"metformin", "warfarin", "lisinopril"}
    sentences = [*sentences_for_fitting(),  # and a drug-free one with a detection scoring between the two right ones
                 {"duration": 3.0, "names": [], "found": [{"name": "warfarin", "start": 0.1, "end": 0.5, "spot_score": -0.8}]}]
    # by hand: at -1.2 two right of three detections (F1 0.8) and 1 false alarm in 6 s of drug-free speech (100 per 10 min);
    # at -0.5 one right of one (F1 2/3) and none
    assert score_spotting(sentences, -1.2, names)["false_alarms_per_10_min"] == pytest.approx(100.0)
    assert fit_spot_threshold(sentences, names)["threshold"] == pytest.approx(-1.2 - 5e-5)
    limited = fit_spot_threshold(sentences, names, max_false_alarms=50.0)
    assert limited["threshold"] == pytest.approx(-0.5 - 5e-5) and limited["false_alarms"] == 0
    assert fit_spot_threshold(sentences, names, max_false_alarms=100.0)["threshold"] == pytest.approx(-1.2 - 5e-5)  # the limit is inclusive
    loud = [*sentences, {"duration": 3.0, "names": [], "found": [{"name": "warfarin", "start": 0.1, "end": 0.5, "spot_score": -0.1}]}]
    with pytest.raises(ValueError, match="more than 0 false alarms"):
        fit_spot_threshold(loud, names, max_false_alarms=0.0)  # the best-scoring detection is itself a false alarm
    with pytest.raises(ValueError, match="needs drug-free sentences"):
        fit_spot_threshold([sentences[0]], names, max_false_alarms=1.0)


def test_calibrate_sentences_saves_the_fitted_threshold_and_spot_uses_it(untrained_model_copy, monkeypatch, capsys):
    from s2t_hf import cli
    from s2t_hf.evaluation import spotting as spotting_evaluation
    from s2t_hf.inference import spotting as inference_spotting
    from s2t_hf.inference.calibration import Calibration

    monkeypatch.setattr(spotting_evaluation, "spot_sentences", lambda recogniser, manifest, **_: (sentences_for_fitting(), 1.0))
    assert cli.main(["calibrate", str(untrained_model_copy)]) == 2
    assert "--sentences" in capsys.readouterr().err
    assert cli.main(["calibrate", str(untrained_model_copy), "--sentences", "sentences.tsv"]) == 0
    assert "spot threshold -1.200" in capsys.readouterr().out
    assert Calibration.load(untrained_model_copy).spot_threshold == pytest.approx(-1.2 - 5e-5)
    assert cli.main(["calibrate", str(untrained_model_copy), "--max-false-alarms", "1"]) == 2  # a limit needs sentences to fit on
    assert "--sentences" in capsys.readouterr().err
    louder = [*sentences_for_fitting(),  # a false alarm at -0.8: at most 50 per 10 min leaves -0.5 (see the test above)
              {"duration": 3.0, "names": [], "found": [{"name": "warfarin", "start": 0.1, "end": 0.5, "spot_score": -0.8}]}]
    monkeypatch.setattr(spotting_evaluation, "spot_sentences", lambda recogniser, manifest, **_: (louder, 1.0))
    assert cli.main(["calibrate", str(untrained_model_copy), "--sentences", "sentences.tsv", "--max-false-alarms", "50"]) == 0
    assert "spot threshold -0.500" in capsys.readouterr().out
    assert cli.main(["calibrate", str(untrained_model_copy), "--sentences", "sentences.tsv"]) == 0  # without the limit: the best F1
    assert "spot threshold -1.200" in capsys.readouterr().out
    used = []
    monkeypatch.setattr(inference_spotting, "spot", lambda recogniser, audio, threshold, *rest: used.append(threshold))
    recogniser = S2T.from_pretrained(untrained_model_copy)
    recogniser.spot((np.zeros(16000, np.float32), 16000))
    recogniser.spot((np.zeros(16000, np.float32), 16000), threshold=-3.0)  # an explicit threshold wins
    assert used == [pytest.approx(-1.2 - 5e-5), -3.0]


def test_a_spotted_span_that_fits_its_own_reading_far_better_is_marked_not_in_lexicon(untrained_model):
    """The span's ranking is `recognize`'s with allow_out_of_lexicon: with the calibration's gap
    at -inf every span's own reading wins (marked, with what was heard); with no gap, none is."""
    from s2t_hf.inference.calibration import Calibration

    samples = np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32) * 0.1
    recogniser = S2T.from_pretrained(untrained_model)
    recogniser.calibration = Calibration(out_of_lexicon_gap=-float("inf"), clips=10)
    marked = recogniser.spot((samples, 16000), threshold=-1e9)
    assert marked.names and all(name.out_of_lexicon for name in marked.names)
    assert all(isinstance(name.heard, str) for name in marked.names) and json.dumps(marked.to_dict())
    recogniser.calibration = Calibration(out_of_lexicon_gap=None, clips=10)
    unmarked = recogniser.spot((samples, 16000), threshold=-1e9)
    assert [name.name for name in unmarked.names] == [name.name for name in marked.names]
    assert not any(name.out_of_lexicon for name in unmarked.names)
