"""Models: the from-scratch mel-conformer and Whisper's encoder with a CTC head (both registered
with the Auto classes on import), processors, checkpoint loading, selective freezing and
DeepSpeed helpers."""

from .mel_conformer import MelConformerConfig, MelConformerForCTC
from .whisper_ctc import WhisperCTCConfig, WhisperEncoderForCTC

__all__ = ["MelConformerConfig", "MelConformerForCTC", "WhisperCTCConfig", "WhisperEncoderForCTC"]
