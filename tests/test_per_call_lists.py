"""Per-call lists: a candidate list restricts, a prior re-weights, the lexicon for one call, and
a brand result reports its generic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from s2t_hf import S2T
from s2t_hf.text.lexicon import LexiconError, build_lexicon

from .conftest import TEST_NAMES


def clip(seed: int, seconds: float = 1.2) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    samples = int(seconds * 16000)
    return (0.1 * rng.standard_normal(samples) * np.hanning(samples)).astype(np.float32), 16000


def full_probabilities(recogniser: S2T, audio) -> dict[str, tuple[float, float]]:
    """name -> (score, probability) over the whole lexicon."""
    result = recogniser.recognize(audio, top_k=len(recogniser.lexicon))
    return {candidate.name: (candidate.score, candidate.probability) for candidate in result.candidates}


@pytest.fixture(scope="module")
def recogniser(untrained_model):
    model = S2T.from_pretrained(untrained_model)
    model.calibration.temperature = 1.7  # probabilities at a fitted temperature, not 1
    return model


def test_candidates_rank_only_the_list_with_the_same_scores_renormalised(recogniser):
    audio = clip(0)
    full = full_probabilities(recogniser, audio)
    listed = ["warfarin", "Metformin", "lisinopril"]  # any spelling of a lexicon name
    result = recogniser.recognize(audio, top_k=5, candidates=listed)
    assert sorted(candidate.name for candidate in result.candidates) == ["lisinopril", "metformin", "warfarin"]
    total = sum(full[name][1] for name in ("lisinopril", "metformin", "warfarin"))
    for candidate in result.candidates:
        assert candidate.score == pytest.approx(full[candidate.name][0], abs=1e-4)  # exact, not approximated
        assert candidate.probability == pytest.approx(full[candidate.name][1] / total, abs=2e-4)
    assert recogniser.recognize(audio, candidates=listed) is not None and len(recogniser._restricted) == 1  # built once, reused


def test_a_candidate_outside_the_lexicon_is_ranked_without_retraining(recogniser):
    result = recogniser.recognize(clip(1), top_k=3, candidates=["metformin", "heparin"])
    assert {candidate.name for candidate in result.candidates} == {"metformin", "heparin"}
    assert "heparin" not in TEST_NAMES


def test_a_prior_multiplies_probabilities_and_zero_excludes(recogniser):
    audio = clip(2)
    full = full_probabilities(recogniser, audio)
    last = min(full, key=lambda name: full[name][1])  # the least likely name, weighed up 50 times
    prior = {last: 50.0, "ibuprofen": 0.0}
    result = recogniser.recognize(audio, top_k=len(TEST_NAMES), prior=prior)
    # p(name | audio) x weight, renormalised; from the scores (probabilities are rounded to 4 places, and x50 would amplify that)
    weighted = {name: math.exp(score / recogniser.calibration.temperature) * prior.get(name, 1.0) for name, (score, _) in full.items()}
    assert "ibuprofen" not in [candidate.name for candidate in result.candidates]
    for candidate in result.candidates:
        assert candidate.probability == pytest.approx(weighted[candidate.name] / sum(weighted.values()), abs=2e-4)
        assert candidate.score == pytest.approx(full[candidate.name][0], abs=1e-4)  # the model's own score is reported
    probabilities = [candidate.probability for candidate in result.candidates]
    assert probabilities == sorted(probabilities, reverse=True)


def test_bad_priors_are_refused_naming_the_name(recogniser):
    with pytest.raises(LexiconError, match="'heparin'"):
        recogniser.recognize(clip(3), prior={"heparin": 2.0})
    with pytest.raises(ValueError, match="'metformin' is -1"):
        recogniser.recognize(clip(3), prior={"metformin": -1})


def test_whisper_scores_a_name_the_prior_weighs_up_exactly_even_where_the_search_pruned_it(tmp_path, lexicon):
    from .families import whisper_tiny_en

    recogniser = S2T.from_pretrained(whisper_tiny_en(tmp_path / "tiny"), lexicon=lexicon)
    recogniser.ranker.max_gap = 1e-3  # rank only the best name: the others are left at -inf
    audio = clip(4)
    pruned = recogniser.score_batch([audio[0]], top_k=1).scores[0]
    left_out = [recogniser.lexicon[index].name for index in range(len(lexicon)) if not math.isfinite(pruned[index])]
    assert left_out, "the search ranked every name: nothing to test"
    boosted = left_out[0]
    exhaustive = S2T(recogniser.model, recogniser.processor, build_lexicon([boosted]))
    exhaustive.ranker.prune_margin = None
    exact = float(exhaustive.score_batch([audio[0]], top_k=1).scores[0, 0])
    result = recogniser.recognize(audio, top_k=3, prior={boosted: 1e12})
    assert result.candidates[0].name == boosted and result.candidates[0].score == pytest.approx(exact, abs=1e-3)
    assert torch.isfinite(torch.tensor(exact))


def test_cli_recognize_with_candidates_and_prior_and_a_brand_with_its_generic(tmp_path, corpus, capsys):
    from s2t_hf.cli import main

    from .conftest import save_untrained_model

    model = save_untrained_model(tmp_path / "model", build_lexicon(["Lipitor", "Glucophage", "warfarin"]))
    wav = sorted(corpus[0].glob("clips/*/*.wav"))[0]
    prior = tmp_path / "prior.tsv"
    prior.write_text("warfarin\t0\n")
    assert main(["recognize", str(model), str(wav), "--json", "--candidates", "Lipitor,warfarin", "--prior", str(prior)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["generic"]) for c in record["candidates"]] == [("Lipitor", "atorvastatin")]
    assert main(["recognize", str(model), str(wav), "--candidates", "Glucophage"]) == 0
    assert "Glucophage -> metformin (100.0%)" in capsys.readouterr().out
