import numpy as np
import pytest
import soundfile

from s2t_hf.audio.reading import AudioError, load_audio


def test_reads_any_rate_and_channels_as_16k_mono(tmp_path):
    stereo = np.stack([np.sin(np.linspace(0, 400, 48000)), np.zeros(48000)], axis=1).astype(np.float32) * 0.5
    path = tmp_path / "stereo48k.wav"
    soundfile.write(path, stereo, 48000, subtype="PCM_24")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(16000, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.25, abs=0.02)  # downmixed: mean of the two channels


def test_reads_bytes_and_arrays_with_their_rate(tmp_path):
    tone = (np.sin(np.linspace(0, 200, 8000)) * 0.3).astype(np.float32)
    path = tmp_path / "tone8k.flac"
    soundfile.write(path, tone, 8000)
    from_bytes = load_audio(path.read_bytes())
    from_array = load_audio(tone, sampling_rate=8000)
    from_pair = load_audio((tone, 8000))
    assert len(from_bytes) == len(from_array) == len(from_pair) == 16000
    np.testing.assert_allclose(from_bytes, from_array, atol=1e-3)


def test_int16_arrays_are_scaled():
    assert np.abs(load_audio(np.array([0, 16384, -32767], dtype=np.int16), sampling_rate=16000)).max() <= 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.wav", "does not exist"),
        (lambda d: (d / "text.wav").write_text("not audio") and d / "text.wav", "cannot be read as audio"),
        (lambda d: (d / "empty.wav").write_bytes(b"") or d / "empty.wav", "the file is empty"),
    ],
)
def test_bad_files_name_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=message) as error:
        load_audio(path)
    assert path.name in str(error.value)


def test_zero_length_and_nan_arrays_are_rejected():
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros(0, np.float32), sampling_rate=16000)
    with pytest.raises(AudioError, match="NaN"):
        load_audio(np.array([0.0, np.nan], np.float32), sampling_rate=16000)
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio(np.zeros(10, np.float32))
