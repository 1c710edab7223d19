"""Reading audio from files, bytes or arrays into the 16 kHz mono float32 that models take."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import soxr

SAMPLING_RATE = 16_000
MIN_SECONDS = 0.1  # shorter clips hold no drug name and give models fewer frames than they need
SILENT_PEAK = 1e-4  # -80 dBFS: nothing audible
CLIPPED_SHARE = 0.01  # at least 1% of samples at full scale


AudioInput = Union[str, os.PathLike, bytes, np.ndarray, tuple]


class AudioError(ValueError):
    """Audio that cannot be read or used; `reason` is a short category for counting
    (missing, unreadable, wrong-shape, empty, non-finite, too-short, silent, too-long)."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


def resample(audio: np.ndarray, source_rate: int, target_rate: int = SAMPLING_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return audio
    return soxr.resample(audio, source_rate, target_rate).astype(np.float32)


def to_mono_float(audio: np.ndarray, what: str) -> np.ndarray:
    """Downmix (frames, channels) to mono float32 and reject empty or non-finite audio."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise AudioError(f"{what}: expected a 1-D (samples) or 2-D (samples, channels) array, got shape {audio.shape}", "wrong-shape")
    if audio.dtype.kind in "iu":
        audio = audio / float(np.iinfo(audio.dtype).max)
    audio = audio.astype(np.float32)
    if audio.size == 0:
        raise AudioError(f"{what}: the audio is empty (0 samples)", "empty")
    if not np.isfinite(audio).all():
        raise AudioError(f"{what}: the audio holds NaN or infinite samples; re-export it as 16-bit PCM", "non-finite")
    return audio


def load_audio(source: AudioInput, sampling_rate: int | None = None, target_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Read a path, encoded bytes, an `(array, rate)` pair or an array with `sampling_rate`
    into mono float32 at `target_rate`. Any format libsndfile reads (WAV, FLAC, OGG, MP3)."""
    if isinstance(source, tuple):
        source, sampling_rate = source
    if isinstance(source, np.ndarray):
        if sampling_rate is None:
            raise AudioError("an audio array needs its sampling_rate (pass (array, rate) or sampling_rate=...)")
        return resample(to_mono_float(source, "audio array"), sampling_rate, target_rate)
    if isinstance(source, bytes):
        what, handle = "audio bytes", io.BytesIO(source)
    else:
        what = str(source)
        if not Path(source).is_file():
            raise AudioError(f"audio file {what!r} does not exist", "missing")
        handle = source
    if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) == 0:
        raise AudioError(f"{what}: the file is empty (0 bytes); record or export it again", "empty")
    try:
        audio, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{what}: cannot be read as audio ({error}); give a WAV, FLAC, OGG or MP3 file") from None
    return resample(to_mono_float(audio, what), rate, target_rate)


def check_usable(audio: np.ndarray, what: str, max_seconds: float | None = None) -> np.ndarray:
    """Reject 16 kHz audio no recogniser can use, saying why and what to do: too short,
    silent, or longer than `max_seconds`. Returns the audio unchanged."""
    seconds = len(audio) / SAMPLING_RATE
    if seconds < MIN_SECONDS:
        raise AudioError(f"{what}: {seconds:.3f} s long, shorter than the {MIN_SECONDS} s minimum; record the whole name", "too-short")
    peak = float(np.abs(audio).max())
    if peak < SILENT_PEAK:
        raise AudioError(f"{what}: silent (peak {peak:.1e}, below {SILENT_PEAK:.0e}); check the microphone or the file's channel", "silent")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{what}: {seconds:.1f} s long, over the {max_seconds:g} s limit; cut it to the spoken name or raise the limit", "too-long")
    return audio


def is_clipped(audio: np.ndarray) -> bool:
    """True when at least 1% of samples sit at full scale: usable, but distorted."""
    return float(np.mean(np.abs(audio) >= 0.999)) >= CLIPPED_SHARE


def read_usable_audio(
    source: AudioInput, max_seconds: float | None = None, sampling_rate: int | None = None, what: str | None = None
) -> np.ndarray:
    """`load_audio` then `check_usable`: the clip, or an `AudioError` naming the problem (and
    `what`, the file's name, when the source is bytes)."""
    what = what or ("audio" if isinstance(source, (bytes, np.ndarray, tuple)) else str(source))
    return check_usable(load_audio(source, sampling_rate), what, max_seconds)
