"""Test channels (white noise at an SNR, ffmpeg's telephone codecs) and the Telephone augmentation."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.signal import welch

from s2t_hf.audio.augmentation import AugmentationError, build_augmenter
from s2t_hf.audio.channels import ChannelError, apply_condition, condition_name, parse_condition, through_telephone


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
