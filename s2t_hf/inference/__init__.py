"""Inference: `S2T` (audio in, ranked and calibrated drug names out) and its calibration."""

from .calibration import Calibration
from .recognizer import S2T, Candidate, Recognition

__all__ = ["Calibration", "Candidate", "Recognition", "S2T"]
