"""Training-time augmentation with audiomentations, configured by name in the recipe.

A recipe's `augmentation` maps audiomentations class names to their keyword arguments:

    {"AddGaussianSNR": {"min_snr_db": 10, "max_snr_db": 40, "p": 0.5},
     "BandPassFilter": {"min_center_freq": 800, "max_center_freq": 1500, "p": 0.2}}

Any audiomentations transform can be named; they are applied in the order given.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .reading import SAMPLING_RATE

Augmenter = Callable[[np.ndarray], np.ndarray]


class AugmentationError(ValueError):
    """An augmentation recipe that audiomentations cannot build."""


def build_augmenter(spec: dict[str, dict[str, Any]] | None) -> Augmenter | None:
    """An audiomentations `Compose` from a recipe mapping, or None when the mapping is empty."""
    if not spec:
        return None
    import audiomentations

    transforms = []
    for name, kwargs in spec.items():
        transform_class = getattr(audiomentations, name, None)
        if not isinstance(transform_class, type):
            raise AugmentationError(f"augmentation {name!r} is not an audiomentations transform (e.g. AddGaussianSNR, Gain, TimeStretch)")
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
