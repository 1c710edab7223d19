"""Test channels (white noise at an SNR, ffmpeg's telephone codecs; pink, babble, hum and music
noise; reverb, quiet, clipped) and the Telephone augmentation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile
from scipy.signal import welch

from s2t_hf.audio.augmentation import AugmentationError, build_augmenter
from s2t_hf.audio.channels import BABBLE, ChannelError, apply_condition, condition_name, parse_condition, through_telephone


def white(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def share_of_power(audio: np.ndarray, low: float, high: float) -> float:
    frequencies, power = welch(audio, 16000, nperseg=512)
    return float(power[(frequencies >= low) & (frequencies < high)].sum() / power.sum())


def test_white_noise_is_added_at_exactly_the_snr_and_the_same_for_the_same_seed():
    clip = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    noisy = apply_condition(clip, 10.0, seed=3)
    snr = 10 * np.log10(np.mean(clip**2) / np.mean((noisy - clip) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)
    np.testing.assert_array_equal(noisy, apply_condition(clip, 10.0, seed=3))
    assert not np.array_equal(noisy, apply_condition(clip, 10.0, seed=4))
    assert apply_condition(clip, None, seed=3) is clip
    assert [condition_name(c) for c in (None, 10.0, 2.5, "gsm")] == ["clean", "10 dB", "2.5 dB", "gsm"]


@pytest.mark.parametrize("codec", ["telephone", "gsm"])
def test_telephone_codecs_keep_the_length_and_only_the_telephone_band(codec):
    audio = white()
    heard = through_telephone(audio, codec)
    assert heard.shape == audio.shape and heard.dtype == np.float32
    assert share_of_power(audio, 4200, 8000) > 0.4  # white noise: half its power above 4 kHz
    assert share_of_power(heard, 4200, 8000) < 0.01
    assert share_of_power(heard, 300, 3400) > 0.9


def test_the_two_codecs_differ_and_an_unknown_one_is_named():
    audio = white(seed=1)
    assert np.abs(through_telephone(audio, "telephone") - through_telephone(audio, "gsm")).mean() > 0.01
    with pytest.raises(ChannelError, match="'amr'.*gsm"):
        through_telephone(audio, "amr")


def test_telephone_augmentation_narrows_the_band_and_mu_law_quantises():
    audio = white(seed=2)
    random.seed(0)
    band_only = build_augmenter({"Telephone": {"p": 1.0, "mu_law_p": 0.0}})(audio)
    random.seed(0)
    mu_law = build_augmenter({"Telephone": {"p": 1.0, "mu_law_p": 1.0}})(audio)
    for heard in (band_only, mu_law):
        assert heard.shape == audio.shape and heard.dtype == np.float32
        assert share_of_power(heard, 4200, 8000) < 0.01 and share_of_power(heard, 0, 150) < 0.01
    # same band (same seed); mu-law adds 8-bit quantisation noise on top of it
    difference = mu_law - band_only
    assert 1e-4 < np.sqrt(np.mean(difference**2)) / np.sqrt(np.mean(band_only**2)) < 0.2


def test_telephone_augmentation_refuses_edges_that_do_not_rise():
    with pytest.raises(AugmentationError, match="Telephone band edges"):
        build_augmenter({"Telephone": {"min_low_hz": 500.0, "max_low_hz": 300.0}})


def test_conditions_parse_as_recipes_and_command_lines_give_them():
    given = ["clean", None, "10", 0, "2.5", "gsm", "telephone"]
    assert [parse_condition(text) for text in given] == [None, None, 10.0, 0.0, 2.5, "gsm", "telephone"]
    with pytest.raises(ChannelError, match="'landline'.*an SNR in dB"):
        parse_condition("landline")


def speech_like(seconds: float = 2.0) -> np.ndarray:
    """A tone whose loudness comes and goes, at a speech-like level."""
    time = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * time) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * time))).astype(np.float32)


@pytest.mark.parametrize("kind", ["pink", "babble", "hum", "music"])
@pytest.mark.parametrize("snr", [10.0, 0.0])
def test_each_noise_is_added_at_exactly_the_snr_and_the_same_for_the_same_seed(kind, snr):
    clip = speech_like()
    condition = parse_condition(f"{kind}@{snr:g}")
    noisy = apply_condition(clip, condition, seed=3)
    assert noisy.shape == clip.shape and noisy.dtype == np.float32
    measured = 10 * np.log10(np.mean(clip**2) / np.mean((noisy - clip) ** 2))
    assert measured == pytest.approx(snr, abs=0.05)
    np.testing.assert_array_equal(noisy, apply_condition(clip, condition, seed=3))
    assert not np.array_equal(noisy, apply_condition(clip, condition, seed=4))
    assert condition_name(condition) == f"{kind} {snr:g} dB"


def noise_of(kind: str, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    silence_plus_tiny = np.full(int(16000 * seconds), 1e-3, dtype=np.float32)  # constant: the noise is all that varies
    return apply_condition(silence_plus_tiny, f"{kind}@0", seed) - silence_plus_tiny


def test_pink_noise_falls_3_db_an_octave():
    frequencies, power = welch(noise_of("pink"), 16000, nperseg=4096)
    low = power[(frequencies >= 100) & (frequencies < 200)].mean()
    high = power[(frequencies >= 3200) & (frequencies < 6400)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(15.0, abs=2.5)  # 5 octaves apart: 15 dB; white noise: 0


def test_hum_is_mains_frequency_and_harmonics_and_music_is_tonal():
    for seed in range(4):
        frequencies, power = welch(noise_of("hum", seed=seed), 16000, nperseg=16000)
        strongest = frequencies[np.argmax(power)]
        assert strongest in (50.0, 60.0)
        assert share_of_power(noise_of("hum", seed=seed), 0, 400) > 0.99  # the 5th harmonic of 60 Hz is 300 Hz
    # spectral flatness (geometric over arithmetic mean of the power spectrum): 1 for white
    # noise, near 0 for tones; pink noise 0.37, music under 1e-3
    flatness = {kind: welch(noise_of(kind), 16000, nperseg=4096)[1] for kind in ("music", "pink")}
    flatness = {kind: float(np.exp(np.mean(np.log(power + 1e-30))) / np.mean(power)) for kind, power in flatness.items()}
    assert flatness["music"] < 1e-3 < 0.1 < flatness["pink"]


def test_babble_is_the_shipped_recording_of_other_voices_not_a_stationary_noise():
    audio, rate = soundfile.read(BABBLE, dtype="float32")
    assert rate == 16000 and len(audio) >= 20 * 16000
    babble = noise_of("babble", seconds=10.0)
    levels = [np.sqrt(np.mean(part**2)) for part in np.array_split(babble, 100)]  # 100-ms stretches
    assert max(levels) / min(levels) > 2.0  # speech comes and goes; white or pink noise holds its level
    assert share_of_power(babble, 100, 4000) > 0.8  # where voices are


def test_reverb_keeps_length_and_power_and_leaves_a_decaying_tail():
    click = np.zeros(16000, dtype=np.float32)
    click[0] = 1.0
    heard = apply_condition(click, "reverb", seed=0)
    assert heard.shape == click.shape
    assert np.mean(heard**2) == pytest.approx(np.mean(click**2), rel=1e-3)
    energy = [float(np.sum(heard[start : start + 1600] ** 2)) for start in range(1600, 9600, 1600)]  # 0.1 s each, after the direct sound
    assert all(later < earlier for earlier, later in zip(energy, energy[1:]))
    assert np.abs(heard[int(0.6 * 16000) + 1 :]).max() < 1e-6  # a 0.6-s room: nothing after it (FFT rounding aside)
    np.testing.assert_array_equal(heard, apply_condition(click, "reverb", seed=0))


def test_quiet_and_clipped_change_the_level():
    clip = speech_like()
    quiet = apply_condition(clip, "quiet", seed=0)
    assert 10 * np.log10(np.mean(quiet**2) / np.mean(clip**2)) == pytest.approx(-30.0, abs=0.1)
    np.testing.assert_allclose(quiet * 32767, np.round(quiet * 32767), atol=1e-3)  # on the 16-bit grid
    clipped = apply_condition(clip, "clipped", seed=0)
    assert np.abs(clipped).max() == 1.0 and np.mean(np.abs(clipped) == 1.0) > 0.2
    assert np.all(np.sign(clipped) == np.sign(clip))


def test_noises_and_channels_parse_and_bad_ones_are_named():
    given = ["babble@10", "pink@0", "hum@2.50", "music@-5", "reverb", "quiet", "clipped"]
    assert [parse_condition(text) for text in given] == ["babble@10", "pink@0", "hum@2.5", "music@-5", "reverb", "quiet", "clipped"]
    with pytest.raises(ChannelError, match="babble@10"):
        parse_condition("babble")  # no SNR: says how to give one
    with pytest.raises(ChannelError, match="unknown noise 'traffic'"):
        parse_condition("traffic@10")
    with pytest.raises(ChannelError, match="must be a number"):
        parse_condition("pink@loud")


def test_the_command_line_takes_noises_and_channels_in_order_and_names_a_bad_noise(capsys):
    from s2t_hf.cli import build_parser, requested_conditions

    parser = build_parser()
    args = parser.parse_args(["compare", "m", "--manifest", "x.tsv", "--snr", "10", "--noise", "babble@10", "pink@0",
                              "--channel", "reverb", "gsm", "clipped"])
    assert requested_conditions(args) == [None, 10.0, "babble@10", "pink@0", "reverb", "gsm", "clipped"]
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "m", "--manifest", "x.tsv", "--noise", "babble"])
    assert "babble@10" in capsys.readouterr().err
