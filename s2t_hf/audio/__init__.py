"""Audio: reading and checking clips (any format and rate, to 16 kHz mono float32), and
augmentation. The bottom layer: imports nothing else from s2t_hf."""

from .reading import SAMPLING_RATE, AudioError, AudioInput, load_audio, read_usable_audio

__all__ = ["SAMPLING_RATE", "AudioError", "AudioInput", "load_audio", "read_usable_audio"]
