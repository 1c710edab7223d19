"""Real people, through the whole evaluation path: the packaged pretrained Whisper tiny.en,
zero-shot, ranks the 1,146 names of the common drug lexicon plus the real-voice-check words for
12 recordings of real speakers (tests/data/real-voice-words: never trained on)."""

from pathlib import Path

import pytest

from s2t_hf.evaluation.predictions import evaluate_manifest
from s2t_hf.text.lexicon import load_lexicon

REAL = Path(__file__).parent / "data" / "real-voice-words" / "manifest.tsv"


@pytest.fixture(scope="module")
def zero_shot_tiny_en(tmp_path_factory):
    from tests.test_whisper_import import require_wheel

    require_wheel("tiny.en")
    import os

    from s2t_hf.inference.recognizer import S2T

    os.environ["S2T_HF_CACHE"] = str(tmp_path_factory.mktemp("packaged"))  # imported afresh, as a user's first use
    try:
        return S2T.from_pretrained("packaged:whisper-tiny.en", lexicon=load_lexicon("common", extra="real-voice-words"))
    finally:
        del os.environ["S2T_HF_CACHE"]


def test_the_real_voice_words_join_the_drug_lexicon():
    lexicon = load_lexicon("common", extra="real-voice-words")
    labels = [entry.label for entry in lexicon]
    assert len(labels) == len(set(labels)) == 1128 + 18 and labels[-18:][:3] == ["zero", "one", "two"]
    assert load_lexicon("common", limit=5, extra="real-voice-words")[5].label == "zero"


def test_pretrained_whisper_hears_real_people_among_the_drug_names(zero_shot_tiny_en):
    summary = evaluate_manifest(zero_shot_tiny_en, REAL)
    assert summary["n"] == 12 and not summary["errors"]
    assert summary["top1"] >= 0.75, summary  # zero-shot tiny.en, 30-s window; measured: see the README's real-voice table
