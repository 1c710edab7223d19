"""What a clip sounds like after a channel: white noise at a set SNR, or a telephone line.

Used to *test* robustness (`s2t-hf compare --snr 10 --channel telephone gsm`), so the telephone
goes through ffmpeg's own codecs rather than our code: the 16 kHz clip is band-limited to
300-3,400 Hz, resampled to 8 kHz, encoded as G.711 mu-law (`telephone`, the classic landline
and most VoIP trunks) or GSM 06.10 full rate (`gsm`, the 2G mobile codec) and decoded back to
16 kHz. Training-time augmentation (`audio/augmentation.py: Telephone`) is a separate, cheaper
numpy model of the band and mu-law, so a test through ffmpeg's GSM is a channel no training
clip went through.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from .reading import SAMPLING_RATE

# name -> (ffmpeg encoder, container format it is written in)
TELEPHONE_CODECS = {"telephone": ("pcm_mulaw", "wav"), "gsm": ("libgsm", "gsm")}
TELEPHONE_BAND = "highpass=f=300,lowpass=f=3400"


class ChannelError(ValueError):
    """A channel that cannot be simulated (unknown name, ffmpeg missing or failing)."""


def add_white_noise(clip: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at exactly `snr_db` relative to the clip's power, from a per-clip seed, so
    that every model (and every rerun) hears the same noisy clip."""
    power = float(np.mean(clip**2)) or 1e-10
    noise = np.random.default_rng(seed).standard_normal(len(clip)).astype(np.float32)
    return clip + noise * np.sqrt(power / 10 ** (snr_db / 10))


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
    """The clip under one test condition: None (clean), an SNR in dB (white noise) or a
    telephone codec name."""
    if condition is None:
        return clip
    if isinstance(condition, str):
        return through_telephone(clip, condition)
    return add_white_noise(clip, float(condition), seed)


def parse_condition(text: str | float | None) -> float | str | None:
    """A condition as a recipe or command line gives it: "clean" (or None), an SNR in dB
    ("10", 10) or a telephone codec name."""
    if text is None or text == "clean":
        return None
    try:
        return float(text)
    except ValueError:
        if text not in TELEPHONE_CODECS:
            raise ChannelError(f"unknown condition {text!r}: give clean, an SNR in dB (10) or one of {sorted(TELEPHONE_CODECS)}") from None
        return text


def condition_name(condition: float | str | None) -> str:
    """How a condition is named in tables, plots and cache files: clean, "10 dB", telephone, gsm."""
    if condition is None:
        return "clean"
    return condition if isinstance(condition, str) else f"{condition:g} dB"
