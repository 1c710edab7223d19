"""Evaluating a recogniser on a manifest of recordings.

`predict_manifest` runs the model once per clip (optionally with noise added at a fixed SNR)
and returns one prediction record per clip: its ten best names with scores and calibrated
probabilities, the free transcript and that transcript's own score. `summarize` turns records
into every number a report shows: top-1..10, CER, per group, the sound-alike subset,
calibration error, the ambiguity flag's trade-off and out-of-lexicon detection.

A manifest is a tab-separated file with a header row holding at least `path` (relative to the
manifest's folder) and `text`; any other column (`voice`, `engine`, ...) gives a breakdown.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .audio import AudioError, read_usable_audio
from .calibration import Calibration, expected_calibration_error, fit_calibration
from .inference import S2T
from .lexicon import LexiconError, normalize_name
from .metrics import TOP_KS, character_error_rate, top_k_accuracy
from .ranking import RANKED_FOR_METRICS
from .sound_alike import partners_in_lexicon

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


def add_noise(clip: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at exactly `snr_db` relative to the clip's power, from a per-clip seed, so
    that every model (and every rerun) hears the same noisy clip."""
    power = float(np.mean(clip**2)) or 1e-10
    noise = np.random.default_rng(seed).standard_normal(len(clip)).astype(np.float32)
    return clip + noise * np.sqrt(power / 10 ** (snr_db / 10))


def readable_batches(
    rows: list[dict[str, str]], max_seconds: float | None, batch_size: int, errors: list[dict], desc: str, progress: bool = True
) -> Iterator[list[tuple[int, dict[str, str], str, np.ndarray]]]:
    """Manifest rows in batches of (position, row, normalised name, 16 kHz clip); a row whose
    audio or name cannot be used becomes an entry in `errors` instead. Empty batches are skipped."""
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress):
        readable = []
        for position, row in enumerate(rows[start : start + batch_size], start):
            try:
                readable.append((position, row, normalize_name(row["text"]), read_usable_audio(row["path"], max_seconds)))
            except (AudioError, LexiconError) as error:
                errors.append({"path": row["path"] if isinstance(row["path"], str) else "(audio bytes)", "error": str(error)})
        if readable:
            yield readable


def predict_manifest(
    recogniser: S2T, rows: list[dict[str, str]], snr_db: float | None = None, batch_size: int = 16, progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """One prediction record per readable clip, and one error record per clip that is not."""
    label_of = {entry.name: entry.label for entry in recogniser.lexicon}  # records hold normalised labels, like references
    records, errors = [], []
    condition = "clean" if snr_db is None else f"{snr_db:g} dB SNR"
    for batch_rows in readable_batches(rows, recogniser.max_seconds, batch_size, errors, f"recognising ({condition})", progress):
        readable = [
            (row, reference, clip if snr_db is None else add_noise(clip, snr_db, seed=position)) for position, row, reference, clip in batch_rows
        ]
        batch = recogniser.score_batch([clip for _, _, clip in readable])
        results = recogniser.results(batch, top_k=RANKED_FOR_METRICS)
        for (row, reference, clip), result, own_score in zip(readable, results, batch.transcript_scores.tolist()):
            records.append({
                "path": row["path"],
                "reference": reference,
                "groups": {column: value for column, value in row.items() if column not in NOT_GROUPS},
                "snr_db": snr_db,
                "transcript": result.transcript,
                "transcript_score": own_score,
                "candidates": [label_of[candidate.name] for candidate in result.candidates],
                "scores": [candidate.score for candidate in result.candidates],
                "probabilities": [candidate.probability for candidate in result.candidates],
            })
    return records, errors


def calibrate_recogniser(
    recogniser: S2T, rows: list[dict[str, str]], batch_size: int = 16, fitted_on: str = "validation", progress: bool = True
) -> Calibration:
    """Fit a `Calibration` for an `S2T` on manifest rows (path or encoded bytes, text) of held-out voices.
    Unreadable clips and names outside the lexicon are skipped."""
    index_of = {entry.label: index for index, entry in enumerate(recogniser.lexicon)}
    scores, references, transcript_scores, errors = [], [], [], []
    for batch_rows in readable_batches(rows, recogniser.max_seconds, batch_size, errors, "calibrating", progress):
        in_lexicon = [(index_of[label], clip) for _, _, label, clip in batch_rows if label in index_of]
        if in_lexicon:
            batch = recogniser.score_batch([clip for _, clip in in_lexicon])
            scores.append(batch.scores)
            transcript_scores.append(batch.transcript_scores)
            references.extend(index for index, _ in in_lexicon)
    if not references:
        raise ValueError(f"no readable clip with a lexicon name among {len(rows)} rows to calibrate on")
    return fit_calibration(torch.cat(scores), torch.tensor(references), torch.cat(transcript_scores), fitted_on)


def margin_of(record: dict) -> float:
    probabilities = record["probabilities"]
    return probabilities[0] - (probabilities[1] if len(probabilities) > 1 else 0.0)


def accuracy(records: list[dict], max_k: int = max(TOP_KS)) -> dict[str, float]:
    metrics = {"n": len(records), **top_k_accuracy([r["candidates"] for r in records], [r["reference"] for r in records], max_k)}
    metrics["cer"] = character_error_rate([r["reference"] for r in records], [r["transcript"] for r in records])
    return metrics


def out_of_lexicon_rates(records: list[dict], calibration: Calibration) -> dict[str, float] | None:
    """Out-of-lexicon detection measured by leaving each clip's own name out of the lexicon:
    `detected` is how often the flag fires then (the best remaining name is a wrong drug), and
    `false_rejections` how often it fires on the full lexicon (the right name was available)."""
    if calibration.out_of_lexicon_gap is None:
        return None
    in_lexicon, left_out = [], []
    for record in records:
        in_lexicon.append(calibration.is_out_of_lexicon(record["transcript_score"] - record["scores"][0]))
        others = [score for name, score in zip(record["candidates"], record["scores"]) if name != record["reference"]]
        if others:
            left_out.append(calibration.is_out_of_lexicon(record["transcript_score"] - others[0]))
    return {"detected": float(np.mean(left_out)), "false_rejections": float(np.mean(in_lexicon))}


def summarize(records: list[dict], errors: list[dict], lexicon_labels: list[str], calibration: Calibration) -> dict:
    """Everything a report shows about one model on one condition (see the module docstring)."""
    if not records:
        raise ManifestError(f"no clip could be evaluated; first error: {errors[0]['error'] if errors else 'none'}")
    summary = accuracy(records, max_k=RANKED_FOR_METRICS)
    labels = set(lexicon_labels)
    summary["not_in_lexicon"] = sum(record["reference"] not in labels for record in records)
    summary["errors"] = errors
    correct = np.array([record["candidates"][:1] == [record["reference"]] for record in records])
    margins = np.array([margin_of(record) for record in records])
    summary["ece"] = expected_calibration_error(np.array([record["probabilities"][0] for record in records]), correct)
    summary["mean_confidence"] = float(np.mean([record["probabilities"][0] for record in records]))
    flagged = margins < calibration.ambiguity_margin
    summary["ambiguous"] = {
        "threshold": calibration.ambiguity_margin,
        "flagged": float(flagged.mean()),
        "errors_caught": float(flagged[~correct].mean()) if (~correct).any() else None,
        "correct_flagged": float(flagged[correct].mean()) if correct.any() else None,
    }
    summary["out_of_lexicon"] = out_of_lexicon_rates(records, calibration)
    partners = partners_in_lexicon(labels)
    subset = [record for record in records if record["reference"] in partners]
    if subset:
        summary["sound_alike"] = {
            **accuracy(subset),
            "pairs_names": len(partners),
            "confused_with_partner": sum(record["candidates"][0] in partners[record["reference"]] for record in subset),
        }
    confusions = Counter((record["reference"], record["candidates"][0]) for record in records if not record["candidates"][:1] == [record["reference"]])
    summary["confusions"] = [{"spoken": spoken, "heard_as": heard, "count": count} for (spoken, heard), count in confusions.most_common(15)]
    groups: dict[str, dict[str, dict]] = {}
    for column in records[0]["groups"]:
        members: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            members[record["groups"][column]].append(record)
        groups[column] = {value: accuracy(subset_records) for value, subset_records in sorted(members.items())}
    summary["groups"] = groups
    return summary


def evaluate_manifest(recogniser: S2T, manifest: str | Path, batch_size: int = 16, progress: bool = False) -> dict:
    """Recognise every clip of the manifest and summarise. Unreadable clips and texts outside
    the lexicon are counted and reported, not fatal."""
    records, errors = predict_manifest(recogniser, read_evaluation_manifest(manifest), batch_size=batch_size, progress=progress)
    return summarize(records, errors, [entry.label for entry in recogniser.lexicon], recogniser.calibration)
