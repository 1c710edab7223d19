"""Running a recogniser over manifest rows.

`predict_manifest` runs the model once per clip (optionally with noise added at a fixed SNR)
and returns one prediction record per clip: its ten best names with scores and calibrated
probabilities, the free transcript and that transcript's own score. `calibrate_recogniser`
fits a `Calibration` on held-out rows (`calibration_scores` + `fit_on_scores`, which several
processes can share).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio.reading import AudioError, read_usable_audio
from ..decoding.ranking import RANKED_FOR_METRICS
from ..inference.calibration import Calibration, fit_calibration
from ..inference.recognizer import S2T
from ..text.lexicon import LexiconError, normalize_name
from .manifests import NOT_GROUPS, read_evaluation_manifest
from .summary import summarize

logger = logging.getLogger(__name__)


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
        batch = recogniser.score_batch([clip for _, _, clip in readable], RANKED_FOR_METRICS)
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


def calibration_scores(
    recogniser: S2T, rows: list[dict[str, str]], batch_size: int = 16, progress: bool = True
) -> list[tuple[int, list[float], int, float]]:
    """What a calibration is fitted on, one entry per usable row: (the row's position, its score
    for every lexicon name, the index of its true name, its transcript's own score).
    Unreadable clips and names outside the lexicon are skipped."""
    index_of = {entry.label: index for index, entry in enumerate(recogniser.lexicon)}
    scored, errors = [], []
    for batch_rows in readable_batches(rows, recogniser.max_seconds, batch_size, errors, "calibrating", progress):
        in_lexicon = [(position, index_of[label], clip) for position, _, label, clip in batch_rows if label in index_of]
        if in_lexicon:
            batch = recogniser.score_batch([clip for _, _, clip in in_lexicon], top_k=5)  # a temperature and a top-2 margin
            for (position, reference, _), scores, own in zip(in_lexicon, batch.scores.tolist(), batch.transcript_scores.tolist()):
                scored.append((position, scores, reference, own))
    return scored


def fit_on_scores(scored: list[tuple[int, list[float], int, float]], fitted_on: str) -> Calibration:
    """Fit a `Calibration` on `calibration_scores` entries (from one process or gathered from several)."""
    if not scored:
        raise ValueError("no readable clip with a lexicon name to calibrate on")
    scored = sorted(scored, key=lambda entry: entry[0])  # the rows' order, however the work was split
    return fit_calibration(
        torch.tensor([scores for _, scores, _, _ in scored]),
        torch.tensor([reference for _, _, reference, _ in scored]),
        torch.tensor([own for _, _, _, own in scored]),
        fitted_on,
    )


def calibrate_recogniser(
    recogniser: S2T, rows: list[dict[str, str]], batch_size: int = 16, fitted_on: str = "validation", progress: bool = True
) -> Calibration:
    """Fit a `Calibration` for an `S2T` on manifest rows (path or encoded bytes, text) of held-out voices.
    Unreadable clips and names outside the lexicon are skipped."""
    scored = calibration_scores(recogniser, rows, batch_size, progress)
    if not scored:
        raise ValueError(f"no readable clip with a lexicon name among {len(rows)} rows to calibrate on")
    return fit_on_scores(scored, fitted_on)


def evaluate_manifest(recogniser: S2T, manifest: str | Path, batch_size: int = 16, progress: bool = False) -> dict:
    """Recognise every clip of the manifest and summarise. Unreadable clips and texts outside
    the lexicon are counted and reported, not fatal."""
    records, errors = predict_manifest(recogniser, read_evaluation_manifest(manifest), batch_size=batch_size, progress=progress)
    return summarize(records, errors, [entry.label for entry in recogniser.lexicon], recogniser.calibration)
