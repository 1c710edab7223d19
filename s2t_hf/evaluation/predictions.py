"""Running a recogniser over manifest rows.

`predict_manifest` runs the model once per clip (optionally with white noise at a fixed SNR or
through a telephone codec)
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

from ..audio.channels import apply_condition, condition_name
from ..audio.reading import AudioError, read_usable_audio
from ..decoding.ranking import RANKED_FOR_METRICS
from ..inference.calibration import Calibration, LengthTerms, fit_calibration
from ..inference.recognizer import S2T
from ..text.lexicon import LexiconError, normalize_name
from .manifests import NOT_GROUPS, read_evaluation_manifest
from .summary import summarize

logger = logging.getLogger(__name__)


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
    recogniser: S2T, rows: list[dict[str, str]], condition: float | str | None = None, batch_size: int = 16, progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """One prediction record per readable clip, and one error record per clip that is not.
    `condition`: None (clean), an SNR in dB (white noise) or a telephone codec (`audio/channels.py`)."""
    label_of = {entry.name: entry.label for entry in recogniser.lexicon}  # records hold normalised labels, like references
    records, errors = [], []
    for batch_rows in readable_batches(rows, recogniser.max_seconds, batch_size, errors, f"recognising ({condition_name(condition)})", progress):
        readable = [(row, reference, apply_condition(clip, condition, seed=position)) for position, row, reference, clip in batch_rows]
        batch = recogniser.score_batch([clip for _, _, clip in readable], RANKED_FOR_METRICS)
        results = recogniser.results(batch, top_k=RANKED_FOR_METRICS)
        for (row, reference, clip), result, own_score in zip(readable, results, batch.transcript_scores.tolist()):
            records.append({
                "path": row["path"],
                "reference": reference,
                "groups": {column: value for column, value in row.items() if column not in NOT_GROUPS},
                "condition": condition_name(condition),
                "transcript": result.transcript,
                "transcript_score": own_score,
                "candidates": [label_of[candidate.name] for candidate in result.candidates],
                "scores": [candidate.score for candidate in result.candidates],
                "probabilities": [candidate.probability for candidate in result.candidates],
            })
    return records, errors


def calibration_scores(
    recogniser: S2T, rows: list[dict[str, str]], batch_size: int = 16, progress: bool = True,
    conditions: list[float | str | None] | tuple = (None,),
) -> list[tuple[int, list[float], int, float]]:
    """What a calibration is fitted on, one entry per usable row and condition: (a position,
    its score for every lexicon name, the index of its true name, its transcript's own score).
    The position is the row's, plus `len(rows)` times the condition's index in `conditions`
    (None: clean; an SNR in dB: white noise; a telephone codec), so the entries of one row under
    several conditions stay apart. Unreadable clips and names outside the lexicon are skipped."""
    index_of = {entry.label: index for index, entry in enumerate(recogniser.lexicon)}
    scored, errors = [], []
    for batch_rows in readable_batches(rows, recogniser.max_seconds, batch_size, errors, "calibrating", progress):
        for number, condition in enumerate(conditions):
            in_lexicon = [
                (position + number * len(rows), index_of[label], apply_condition(clip, condition, seed=position))
                for position, _, label, clip in batch_rows if label in index_of
            ]
            if in_lexicon:
                batch = recogniser.score_batch([clip for _, _, clip in in_lexicon], top_k=5)  # a temperature and a top-2 margin
                own_lengths = [None] * len(in_lexicon) if batch.transcript_lengths is None else batch.transcript_lengths.tolist()
                for (position, reference, _), scores, own, own_length in zip(
                    in_lexicon, batch.scores.tolist(), batch.transcript_scores.tolist(), own_lengths
                ):
                    scored.append((position, scores, reference, own, own_length))
    return scored


def fit_on_scores(scored: list[tuple], fitted_on: str, plain_rows: int | None = None, recogniser: S2T | None = None) -> Calibration:
    """Fit a `Calibration` on `calibration_scores` entries (from one process or gathered from
    several). With `plain_rows` N, the entries at positions below N, the clips under the first of
    `calibration_scores`' conditions (clean, as recorded, unless the list starts otherwise), fit
    the temperature and the out-of-lexicon gap; all entries fit the ambiguity margin (see
    `fit_calibration`). Given the CTC `recogniser` that scored them, the length exponent too."""
    if not scored:
        raise ValueError("no readable clip with a lexicon name to calibrate on")
    scored = sorted(scored, key=lambda entry: entry[0])  # the rows' order, however the work was split
    name_lengths = None if recogniser is None else recogniser.name_lengths
    lengths = None if name_lengths is None else LengthTerms(
        name_lengths, torch.tensor([entry[4] for entry in scored], dtype=torch.float32), recogniser.calibration.length_exponent
    )
    return fit_calibration(
        torch.tensor([entry[1] for entry in scored]),
        torch.tensor([entry[2] for entry in scored]),
        torch.tensor([entry[3] for entry in scored]),
        fitted_on,
        None if plain_rows is None else torch.tensor([entry[0] < plain_rows for entry in scored]),
        lengths,
    )


def calibrate_recogniser(
    recogniser: S2T, rows: list[dict[str, str]], batch_size: int = 16, fitted_on: str = "validation", progress: bool = True,
    conditions: list[float | str | None] | tuple = (None,),
) -> Calibration:
    """Fit a `Calibration` for an `S2T` on manifest rows (path or encoded bytes, text) of held-out
    voices, each heard under every one of `conditions` (see `calibration_scores`).
    Unreadable clips and names outside the lexicon are skipped."""
    scored = calibration_scores(recogniser, rows, batch_size, progress, conditions)
    if not scored:
        raise ValueError(f"no readable clip with a lexicon name among {len(rows)} rows to calibrate on")
    return fit_on_scores(scored, fitted_on + conditions_note(conditions), plain_rows=len(rows), recogniser=recogniser)


def conditions_note(conditions: list[float | str | None] | tuple) -> str:
    """How a calibration's `fitted_on` names the conditions its clips were heard under ("" for clean only)."""
    return "" if list(conditions) == [None] else f" ({', '.join(condition_name(condition) for condition in conditions)})"


def evaluate_manifest(recogniser: S2T, manifest: str | Path, batch_size: int = 16, progress: bool = False) -> dict:
    """Recognise every clip of the manifest and summarise. Unreadable clips and texts outside
    the lexicon are counted and reported, not fatal."""
    records, errors = predict_manifest(recogniser, read_evaluation_manifest(manifest), batch_size=batch_size, progress=progress)
    return summarize(records, errors, [entry.label for entry in recogniser.lexicon], recogniser.calibration)
