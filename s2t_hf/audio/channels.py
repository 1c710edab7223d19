"""What a clip sounds like after a channel: white noise at a set SNR, or a telephone line.

Used to *test* robustness (`s2t-hf compare --snr 10 --channel telephone gsm`), so the telephone
goes through ffmpeg's own codecs rather than our code: the 16 kHz clip is band-limited to
300-3,400 Hz, resampled to 8 kHz, encoded as G.711 mu-law (`telephone`, the classic landline
and most VoIP trunks) or GSM 06.10 full rate (`gsm`, the 2G mobile codec) and decoded back to
16 kHz. Training-time augmentation (`audio/augmentation.py: Telephone`) is a separate, cheaper
numpy model of the band and mu-law, so a test through ffmpeg's GSM is a channel no training
clip went through.

What callers sound like beyond white noise and telephone lines (`--noise KIND@SNR`,
`--channel reverb quiet clipped`), each the same for every model and rerun (a per-clip seed):

* `pink@SNR`: 1/f noise (fans, traffic, rain: most of its power in the low frequencies);
* `babble@SNR`: a room of people talking: 30 s of six other synthetic voices saying ordinary
  sentences (`babble.ogg`, made by `scripts/make_babble.py`), a random stretch per clip;
* `hum@SNR`: mains hum, 50 or 60 Hz with its first harmonics (a cheap headset, a fluorescent
  light);
* `music@SNR`: music-like tones, a melody and a bass line of harmonic notes on a pentatonic
  scale (hold music, a radio);
* `reverb`: a room of 0.6 s reverberation time: the clip convolved with exponentially decaying
  noise after the direct sound;
* `quiet`: 30 dB down and stored as 16-bit PCM (a caller far from the microphone: fewer levels
  left for the speech); `clipped`: 20 dB up, cut at full scale (a caller shouting into it).

The SNR is relative to the whole clip's power, as for white noise. None of these is used in
training by the recipes, so each is a condition the model never heard.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import fftconvolve

from .reading import SAMPLING_RATE

# name -> (ffmpeg encoder, container format it is written in)
TELEPHONE_CODECS = {"telephone": ("pcm_mulaw", "wav"), "gsm": ("libgsm", "gsm")}
TELEPHONE_BAND = "highpass=f=300,lowpass=f=3400"
NOISES = ("pink", "babble", "hum", "music")  # --noise KIND@SNR (white noise: --snr)
CHANNELS = (*TELEPHONE_CODECS, "reverb", "quiet", "clipped")
BABBLE = Path(__file__).with_name("babble.ogg")
REVERB_SECONDS = 0.6  # RT60 of the `reverb` room: a living room or a small office


class ChannelError(ValueError):
    """A channel that cannot be simulated (unknown name, ffmpeg missing or failing)."""


def add_white_noise(clip: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at exactly `snr_db` relative to the clip's power, from a per-clip seed, so
    that every model (and every rerun) hears the same noisy clip."""
    power = float(np.mean(clip**2)) or 1e-10
    noise = np.random.default_rng(seed).standard_normal(len(clip)).astype(np.float32)
    return clip + noise * np.sqrt(power / 10 ** (snr_db / 10))


def at_snr(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clip` with `noise` added at exactly `snr_db` relative to the clip's power."""
    power = float(np.mean(clip**2)) or 1e-10
    noise_power = float(np.mean(noise**2)) or 1e-10
    return (clip + noise * np.sqrt(power / (noise_power * 10 ** (snr_db / 10)))).astype(np.float32)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise whose spectrum is scaled by 1/sqrt(f) (power falls 3 dB an octave)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1 / SAMPLING_RATE)
    spectrum /= np.sqrt(np.maximum(frequencies, 20.0))  # flat below 20 Hz: no infinite DC
    return np.fft.irfft(spectrum, length)


@functools.cache
def _babble() -> np.ndarray:
    audio, rate = soundfile.read(BABBLE, dtype="float32")
    if rate != SAMPLING_RATE:
        raise ChannelError(f"{BABBLE} is at {rate} Hz, not {SAMPLING_RATE}: remake it with scripts/make_babble.py")
    return audio


def looped(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` samples of `audio` from a random offset, wrapping round to its start as often as needed."""
    return np.resize(np.roll(audio, -int(rng.integers(len(audio)))), length)


def babble(length: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of the babble recording (looped if the clip is longer)."""
    return looped(_babble(), length, rng)


def hum(length: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics up to the 5th, amplitudes falling as 1/k, random phases."""
    base = float(rng.choice([50.0, 60.0]))
    time = np.arange(length) / SAMPLING_RATE
    return sum(np.sin(2 * np.pi * k * base * time + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))


def music(length: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like tones: a melody (notes of 0.15-0.4 s) and a bass line (0.4-0.8 s) on a major
    pentatonic scale, each note three harmonics under a 10-ms attack and an exponential decay."""
    scale = np.array([0, 2, 4, 7, 9])
    result = np.zeros(length)
    for octave_low, shortest, longest, level in ((5, 0.15, 0.4, 1.0), (3, 0.4, 0.8, 0.7)):
        start = 0
        while start < length:
            size = int(rng.uniform(shortest, longest) * SAMPLING_RATE)
            midi = 12 * (octave_low + int(rng.integers(2))) + int(rng.choice(scale))
            frequency = 440.0 * 2 ** ((midi - 69) / 12)
            time = np.arange(min(size, length - start)) / SAMPLING_RATE
            envelope = np.minimum(time / 0.01, 1.0) * np.exp(-3.0 * time / (size / SAMPLING_RATE))
            note = sum(np.sin(2 * np.pi * k * frequency * time) / k for k in (1, 2, 3))
            result[start : start + len(time)] += level * envelope * note
            start += size
    return result


def reverberate(clip: np.ndarray, rng: np.random.Generator, seconds: float = REVERB_SECONDS) -> np.ndarray:
    """The clip in a room of reverberation time `seconds` (RT60: the tail falls 60 dB in that
    time): convolved with the direct sound plus exponentially decaying Gaussian noise, at the
    clip's power, its length kept."""
    time = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    response = rng.standard_normal(len(time)) * np.exp(-6.9 * time / seconds) * 0.1
    response[0] = 1.0
    wet = fftconvolve(clip, response)[: len(clip)]
    power, wet_power = float(np.mean(clip**2)), float(np.mean(wet**2)) or 1e-10
    return (wet * np.sqrt(power / wet_power)).astype(np.float32)


NOISE_MAKERS = {"pink": pink_noise, "babble": babble, "hum": hum, "music": music}


def _ffmpeg(arguments: list[str], data: bytes, what: str) -> bytes:
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise ChannelError(f"the {what} channel needs ffmpeg on PATH (bash scripts/setup.sh installs it)")
    done = subprocess.run([executable, "-hide_banner", "-loglevel", "error", *arguments], input=data, capture_output=True)
    if done.returncode != 0:
        raise ChannelError(f"ffmpeg failed to simulate the {what} channel: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def through_telephone(clip: np.ndarray, codec: str = "telephone") -> np.ndarray:
    """`clip` (16 kHz mono float32) as heard through a telephone line with `codec`
    ("telephone": G.711 mu-law; "gsm": GSM 06.10), back at 16 kHz with its length kept."""
    if codec not in TELEPHONE_CODECS:
        raise ChannelError(f"unknown channel {codec!r}; choose one of {sorted(TELEPHONE_CODECS)}")
    encoder, container = TELEPHONE_CODECS[codec]
    raw = ["-f", "f32le", "-ar", str(SAMPLING_RATE), "-ac", "1"]
    encoded = _ffmpeg(
        [*raw, "-i", "pipe:0", "-af", TELEPHONE_BAND, "-ar", "8000", "-c:a", encoder, "-f", container, "pipe:1"],
        np.ascontiguousarray(clip, dtype="<f4").tobytes(), codec,
    )
    decoded = _ffmpeg(["-f", container, "-i", "pipe:0", "-ar", str(SAMPLING_RATE), *raw[:2], "pipe:1"], encoded, codec)
    heard = np.frombuffer(decoded, dtype="<f4").astype(np.float32)
    # GSM codes 160-sample frames: the tail is padded; cut or pad back to the clip's length
    return np.pad(heard[: len(clip)], (0, max(0, len(clip) - len(heard))))


def apply_condition(clip: np.ndarray, condition: float | str | None, seed: int) -> np.ndarray:
    """The clip under one test condition: None (clean), an SNR in dB (white noise), a noise
    "KIND@SNR" (`NOISES`) or a channel name (`CHANNELS`)."""
    if condition is None:
        return clip
    if not isinstance(condition, str):
        return add_white_noise(clip, float(condition), seed)
    rng = np.random.default_rng(seed)
    if "@" in condition:
        kind, snr = condition.split("@")
        return at_snr(clip, NOISE_MAKERS[kind](len(clip), rng), float(snr))
    if condition == "reverb":
        return reverberate(clip, rng)
    if condition == "quiet":
        return (np.round(clip * 10 ** (-30 / 20) * 32767) / 32767).astype(np.float32)
    if condition == "clipped":
        return np.clip(clip * 10 ** (20 / 20), -1.0, 1.0).astype(np.float32)
    return through_telephone(clip, condition)


def parse_condition(text: str | float | None) -> float | str | None:
    """A condition as a recipe or command line gives it: "clean" (or None), an SNR in dB
    ("10", 10: white noise), a noise at an SNR ("babble@10"; kinds in `NOISES`) or a channel
    (`CHANNELS`: the telephone codecs, reverb, quiet, clipped)."""
    if text is None or text == "clean":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    kind, at, snr = str(text).partition("@")
    if at:
        if kind not in NOISES:
            raise ChannelError(f"unknown noise {kind!r} in {text!r}: give one of {list(NOISES)} as KIND@SNR, e.g. babble@10")
        try:
            return f"{kind}@{float(snr):g}"
        except ValueError:
            raise ChannelError(f"{text!r}: the SNR after @ must be a number of dB, e.g. {kind}@10") from None
    if text in NOISES:
        raise ChannelError(f"noise {text!r} needs an SNR: give it as {text}@10 (dB)")
    if text not in CHANNELS:
        raise ChannelError(f"unknown condition {text!r}: give clean, an SNR in dB (10), KIND@SNR with KIND one of "
                           f"{list(NOISES)}, or one of {list(CHANNELS)}")
    return text


def condition_name(condition: float | str | None) -> str:
    """How a condition is named in tables, plots and cache files: clean, "10 dB" (white noise),
    "babble 10 dB", telephone, reverb, ..."""
    if condition is None:
        return "clean"
    if not isinstance(condition, str):
        return f"{condition:g} dB"
    kind, at, snr = condition.partition("@")
    return f"{kind} {snr} dB" if at else condition
