"""Talent-disjoint train / validation / test splits, saved as a `datasets.DatasetDict`.

A *speaker* is an engine voice (`engine:voice`, rate and pitch ignored). A *talent* is the voice
underneath it that a listener, and a model, would recognise: an eSpeak NG accent with all its
`+variants` is one talent; festvox voices recorded from one person ship in Flite and Festival
under different names (`flite:kal`, `flite:kal16`, `festival:kal_diphone` are one talent, as are
`flite:slt` and `festival:cmu_us_slt_arctic_hts`). Validation and test hold out whole talents, so
reported accuracy is on voices never heard in training, not on a variant of one.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import re
from collections import defaultdict
from pathlib import Path

from datasets import Audio, Dataset, DatasetDict

from ..audio.reading import SAMPLING_RATE
from .synthesis import Clip

logger = logging.getLogger(__name__)


SPLITS = ("train", "validation", "test")

# Engines that share voice talents: the festvox voices (CMU's recordings) are built for both.
ENGINE_FAMILIES = {"flite": "festvox", "festival": "festvox"}
# What festvox voice names add to the talent's name: cmu_us_slt_arctic_hts, kal_diphone, kal16, awb_time.
FESTVOX_DECORATION = re.compile(r"^(cmu_us_)|(_arctic)?(_hts|_clunits|_cg|_diphone|_time)$|(?<=[a-z])16$")


class SplitError(ValueError):
    """Splits that cannot be made as asked."""


def engine_family(speaker: str) -> str:
    engine = speaker.split(":", 1)[0]
    return ENGINE_FAMILIES.get(engine, engine)


def talent_of(speaker: str) -> str:
    """The voice talent behind a speaker: 'espeak-ng:en-gb+f3' -> 'espeak-ng:en-gb';
    'flite:kal16' and 'festival:kal_diphone' -> 'festvox:kal'; others are their own talent."""
    engine, _, voice = speaker.partition(":")
    if engine == "espeak-ng":
        return f"{engine}:{voice.split('+', 1)[0]}"
    if engine_family(speaker) == "festvox":
        return f"festvox:{FESTVOX_DECORATION.sub('', voice)}"
    return speaker


def check_no_leak(assignment: dict[str, str]) -> None:
    """Refuse splits where one talent is heard in two splits, naming a speaker pair that leaks."""
    order = {split: rank for rank, split in enumerate(("test", "validation", "train"))}
    by_talent: dict[str, list[str]] = defaultdict(list)
    for speaker in sorted(assignment):
        by_talent[talent_of(speaker)].append(speaker)
    for talent, speakers in by_talent.items():
        held, *others = sorted(speakers, key=lambda speaker: order[assignment[speaker]])
        other = next((speaker for speaker in others if assignment[speaker] != assignment[held]), None)
        if other is not None:
            raise SplitError(
                f"{assignment[held]} voice {held!r} and {assignment[other]} voice {other!r} are one voice talent ({talent}): "
                f"the model would be measured on a voice it has heard. Hold out both (add {other!r} to the {assignment[held]} "
                "voices) or drop one of them from `voices`"
            )


def assign_speakers(
    speakers: list[str],
    validation: list[str] | None = None,
    test: list[str] | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Map each speaker ('engine:voice') to a split, keeping every voice talent in one split.

    `validation` and `test` are lists of speaker ids or glob patterns ('festival:*' holds out a
    whole engine). Left unset, each engine family (festvox = Flite + Festival) with three or
    more talents gives one randomly chosen talent (by `seed`), with all its speakers, to test
    and another to validation. Listed voices must hold out whole talents: a split where a
    training voice shares its talent with a held-out one is refused, naming the pair.
    """
    speakers = sorted(set(speakers))
    if test is None or validation is None:
        rng = random.Random(seed)
        talents_by_family: dict[str, list[str]] = defaultdict(list)
        for talent in sorted({talent_of(speaker) for speaker in speakers}):
            talents_by_family[engine_family(talent)].append(talent)
        default_test, default_validation = [], []
        for talents in talents_by_family.values():
            if len(talents) >= 3:
                held_test, held_validation = rng.sample(talents, 2)
                default_test += [speaker for speaker in speakers if talent_of(speaker) == held_test]
                default_validation += [speaker for speaker in speakers if talent_of(speaker) == held_validation]
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
    check_no_leak(assignment)
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
