"""Sentences around drug names: carrier phrases, drug-free sentences, exact name times."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import soundfile
from datasets import load_from_disk

from s2t_hf.speech.corpus import build_corpus
from s2t_hf.speech.sentences import DRUG_FREE, WITH_NAMES, common_words, plan_sentences, render
from s2t_hf.speech.synthesis import read_manifest
from s2t_hf.text.lexicon import build_lexicon, load_lexicon, normalize_name

from .conftest import TEST_NAMES, require_program


def test_templates_put_names_at_the_start_middle_and_end_and_speak_numbers_as_words():
    lexicon = build_lexicon(TEST_NAMES)
    rng = random.Random(0)
    places = set()
    for template in WITH_NAMES:
        sentence = render(template, lexicon[:2], rng)
        normalize_name(sentence.text)  # letters and spaces only: every piece can be spoken and labelled
        assert not any(character.isdigit() for character in sentence.text)
        for position in sentence.names:
            places.add("start" if position == 0 else "end" if position == len(sentence.pieces) - 1 else "middle")
    assert places == {"start", "middle", "end"}
    assert sum(len(render(template, lexicon[:2], rng).names) == 2 for template in WITH_NAMES) >= 3  # two names in one sentence


def test_a_plan_uses_every_name_and_holds_drug_free_sentences():
    lexicon = build_lexicon(TEST_NAMES)
    sentences = plan_sentences(lexicon, count=30, drug_free=5, seed=1)
    assert len(sentences) == 35 and sum(not sentence.names for sentence in sentences) == 5
    spoken = {sentence.pieces[index] for sentence in sentences for index in sentence.names}
    assert spoken == set(TEST_NAMES)
    assert {sentence.text for sentence in sentences if not sentence.names} <= set(DRUG_FREE)


def test_ordinary_words_said_alone_follow_the_plan_without_changing_it():
    lexicon = build_lexicon(TEST_NAMES)
    without = plan_sentences(lexicon, count=30, drug_free=5, seed=1)
    with_words = plan_sentences(lexicon, count=30, drug_free=5, seed=1, words=40)
    assert with_words[:35] == without  # the cached sentences keep their numbers
    words = [sentence.pieces for sentence in with_words[35:]]
    assert len(words) == len({piece for piece, in words}) == 40 and all(not sentence.names for sentence in with_words[35:])
    assert plan_sentences(lexicon, count=30, drug_free=5, seed=2, words=40)[35:] != with_words[35:]  # each voice its own words


def template_pattern(template: str) -> str:
    """A name template as a regular expression: a name slot is one word (captured), a dose,
    unit, frequency or route slot any words."""
    pattern = re.escape(template)
    for slot in ["{drug}", "{drug2}"]:
        pattern = pattern.replace(re.escape(slot), r"([a-z]+)")
    return re.sub(r"\\\{(dose|unit|frequency|route)\\\}", "[a-z ]+", pattern)


def test_decoys_put_ordinary_words_in_the_name_templates_slots_and_follow_the_plan_without_changing_it():
    lexicon = build_lexicon(TEST_NAMES)
    with_words = plan_sentences(lexicon, count=30, drug_free=5, seed=1, words=40)
    with_decoys = plan_sentences(lexicon, count=30, drug_free=5, seed=1, words=40, decoys=25)
    assert with_decoys[:75] == with_words  # the cached sentences and words keep their numbers
    decoys, words, used = with_decoys[75:], set(common_words()), set()
    assert len(decoys) == 25 and all(not decoy.names for decoy in decoys)  # drug-free: nothing for a spotter to find
    for decoy in decoys:
        matches = [match for template in WITH_NAMES if (match := re.fullmatch(template_pattern(template), decoy.text))
                   and set(match.groups()) <= words & set(decoy.pieces)]  # each slot an ordinary word, a piece of its own
        assert matches, decoy.text
        used.add(matches[0].re.pattern)
    assert len(used) >= 5  # many templates, not one
    assert plan_sentences(lexicon, count=30, drug_free=5, seed=2, words=40, decoys=25)[75:] != decoys


def test_the_common_words_are_speakable_and_none_is_a_drug_name_or_a_real_voice_check_word():
    words = common_words()
    assert len(words) == len(set(words)) >= 1000
    assert all(normalize_name(word) == word for word in words)
    drugs = {entry.label for name in ["brand", "generic", "real-voice-words"] for entry in load_lexicon(name)}
    assert not drugs & set(words)


def test_a_corpus_with_sentences_adds_them_to_training_and_lists_every_names_time(tmp_path):
    require_program("espeak-ng")
    require_program("flite")
    lexicon = build_lexicon(TEST_NAMES)
    voices = ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "flite:slt", "flite:kal16"]
    splits = build_corpus(lexicon, voices, tmp_path, ["flite:kal16"], ["flite:slt"], progress=False,
                          sentences_per_voice=8, drug_free_sentences_per_voice=2, drug_free_words_per_voice=3,
                          decoy_sentences_per_voice=2)
    assert len(splits["train"]) == 2 * 6 + 2 * 15  # the names of two training voices, their sentences, words and decoys
    assert len(splits["validation"]) == len(splits["test"]) == 6  # held-out splits stay isolated names
    assert len(load_from_disk(str(tmp_path / "dataset"))["train"]) == len(splits["train"])  # what other processes read
    rows = read_manifest(tmp_path / "manifest-sentences-test.tsv")
    assert len(rows) == 15 and {row["voice"] for row in rows} == {"flite:slt"}
    for row in rows:
        audio, rate = soundfile.read(tmp_path / row["path"], dtype="float32")
        assert rate == 16000 and abs(len(audio) / rate - float(row["duration"])) < 0.01
        for name in json.loads(row["names"]):
            # the name's own clip is exactly the audio between its times
            clip, _ = soundfile.read(tmp_path / "clips" / "flite_slt" / f"{normalize_name(name['name']).replace(' ', '_')}.wav", dtype="float32")
            start = round(name["start"] * rate)
            assert np.allclose(audio[start : start + len(clip)], clip, atol=1e-4)
            assert abs(name["end"] - name["start"] - len(clip) / rate) < 1e-3
            assert name["name"] in row["text"]
    assert sum(not json.loads(row["names"]) for row in rows) == 2 + 3 + 2
    assert sum(row["text"] in common_words() for row in rows) == 3
