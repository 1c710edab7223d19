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

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, tuple]


class AudioError(ValueError):
    """Audio that cannot be read or used."""


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
        raise AudioError(f"{what}: expected a 1-D (samples) or 2-D (samples, channels) array, got shape {audio.shape}")
    if audio.dtype.kind in "iu":
        audio = audio / float(np.iinfo(audio.dtype).max)
    audio = audio.astype(np.float32)
    if audio.size == 0:
        raise AudioError(f"{what}: the audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{what}: the audio holds NaN or infinite samples")
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
            raise AudioError(f"audio file {what!r} does not exist")
        handle = source
    try:
        audio, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{what}: cannot be read as audio ({error}); give a WAV, FLAC, OGG or MP3 file") from None
    return resample(to_mono_float(audio, what), rate, target_rate)
