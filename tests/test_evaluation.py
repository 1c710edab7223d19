"""Evaluation: the evaluate metric module, calibration and flags, the Parquet prediction cache, the report."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
import torch

from s2t_hf import DRUG_ACCURACY_METRIC, S2T
from s2t_hf.audio.channels import through_telephone
from s2t_hf.audio.reading import read_usable_audio
from s2t_hf.evaluation.comparison import PredictionCache, compare_models
from s2t_hf.evaluation.report import write_comparison_report
from s2t_hf.inference.calibration import (
    Calibration,
    expected_calibration_error,
    fit_ambiguity_margin,
    fit_calibration,
    fit_out_of_lexicon_gap,
    fit_temperature,
)
from s2t_hf.inference.recognizer import BatchScores
from s2t_hf.text.lexicon import build_lexicon
from s2t_hf.text.sound_alike import load_sound_alike_pairs, partners_in_lexicon

from .conftest import save_untrained_model
from .test_ranking_and_metrics import make_ranker, spell


def test_metric_module_loads_offline_and_scores_hand_made_rankings():
    metric = evaluate.load(DRUG_ACCURACY_METRIC)
    result = metric.compute(
        predictions=[["Hydralazine", "hydroxyzine"], ["clonidine", "clonazepam", "lorazepam"], [], ["metformin"]],
        references=["hydroxyzine", "lorazepam", "warfarin", "Metformin "],
        max_k=3,
    )
    assert result == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    with pytest.raises(ValueError, match="max_k"):
        metric.compute(predictions=[["a"]], references=["a"], max_k=0)


def test_sound_alike_pairs_are_found_only_when_both_names_are_in_the_lexicon():
    pairs = load_sound_alike_pairs()
    assert ("hydralazine", "hydroxyzine", "FDA") in pairs and all(source in {"FDA", "ISMP"} for _, _, source in pairs)
    partners = partners_in_lexicon(["hydralazine", "hydroxyzine", "clonidine", "metformin"])
    assert partners == {"hydralazine": {"hydroxyzine"}, "hydroxyzine": {"hydralazine"}}


def test_temperature_fitting_recovers_the_overconfidence_of_synthetic_scores():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 30, generator=generator) * 2
    references = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(1)
    assert fit_temperature(true_logits * 3.0, references) == pytest.approx(3.0, rel=0.1)  # scores 3x too sharp
    assert fit_temperature(true_logits / 2.0, references) == pytest.approx(0.5, rel=0.1)
    references[:10] = -1  # names outside the lexicon are ignored
    assert fit_temperature(true_logits, references) == pytest.approx(1.0, rel=0.1)


def test_a_validation_with_almost_no_errors_keeps_temperature_1(caplog):
    """All right at top 1: the likelihood keeps rising as the temperature falls, so a fit would run
    to its bound and make wrong answers look certain later; with 5 errors it is fitted again."""
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(400, 50, generator=generator)
    references = scores.argmax(dim=1).clone()
    unguarded = torch.nn.functional.cross_entropy(scores / 0.02, references) < torch.nn.functional.cross_entropy(scores, references)
    assert unguarded  # what the guard is for: the sharpest temperature fits such data best
    references[:4] = (references[:4] + 1) % 50  # 4 errors: still too few
    with caplog.at_level("WARNING", logger="s2t_hf.inference.calibration"):
        assert fit_temperature(scores, references) == 1.0
    assert "4 of 400 calibration clips are wrong" in caplog.text
    references[4:40] = (references[4:40] + 1) % 50  # 40 errors: fitted
    assert fit_temperature(scores, references) != 1.0


def test_expected_calibration_error_and_margin_threshold_on_hand_made_values():
    assert expected_calibration_error(np.full(10, 0.9), np.array([1] * 9 + [0])) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.9), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)
    margins = np.array([0.9, 0.8, 0.95, 0.7, 0.05, 0.1, 0.2])
    correct = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)
    threshold = fit_ambiguity_margin(margins, correct)
    assert 0.2 < threshold <= 0.7 + 1e-9  # flags every error and no correct answer


@pytest.fixture(scope="module")
def sound_alike_recogniser(tmp_path_factory):
    """A real S2T around a tiny model; the tests feed it scores from hand-built CTC logits."""
    lexicon = build_lexicon(["hydralazine", "hydroxyzine", "metformin"])
    folder = save_untrained_model(tmp_path_factory.mktemp("lasa"), lexicon)
    calibration = Calibration(temperature=1.0, ambiguity_margin=0.3, out_of_lexicon_gap=1.0)
    calibration.save(folder)
    return S2T.from_pretrained(folder)


def scored(recogniser: S2T, frames: list[list], transcript: list) -> BatchScores:
    _, tokenizer, ranker = make_ranker([entry.label for entry in recogniser.lexicon])
    log_probs = torch.stack([spell(tokenizer, clip, len(tokenizer)) for clip in frames])
    from s2t_hf.decoding.ctc import transcript_scores

    own = transcript_scores(log_probs, torch.tensor([len(clip) for clip in frames]), [[tokenizer.convert_tokens_to_ids(c) for c in text] for text in transcript], tokenizer.pad_token_id)
    return BatchScores(transcripts=transcript, scores=ranker.scores(log_probs), transcript_scores=own)


def mixed_log_probs(tokenizer, letters: list, vocab_size: int) -> torch.Tensor:
    """Frames where each entry is one letter (0.9) or a pair of letters sharing 0.9 equally."""
    probs = torch.full((len(letters), vocab_size), 0.1 / (vocab_size - 2))
    for index, entry in enumerate(letters):
        choices = entry if isinstance(entry, tuple) else (entry,)
        for char in choices:
            probs[index, tokenizer.convert_tokens_to_ids(char)] = 0.9 / len(choices)
    return probs.log()


def test_a_confusable_pair_with_a_small_margin_is_flagged_ambiguous(sound_alike_recogniser):
    recogniser = sound_alike_recogniser
    _, tokenizer, ranker = make_ranker([entry.label for entry in recogniser.lexicon])
    vocab = len(tokenizer)
    # "hydr" + an unclear middle (a/o, l/x, a/y, z) + "ine": between hydralazine and hydroxyzine
    unclear = ["h", "y", "d", "r", ("a", "o"), ("l", "x"), ("a", "y"), "z", "i", "n", "e"]
    clear = ["h", "y", "d", "r", "o", "x", "y", "z", "i", "n", "e"]
    log_probs = torch.stack([mixed_log_probs(tokenizer, unclear, vocab), mixed_log_probs(tokenizer, clear, vocab)])
    batch = BatchScores(["hydrxyzine", "hydroxyzine"], ranker.scores(log_probs), ranker.scores(log_probs).max(-1).values)
    unclear_result, clear_result = recogniser.results(batch, top_k=2)
    assert {c.name for c in unclear_result.candidates} == {"hydralazine", "hydroxyzine"}
    assert unclear_result.candidates[0].probability - unclear_result.candidates[1].probability < 0.3
    assert unclear_result.ambiguous
    assert clear_result.candidates[0].name == "hydroxyzine" and not clear_result.ambiguous
    assert clear_result.candidates[0].probability - clear_result.candidates[1].probability >= 0.3
    # probabilities are the softmax over the whole lexicon (3 names) at the calibration's temperature
    expected = (batch.scores[1] / recogniser.calibration.temperature).softmax(-1)
    names = [entry.name for entry in recogniser.lexicon]
    probabilities = [float(expected[names.index(candidate.name)]) for candidate in clear_result.candidates]
    assert [candidate.probability for candidate in clear_result.candidates] == pytest.approx(probabilities, abs=1e-4)


def test_a_name_outside_the_lexicon_is_not_answered_with_a_confident_wrong_drug(sound_alike_recogniser):
    recogniser = sound_alike_recogniser
    frames = [["a", "s", "p", "i", "r", "i", "n"], ["m", "e", "t", "f", "o", "r", "m", "i", "n"]]
    batch = scored(recogniser, [clip + [None] * (9 - len(clip)) for clip in frames], ["aspirin", "metformin"])
    aspirin, metformin = recogniser.results(batch, top_k=3, allow_out_of_lexicon=True)
    assert aspirin.out_of_lexicon and aspirin.decision is None and aspirin.candidates  # still listed for a UI
    assert not metformin.out_of_lexicon and metformin.decision == "metformin"
    assert not recogniser.results(batch, top_k=3)[0].out_of_lexicon  # only when asked for


def negative_log_likelihood(scores: torch.Tensor, references: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(scores.float() / temperature, references))


def assert_minimises_nll(temperature: float, scores: torch.Tensor, references: torch.Tensor) -> None:
    """The fitted temperature is a minimum of the true names' negative log-likelihood, computed here
    independently: any other temperature (nearby, 1, or far) fits no better; with too few top-1
    errors to fit one, it is 1."""
    from s2t_hf.inference.calibration import MIN_ERRORS_TO_FIT_TEMPERATURE

    if int((scores.argmax(dim=1) != references).sum()) < MIN_ERRORS_TO_FIT_TEMPERATURE:
        assert temperature == 1.0
        return
    best = negative_log_likelihood(scores, references, temperature)
    for other in [temperature * 0.9, temperature * 1.1, 1.0, temperature / 3, temperature * 3]:
        assert best <= negative_log_likelihood(scores, references, other) + 1e-6, (temperature, other)


def test_fit_calibration_saves_and_loads(tmp_path):
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, 0.9, -2.0], [0.0, -1.0, 2.5]]).repeat(5, 1)
    references = torch.tensor([0, 1, 1, 2]).repeat(5)  # row 2 is wrong: 5 errors, enough to fit a temperature
    calibration = fit_calibration(scores, references, scores.max(-1).values + 0.1, fitted_on="test")
    assert calibration.clips == 20 and calibration.fitted_on == "test" and calibration.temperature != 1.0
    assert_minimises_nll(calibration.temperature, scores, references)
    assert 0.1 < calibration.ambiguity_margin  # the one error (row 2) has the smallest margin
    calibration.save(tmp_path)
    assert Calibration.load(tmp_path) == calibration
    assert Calibration.load(tmp_path / "nothing") == Calibration()


def test_noisy_clips_teach_the_flag_while_the_clean_ones_keep_the_temperature_and_gap():
    clean = torch.tensor([[3.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, 2.6, -2.0], [0.0, -1.0, 2.5]]).repeat(5, 1)
    clean_references = torch.tensor([0, 1, 1, 2]).repeat(5)  # all right: no temperature to fit, no margin to learn
    noisy = torch.tensor([[1.0, 0.8, 0.0], [0.2, 1.0, 0.0], [1.0, 0.9, -2.0], [0.0, 0.0, 1.5]]).repeat(5, 1)
    noisy_references = torch.tensor([0, 1, 1, 2]).repeat(5)  # row 2 wrong, by a small margin
    scores, references = torch.cat([clean, noisy]), torch.cat([clean_references, noisy_references])
    own = scores.max(-1).values + torch.linspace(0.0, 2.0, len(scores))  # the noisy clips' transcripts stray further
    plain = torch.arange(len(scores)) < len(clean)
    mixed = fit_calibration(scores, references, own, "mixed", plain)
    alone = fit_calibration(clean, clean_references, own[plain], "clean")
    assert mixed.temperature == alone.temperature == 1.0  # the clean clips hold no error
    assert mixed.out_of_lexicon_gap == alone.out_of_lexicon_gap
    assert alone.ambiguity_margin == 0.0 < mixed.ambiguity_margin  # the noisy errors taught the flag
    everything = fit_calibration(scores, references, own, "all")
    assert everything.temperature != 1.0 and everything.out_of_lexicon_gap > mixed.out_of_lexicon_gap
    with pytest.raises(ValueError, match="no clip heard as recorded"):
        fit_calibration(scores, references, own, "none", torch.zeros(len(scores), dtype=torch.bool))


def length_exponent_case():
    """Raw log-likelihoods of a short (4 tokens) and a long (16 tokens) name, where only dividing
    by the length to a power between 0.3 and 0.7 ranks every clip right: the long name is said
    where |its raw score| is 4 ** 0.3 times the short one's (it loses below 0.3), the short name
    where the long one's is 4 ** 0.7 times its own (it loses above 0.7)."""
    generator = torch.Generator().manual_seed(0)
    base = -2.0 - torch.rand(20, generator=generator)
    long_said = torch.stack([base * 4 ** 0.3 * 1.05, base], dim=1)  # columns: long name, short name
    short_said = torch.stack([base * 4 ** 0.7 * 0.95, base], dim=1)
    raw = torch.cat([long_said, short_said])
    references = torch.tensor([0] * 20 + [1] * 20)
    return raw, torch.tensor([16.0, 4.0]), references


def test_the_length_exponent_is_fitted_where_it_ranks_best():
    from s2t_hf.inference.calibration import LengthTerms, fit_length_exponent

    raw, lengths, references = length_exponent_case()
    exponent, tried = fit_length_exponent(raw, lengths, references)
    assert 0.3 < exponent < 0.7
    top1 = {row["length_exponent"]: row["top1"] for row in tried}
    assert top1[exponent] == 1.0 and top1[0.0] == 0.5 and top1[1.0] == 0.5  # per letter, every short name loses
    # fit_calibration re-divides the scores it was given (per letter here) and the transcripts' alike
    own_lengths = torch.full((len(raw),), 8.0)
    own_raw = raw.max(-1).values + 1.0
    calibration = fit_calibration(raw / lengths, references, own_raw / own_lengths, "test", lengths=LengthTerms(lengths, own_lengths, 1.0))
    assert calibration.length_exponent == exponent
    scores = raw / lengths ** exponent
    gaps = own_raw / own_lengths ** exponent - scores.max(-1).values
    assert calibration.out_of_lexicon_gap == pytest.approx(fit_out_of_lexicon_gap(gaps.numpy()), rel=1e-5)
    assert fit_calibration(raw / lengths, references, own_raw / own_lengths, "test").length_exponent == 1.0  # not fitted without lengths


@pytest.fixture(scope="module")
def test_manifest(corpus, tmp_path_factory):
    corpus_dir, _ = corpus
    return corpus_dir / "manifest-test.tsv"


def test_compare_caches_predictions_as_parquet_and_a_rerun_does_no_inference(tmp_path, corpus, lexicon, test_manifest, monkeypatch):
    first = save_untrained_model(tmp_path / "first", lexicon, seed=1)
    second = save_untrained_model(tmp_path / "second", lexicon, seed=2)
    results = compare_models([str(first), str(second)], test_manifest, tmp_path / "cache", conditions=[None, 10], progress=False)
    files = sorted((tmp_path / "cache").glob("*.parquet"))
    assert len(files) == 4 and not list((tmp_path / "cache").glob("*.partial"))
    assert set(results) == {"first", "second"} and set(results["first"]) == {"clean", "10 dB"}
    clean = results["first"]["clean"]
    assert clean["n"] == len(corpus[1]["test"]) == 6 and not clean["errors"]
    # the records are what the model itself ranks for each clip, and the summary is recomputed from them
    recognised = S2T.from_pretrained(first).recognize([record["path"] for record in clean["records"]], top_k=10)
    assert [record["candidates"] for record in clean["records"]] == [[c.name for c in result.candidates] for result in recognised]
    for k in (1, 5, 10):
        hits = sum(record["reference"] in record["candidates"][:k] for record in clean["records"])
        assert clean[f"top{k}"] == pytest.approx(hits / 6), k
    assert clean["top10"] == 1.0  # 6 names in the lexicon: the spoken one is always among the 10 best
    # round trip: what the cache holds is what was predicted
    cached = PredictionCache(tmp_path / "cache").load(next(path for path in files if path.name.startswith("first-clean")))
    assert cached is not None and cached[0] == clean["records"]

    def no_inference(*args, **kwargs):
        raise AssertionError("the second run must read the cache, not load a model")

    monkeypatch.setattr(S2T, "from_pretrained", no_inference)
    again = compare_models([str(first), str(second)], test_manifest, tmp_path / "cache", conditions=[None, 10], progress=False)
    assert again["second"]["10 dB"]["top1"] == results["second"]["10 dB"]["top1"]
    assert [r["candidates"] for r in again["first"]["clean"]["records"]] == [r["candidates"] for r in clean["records"]]
    calibration = Calibration(temperature=2.0)
    calibration.save(first)  # a changed model folder is a cache miss
    with pytest.raises(AssertionError, match="read the cache"):
        compare_models([str(first)], test_manifest, tmp_path / "cache", progress=False)


def test_report_writes_markdown_and_plots(tmp_path, lexicon, test_manifest):
    model = save_untrained_model(tmp_path / "model", lexicon)
    results = compare_models([str(model)], test_manifest, tmp_path / "cache", conditions=[None, 5, "telephone"], progress=False)
    report = write_comparison_report(results, tmp_path / "report", str(test_manifest), "s2t-hf compare ...")
    text = report.read_text()
    assert "| model | clips | top-1 |" in text and "top-1 @ 5 dB" in text and "top-1 @ telephone" in text
    # the telephone records are the model's answers to the clips as ffmpeg's G.711 line carries them
    records = results["model"]["telephone"]["records"]
    heard = [(through_telephone(read_usable_audio(record["path"]), "telephone"), 16000) for record in records]
    ranked = S2T.from_pretrained(model).recognize(heard, top_k=10)
    assert [record["candidates"] for record in records] == [[c.name for c in r.candidates] for r in ranked]
    for name in ["top_k.png", "snr.png", "calibration.png", "by_voice.png"]:
        image = tmp_path / "report" / name
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in text


def test_cli_compare_prints_one_table_and_writes_the_report(tmp_path, untrained_model, test_manifest):
    from .test_cli import cli

    printed = cli("compare", untrained_model, "--manifest", test_manifest, "--cache", tmp_path / "cache", "--report", tmp_path / "r", "--snr", "10").stdout
    assert printed.count("| model |") == 1 and "top-1 @ 10 dB" in printed
    assert (tmp_path / "r" / "report.md").is_file()


def test_cli_calibrate_saves_what_the_library_fits_beside_the_model(untrained_model, untrained_model_copy, test_manifest):
    from s2t_hf.evaluation.manifests import read_evaluation_manifest
    from s2t_hf.evaluation.predictions import calibrate_recogniser

    from .test_cli import cli

    model = untrained_model_copy  # calibrate writes calibration.json beside the model: a copy, not the session model
    calibrated = cli("calibrate", model, "--manifest", test_manifest).stdout
    saved = Calibration.load(model)
    assert saved.clips == 6 and saved.fitted_on == str(test_manifest)
    assert f"temperature {saved.temperature:.3f}" in calibrated and f"({saved.clips} clips: {test_manifest})" in calibrated
    rows = read_evaluation_manifest(test_manifest)
    expected = calibrate_recogniser(S2T.from_pretrained(untrained_model), rows, fitted_on=str(test_manifest), progress=False)
    assert saved.fitted_on == expected.fitted_on and saved.clips == expected.clips
    # an untrained model's likelihood is flat near its optimum (T ~ 15): the last float bits of the
    # scores (another process, other threads) move Brent's answer by a few 1e-4
    for field in ["temperature", "ambiguity_margin", "out_of_lexicon_gap"]:
        assert getattr(saved, field) == pytest.approx(getattr(expected, field), rel=1e-2), field
    assert S2T.from_pretrained(model).calibration == saved  # found where the recogniser looks


def test_calibration_hears_each_clip_under_each_condition(untrained_model, untrained_model_copy, test_manifest):
    from s2t_hf.audio.channels import apply_condition
    from s2t_hf.evaluation.manifests import read_evaluation_manifest
    from s2t_hf.evaluation.predictions import calibration_scores

    from .test_cli import cli

    rows = read_evaluation_manifest(test_manifest)
    recogniser = S2T.from_pretrained(untrained_model)
    conditions = [None, 0.0, "telephone"]
    scored = calibration_scores(recogniser, rows, progress=False, conditions=conditions)
    assert sorted(entry[0] for entry in scored) == list(range(3 * len(rows)))
    by_position = {entry[0]: entry for entry in scored}
    clip = read_usable_audio(rows[1]["path"])
    for number, condition in enumerate(conditions):  # each entry: the clip as heard under its condition
        expected = recogniser.score_batch([apply_condition(clip, condition, seed=1)]).scores[0].tolist()
        assert by_position[number * len(rows) + 1][1] == pytest.approx(expected, abs=1e-4), condition
    assert by_position[1][1] != pytest.approx(by_position[len(rows) + 1][1], abs=1e-3)
    # the command line: every clip clean, at 0 dB and through the telephone, saved with what it was fitted on
    printed = cli("calibrate", untrained_model_copy, "--manifest", test_manifest, "--snr", "0", "--channel", "telephone").stdout
    saved = Calibration.load(untrained_model_copy)
    assert saved.clips == 3 * len(rows) and saved.fitted_on == f"{test_manifest} (clean, 0 dB, telephone)"
    assert f"({saved.clips} clips: {saved.fitted_on})" in printed
