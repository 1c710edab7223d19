"""Model-ready training datasets.

`prepare_for_training` checks every clip once, adds token labels and reads audio on the fly,
so augmentation draws a new variant every epoch and no float copy of the corpus is ever
written; `drop_unalignable` removes clips too short for their label under CTC.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from datasets import Audio, Dataset
from tqdm.auto import tqdm
from transformers import Wav2Vec2Processor

from ..audio.augmentation import Augmenter
from ..audio.reading import SAMPLING_RATE, AudioError, is_clipped, load_audio, read_usable_audio
from ..models.processor import clip_features
from ..text.vocabulary import model_text

logger = logging.getLogger(__name__)


def audit_clips(dataset: Dataset, split: str, max_duration_s: float | None = None, workers: int | None = None) -> Dataset:
    """Read every clip once before training and drop those no model can learn from (missing,
    unreadable, empty, NaN/inf, shorter than 0.1 s, silent, over `max_duration_s`), logging a
    count per reason; clipped clips are kept and counted. A long run then never meets a broken
    clip it could have known about at the start."""
    clips = list(dataset.cast_column("audio", Audio(decode=False))["audio"])
    paths = [clip["path"] for clip in clips]

    def problem(clip: dict) -> str | None:
        try:
            audio = read_usable_audio(clip["bytes"] or clip["path"], max_duration_s, what=clip["path"])
        except AudioError as error:
            return error.reason
        return "clipped (kept)" if is_clipped(audio) else None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        problems = list(tqdm(pool.map(problem, clips, chunksize=64), total=len(paths), desc=f"checking {split} clips", disable=len(paths) < 1000))
    counts = Counter(reason for reason in problems if reason is not None)
    keep = [index for index, reason in enumerate(problems) if reason is None or reason == "clipped (kept)"]
    if counts:
        logger.warning("%s: %d clips checked; %s; %d dropped", split, len(paths),
                       ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items())), len(paths) - len(keep))
        for index, reason in enumerate(problems):
            if reason is not None and reason != "clipped (kept)":
                logger.info("%s: dropped %s (%s)", split, paths[index], reason)
    else:
        logger.info("%s: all %d clips readable and usable", split, len(paths))
    return dataset.select(keep) if len(keep) < len(dataset) else dataset


class ClipReader:
    """A `datasets` transform: read each clip, augment it (training only), normalise it.

    Any column other than `audio` passes through, so length lookups stay cheap. A clip that
    cannot be read any more (deleted or damaged after the audit at the start) becomes None,
    which the collator leaves out with a warning, so one file never ends a long run.
    """

    def __init__(self, processor: Wav2Vec2Processor, augmenter: Augmenter | None = None):
        self.feature_extractor = processor.feature_extractor
        self.augmenter = augmenter

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "audio" not in batch:
            return batch
        values: list[Any] = []
        for audio in batch.pop("audio"):
            try:
                samples = load_audio(audio["bytes"] if audio.get("bytes") else audio["path"])
            except AudioError as error:
                logger.warning("skipping a clip that can no longer be read: %s", error)
                values.append(None)
                continue
            values.append(self.augmenter(samples) if self.augmenter is not None else samples)
        name = self.feature_extractor.model_input_names[0]  # input_values (CTC) or input_features (Speech2Text)
        readable = [samples for samples in values if samples is not None]
        features = iter(clip_features(self.feature_extractor, readable))
        batch[name] = [next(features) if samples is not None else None for samples in values]
        return batch


def ctc_frames_needed(labels: list[int]) -> int:
    """Frames a CTC alignment of `labels` needs: one per token, plus a blank between repeats."""
    return len(labels) + sum(1 for previous, token in zip(labels, labels[1:]) if previous == token)


def drop_unalignable(dataset: Dataset, output_lengths: Callable[[torch.Tensor], torch.Tensor], split: str) -> Dataset:
    """Drop clips too short for their label under CTC (the loss would be infinite), with a warning."""
    frames = output_lengths(torch.tensor(dataset.with_format(None)["input_length"][:])).tolist()
    needed = [ctc_frames_needed(labels) for labels in dataset.with_format(None)["labels"][:]]
    keep = [index for index, (have, need) in enumerate(zip(frames, needed)) if have >= need]
    if len(keep) < len(dataset):
        logger.warning(
            "%s: dropped %d of %d clips whose model output has fewer frames than their label needs (CTC cannot align them)",
            split, len(dataset) - len(keep), len(dataset),
        )
        transform = dataset.format.get("format_kwargs", {}).get("transform")
        dataset = dataset.with_format(None).select(keep)
        if transform is not None:
            dataset.set_transform(transform)
    return dataset


def prepare_for_training(
    dataset: Dataset,
    processor: Wav2Vec2Processor,
    augmenter: Augmenter | None = None,
    max_duration_s: float | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    split: str = "train",
) -> Dataset:
    """Keep the usable clips (`audit_clips`) and the columns training needs (`audio`,
    `labels`, `input_length`), and attach a ClipReader."""
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_samples))
    dataset = audit_clips(dataset, split, max_duration_s)
    tokenizer = processor.tokenizer
    dataset = dataset.map(
        lambda batch: {
            "labels": tokenizer([model_text(label, tokenizer) for label in batch["label"]]).input_ids,
            "input_length": [round(duration * SAMPLING_RATE) for duration in batch["duration"]],
        },
        batched=True,
        remove_columns=[column for column in dataset.column_names if column != "audio"],
        desc="tokenising labels",
    )
    dataset = dataset.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE, decode=False))
    dataset.set_transform(ClipReader(processor, augmenter))
    return dataset
