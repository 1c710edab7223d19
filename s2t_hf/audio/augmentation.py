"""Training-time augmentation with audiomentations, configured by name in the recipe.

A recipe's `augmentation` maps audiomentations class names to their keyword arguments:

    {"AddGaussianSNR": {"min_snr_db": 10, "max_snr_db": 40, "p": 0.5},
     "BandPassFilter": {"min_center_freq": 800, "max_center_freq": 1500, "p": 0.2}}

Any audiomentations transform can be named, and ours below (`Telephone`); they are applied in
the order given.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import soxr
from audiomentations.core.transforms_interface import BaseWaveformTransform
from scipy.signal import butter, sosfilt

from .reading import SAMPLING_RATE

Augmenter = Callable[[np.ndarray], np.ndarray]


class AugmentationError(ValueError):
    """An augmentation recipe that audiomentations cannot build."""


class Telephone(BaseWaveformTransform):
    """A telephone line, as an audiomentations transform (audiomentations has band filters and
    MP3 but no narrowband codec): resample to 8 kHz, band-pass with edges drawn from
    [min_low_hz, max_low_hz] and [min_high_hz, max_high_hz], with probability `mu_law_p` G.711
    mu-law companding to 8 bits, and back to the clip's rate and length.

    Written in numpy rather than through ffmpeg's codecs, which `s2t-hf compare --channel`
    uses to test: a subprocess per training clip would cost more than the step, and the test
    channel stays one the model was not trained through."""

    supports_multichannel = False
    NARROWBAND_RATE = 8000

    def __init__(self, min_low_hz: float = 200.0, max_low_hz: float = 400.0, min_high_hz: float = 3000.0, max_high_hz: float = 3600.0,
                 mu_law_p: float = 0.7, p: float = 0.5):
        super().__init__(p)
        if not 0 < min_low_hz <= max_low_hz < min_high_hz <= max_high_hz < self.NARROWBAND_RATE / 2:
            raise ValueError(
                f"Telephone band edges must rise within 0-4,000 Hz: low {min_low_hz}-{max_low_hz}, high {min_high_hz}-{max_high_hz}"
            )
        self.min_low_hz, self.max_low_hz, self.min_high_hz, self.max_high_hz = min_low_hz, max_low_hz, min_high_hz, max_high_hz
        self.mu_law_p = mu_law_p

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int):
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["low_hz"] = random.uniform(self.min_low_hz, self.max_low_hz)
            self.parameters["high_hz"] = random.uniform(self.min_high_hz, self.max_high_hz)
            self.parameters["mu_law"] = random.random() < self.mu_law_p

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        narrow = soxr.resample(samples, sample_rate, self.NARROWBAND_RATE)
        band = butter(4, [self.parameters["low_hz"], self.parameters["high_hz"]], btype="bandpass", fs=self.NARROWBAND_RATE, output="sos")
        narrow = sosfilt(band, narrow)
        if self.parameters["mu_law"]:
            peak = max(float(np.abs(narrow).max(initial=0.0)), 1.0)  # mu-law codes [-1, 1]: louder audio is scaled into it and back
            companded = np.sign(narrow) * np.log1p(255 * np.minimum(np.abs(narrow) / peak, 1.0)) / np.log(256)
            companded = np.round(companded * 127) / 127  # 8 bits
            narrow = peak * np.sign(companded) * np.expm1(np.abs(companded) * np.log(256)) / 255
        heard = soxr.resample(narrow.astype(np.float32), self.NARROWBAND_RATE, sample_rate)
        return np.pad(heard[: len(samples)], (0, max(0, len(samples) - len(heard)))).astype(np.float32)


OUR_TRANSFORMS = {"Telephone": Telephone}


def build_augmenter(spec: dict[str, dict[str, Any]] | None) -> Augmenter | None:
    """An audiomentations `Compose` from a recipe mapping, or None when the mapping is empty."""
    if not spec:
        return None
    import audiomentations

    transforms = []
    for name, kwargs in spec.items():
        transform_class = OUR_TRANSFORMS.get(name) or getattr(audiomentations, name, None)
        if not isinstance(transform_class, type):
            raise AugmentationError(
                f"augmentation {name!r} is not an audiomentations transform (e.g. AddGaussianSNR, Gain, TimeStretch) "
                f"nor ours ({', '.join(OUR_TRANSFORMS)})"
            )
        try:
            transforms.append(transform_class(**(kwargs or {})))
        except (TypeError, ValueError) as error:
            raise AugmentationError(f"augmentation {name} with {kwargs}: {error}") from None
    compose = audiomentations.Compose(transforms)

    def augment(audio: np.ndarray) -> np.ndarray:
        augmented = compose(samples=audio, sample_rate=SAMPLING_RATE)
        peak = np.abs(augmented).max(initial=0.0)
        return (augmented / peak if peak > 1.0 else augmented).astype(np.float32)

    return augment
