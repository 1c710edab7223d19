"""Models: the from-scratch mel-conformer (registered with the Auto classes on import),
processors, checkpoint loading, selective freezing and DeepSpeed helpers."""

from .mel_conformer import MelConformerConfig, MelConformerForCTC

__all__ = ["MelConformerConfig", "MelConformerForCTC"]
