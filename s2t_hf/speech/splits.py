"""Voice-disjoint train / validation / test splits, saved as a `datasets.DatasetDict`.

Splits are made by *speaker* (engine + voice, ignoring rate and pitch), so a voice heard in
training is never heard in validation or test: reported accuracy is on unseen voices.
"""

from __future__ import annotations

import fnmatch
import logging
import random
from collections import defaultdict
from pathlib import Path

from datasets import Audio, Dataset, DatasetDict

from ..audio.reading import SAMPLING_RATE
from .synthesis import Clip

logger = logging.getLogger(__name__)


SPLITS = ("train", "validation", "test")


class SplitError(ValueError):
    """Splits that cannot be made as asked."""


def assign_speakers(
    speakers: list[str],
    validation: list[str] | None = None,
    test: list[str] | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Map each speaker ('engine:voice') to a split.

    `validation` and `test` are lists of speaker ids or glob patterns ('festival:*' holds out a
    whole engine). Left unset, each engine with three or more speakers gives one randomly
    chosen speaker (by `seed`) to test and another to validation.
    """
    speakers = sorted(set(speakers))
    if test is None or validation is None:
        rng = random.Random(seed)
        by_engine: dict[str, list[str]] = defaultdict(list)
        for speaker in speakers:
            by_engine[speaker.split(":", 1)[0]].append(speaker)
        default_test, default_validation = [], []
        for engine_speakers in by_engine.values():
            if len(engine_speakers) >= 3:
                held_test, held_validation = rng.sample(engine_speakers, 2)
                default_test.append(held_test)
                default_validation.append(held_validation)
        test = default_test if test is None else test
        validation = default_validation if validation is None else validation

    def matching(patterns: list[str], split: str) -> set[str]:
        chosen = set()
        for pattern in patterns:
            hits = fnmatch.filter(speakers, pattern)
            if not hits:
                raise SplitError(f"{split} voice {pattern!r} matches none of the corpus's speakers: {', '.join(speakers)}")
            chosen.update(hits)
        return chosen

    test_speakers = matching(test, "test")
    validation_speakers = matching(validation, "validation")
    both = test_speakers & validation_speakers
    if both:
        raise SplitError(f"speakers {sorted(both)} are in both the validation and the test split; list each in one")
    assignment = {speaker: "train" for speaker in speakers}
    assignment.update({speaker: "validation" for speaker in validation_speakers})
    assignment.update({speaker: "test" for speaker in test_speakers})
    for split in SPLITS:
        if split not in assignment.values():
            raise SplitError(f"the {split} split has no speaker; corpus speakers are {', '.join(speakers)}")
    return assignment


def build_dataset_dict(clips: list[Clip], corpus_dir: str | Path, assignment: dict[str, str]) -> DatasetDict:
    """Turn manifest rows into a DatasetDict with an `audio` column (16 kHz) per split."""
    corpus_dir = Path(corpus_dir).resolve()
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for clip in clips:
        row = vars(clip).copy()
        row["audio"] = str(corpus_dir / row.pop("path"))
        rows[assignment[clip.speaker]].append(row)
    splits = DatasetDict(
        {split: Dataset.from_list(split_rows).cast_column("audio", Audio(sampling_rate=SAMPLING_RATE)) for split, split_rows in rows.items()}
    )
    for split, dataset in splits.items():
        logger.info("%s: %d clips from speakers %s", split, len(dataset), ", ".join(sorted(set(dataset["speaker"]))))
    return splits


def speakers_of(dataset: Dataset) -> set[str]:
    return set(dataset["speaker"])
