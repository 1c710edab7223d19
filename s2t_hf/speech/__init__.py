"""Synthetic speech: TTS engines, cached corpus synthesis, speaker-disjoint splits."""
