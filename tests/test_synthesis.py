"""The corpus cache: nothing synthesised twice, nothing half-written left behind."""

import pytest

from s2t_hf.speech import tts
from s2t_hf.speech.synthesis import MANIFEST_COLUMNS, TEMP_SUFFIX, clip_path, read_manifest, synthesize_corpus
from s2t_hf.speech.tts import Voice
from s2t_hf.text.lexicon import build_lexicon

from .conftest import require_program


@pytest.fixture
def counting_espeak(monkeypatch):
    """Count how many texts the espeak-ng engine is asked to speak."""
    require_program("espeak-ng")
    engine = tts.get_engine("espeak-ng")
    spoken = []
    original = engine.synthesize

    def counting(items, voice, timeout):
        spoken.extend(text for text, _ in items)
        return original(items, voice, timeout)

    monkeypatch.setattr(engine, "synthesize", counting)
    return spoken


def test_rerun_synthesises_only_what_is_missing(tmp_path, counting_espeak):
    lexicon = build_lexicon(["metformin", "warfarin", "heparin"])
    voices = [Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb", rate=1.2)]
    first = synthesize_corpus(lexicon, voices, tmp_path, progress=False)
    assert len(first) == 6 and len(counting_espeak) == 6

    (tmp_path / clip_path(voices[1], lexicon[1])).unlink()  # as if the run had died before this clip
    (tmp_path / "clips" / "junk" ).mkdir()
    (tmp_path / "clips" / "junk" / ("half" + TEMP_SUFFIX)).write_bytes(b"RIFF")
    counting_espeak.clear()
    second = synthesize_corpus(lexicon, voices, tmp_path, progress=False)
    assert counting_espeak == ["warfarin"]
    assert len(second) == 6
    assert not list(tmp_path.glob(f"clips/*/*{TEMP_SUFFIX}"))


def test_manifest_records_every_clip(tmp_path):
    require_program("espeak-ng")
    lexicon = build_lexicon(["Metformin", "St. John's wort"])
    synthesize_corpus(lexicon, [Voice("espeak-ng", "en-us")], tmp_path, progress=False)
    rows = read_manifest(tmp_path / "manifest.tsv")
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert [(row["text"], row["label"], row["voice"], row["engine"]) for row in rows] == [
        ("Metformin", "metformin", "espeak-ng:en-us", "espeak-ng"),
        ("St. John's wort", "st johns wort", "espeak-ng:en-us", "espeak-ng"),
    ]
    assert all((tmp_path / row["path"]).is_file() and float(row["duration"]) > 0.2 for row in rows)


def test_a_failing_name_is_skipped_and_the_rest_continue(tmp_path, monkeypatch):
    require_program("espeak-ng")
    engine = tts.get_engine("espeak-ng")
    original = engine.command

    def broken_for_heparin(text, path, voice):
        return ["false"] if text == "heparin" else original(text, path, voice)

    monkeypatch.setattr(engine, "command", broken_for_heparin)
    clips = synthesize_corpus(build_lexicon(["metformin", "heparin", "warfarin"]), [Voice("espeak-ng", "en-us")], tmp_path, progress=False)
    assert [clip.label for clip in clips] == ["metformin", "warfarin"]
