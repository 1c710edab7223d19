"""Evaluating a recogniser on a manifest of recordings: top-1..5 and CER, overall and per group.

A manifest is a tab-separated file with a header row holding at least `path` (relative to the
manifest's folder) and `text`; any other column (`voice`, `engine`, ...) gives a breakdown.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from .audio import SAMPLING_RATE, AudioError, load_audio
from .inference import S2T
from .lexicon import LexiconError, normalize_name
from .metrics import TOP_KS, character_error_rate, top_k_accuracy

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "text")
NOT_GROUPS = {"path", "text", "label", "duration"}


class ManifestError(ValueError):
    """A manifest that cannot be evaluated."""


def read_evaluation_manifest(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ManifestError(f"manifest {str(path)!r} has no rows under its header")
    missing = [column for column in REQUIRED_COLUMNS if column not in rows[0]]
    if missing:
        raise ManifestError(f"manifest {str(path)!r} lacks column(s) {missing}; its header is {list(rows[0])}")
    for row in rows:
        row["path"] = str((path.parent / row["path"]).resolve())
    return rows


def score(references: list[int], ranked: np.ndarray, reference_labels: list[str], transcripts: list[str]) -> dict[str, float]:
    metrics = {"n": len(references), **top_k_accuracy(ranked, references, TOP_KS)}
    metrics["cer"] = character_error_rate(reference_labels, transcripts)
    return metrics


def evaluate_manifest(recogniser: S2T, manifest: str | Path, batch_size: int = 16) -> dict:
    """Recognise every clip of the manifest; return overall and per-group top-k and CER.

    Unreadable clips and texts outside the lexicon are counted and reported, not fatal.
    """
    rows = read_evaluation_manifest(manifest)
    index_of = {entry.label: index for index, entry in enumerate(recogniser.lexicon)}
    name_index = {entry.name: index for index, entry in enumerate(recogniser.lexicon)}
    kept, ranked, transcripts, labels, references, errors = [], [], [], [], [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        readable = []
        for row in batch:
            try:
                audio = load_audio(row["path"])
                label = normalize_name(row["text"])
            except (AudioError, LexiconError) as error:
                errors.append({"path": row["path"], "error": str(error)})
                continue
            readable.append((row, label, (audio, SAMPLING_RATE)))
        if not readable:
            continue
        results = recogniser.recognize([audio for _, _, audio in readable], top_k=max(TOP_KS))
        for (row, label, _), result in zip(readable, results):
            kept.append(row)
            labels.append(label)
            references.append(index_of.get(label, -1))
            transcripts.append(result.transcript)
            ranked.append([name_index[candidate.name] for candidate in result.candidates])
    if not kept:
        raise ManifestError(f"no clip of {str(manifest)!r} could be evaluated; first error: {errors[0]['error'] if errors else 'none'}")
    ranked_array = np.array(ranked)
    report = score(references, ranked_array, labels, transcripts)
    report["not_in_lexicon"] = sum(reference < 0 for reference in references)
    report["errors"] = errors
    groups: dict[str, dict[str, dict]] = {}
    for column in kept[0]:
        if column in NOT_GROUPS:
            continue
        members: dict[str, list[int]] = defaultdict(list)
        for position, row in enumerate(kept):
            members[row[column]].append(position)
        groups[column] = {
            value: score([references[i] for i in positions], ranked_array[positions], [labels[i] for i in positions], [transcripts[i] for i in positions])
            for value, positions in sorted(members.items())
        }
    report["groups"] = groups
    return report
