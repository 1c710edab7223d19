"""Spotting measured on sentences with known name times, and a model's threshold fitted on them.

A sentence manifest (`manifest-sentences-<split>.tsv`, written when a recipe sets
`sentences_per_voice`) lists each sentence's drug names with their exact times. `spot_sentences`
spots every sentence once at a low threshold, and `score_spotting` scores a higher threshold by
keeping the detections scoring at least it. That is what spotting at the higher threshold finds,
nearly: the best-first selection takes spans in the same order, but a later round may find a
span in frames that a kept low-scoring span blocked at the lower threshold:

- precision, recall and F1 of names: a detection is right when it names a name of the sentence
  and overlaps that name's time; each reference is matched once;
- top-1 of the spotted name: of the detections overlapping a reference in time, the share
  that name it correctly;
- start and end error (ms) of the right detections;
- false alarms per 10 minutes on drug-free sentences, and over all speech outside the names
  (carrier phrases too: a larger sample).

`fit_spot_threshold` picks the threshold with the best F1 on validation sentences (ties: the
higher one, fewer false alarms), optionally among those keeping false alarms on their drug-free
sentences at or below a rate (a pharmacy that will tolerate one false alarm in 10 minutes says
so: `--max-false-alarms 1`); `s2t-hf calibrate --sentences` saves it in `calibration.json` as
`spot_threshold`, which `S2T.spot` then uses by default.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..speech.synthesis import read_manifest
from ..text.lexicon import normalize_label

FLOOR_THRESHOLD = -4.0  # the lowest threshold a fit considers: below it most detections are filler
ROUNDING = 5e-5  # half the last decimal of a detection's reported score


def overlaps(first: dict, second: dict) -> bool:
    return first["start"] < second["end"] and second["start"] < first["end"]


def spot_sentences(recogniser, manifest: str | Path, threshold: float = FLOOR_THRESHOLD, max_sentences: int | None = None,
                   progress: bool = True) -> tuple[list[dict], float]:
    """Every sentence of `manifest` spotted at `threshold`: one record each (path, text, duration,
    its reference names with times, the detections as dicts), and the seconds spotting took."""
    rows = read_manifest(manifest)[:max_sentences]
    folder = Path(manifest).parent
    sentences, spent = [], 0.0
    for row in tqdm(rows, desc="spotting sentences", disable=not progress):
        started = time.perf_counter()
        result = recogniser.spot(str(folder / row["path"]), threshold=threshold)
        spent += time.perf_counter() - started
        sentences.append({"path": row["path"], "text": row["text"], "duration": result.duration, "names": json.loads(row["names"]),
                          "found": [name.to_dict() for name in result.names]})
    return sentences, spent


def score_spotting(sentences: list[dict], threshold: float, names: set[str]) -> dict:
    """Precision, recall, F1, name top-1, time errors and false alarms of the detections scoring
    at least `threshold`. `names`: the lexicon's labels; reference words outside it (the
    real-voice check's ordinary words) are not drug names and not counted."""
    right = wrong_name = false_alarms = references = detections = outside = 0
    start_errors, end_errors = [], []
    drug_free_seconds = outside_seconds = 0.0
    for sentence in sentences:
        found = [name for name in sentence["found"] if name["spot_score"] >= threshold]
        truth = [name for name in sentence["names"] if normalize_label(name["name"]) in names]
        references += len(truth)
        detections += len(found)
        outside_seconds += sentence["duration"] - sum(name["end"] - name["start"] for name in sentence["names"])
        outside += sum(not any(overlaps(detection, name) for name in sentence["names"]) for detection in found)
        if not sentence["names"]:
            drug_free_seconds += sentence["duration"]
            false_alarms += len(found)
            continue
        unmatched = list(truth)
        for detection in found:
            same_time = [reference for reference in unmatched if overlaps(detection, reference)]
            label = normalize_label(detection["name"])
            match = next((reference for reference in same_time if normalize_label(reference["name"]) == label), None)
            if match is not None:
                right += 1
                unmatched.remove(match)
                start_errors.append(abs(detection["start"] - match["start"]) * 1000)
                end_errors.append(abs(detection["end"] - match["end"]) * 1000)
            elif same_time:
                wrong_name += 1
    precision = right / detections if detections else 0.0
    recall = right / references if references else 0.0
    return {
        "threshold": threshold, "references": references, "detections": detections, "right": right,
        "precision": round(precision, 4), "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "spotted_name_top1": round(right / (right + wrong_name), 4) if right + wrong_name else None,
        "start_error_ms": round(sum(start_errors) / len(start_errors), 1) if start_errors else None,
        "end_error_ms": round(sum(end_errors) / len(end_errors), 1) if end_errors else None,
        "drug_free_minutes": round(drug_free_seconds / 60, 2),
        "false_alarms": false_alarms,
        "false_alarms_per_10_min": round(10 * false_alarms / (drug_free_seconds / 60), 2) if drug_free_seconds else None,
        "minutes_outside_names": round(outside_seconds / 60, 2),
        "false_alarms_outside_names": outside,
        "false_alarms_outside_names_per_10_min": round(10 * outside / (outside_seconds / 60), 2) if outside_seconds else None,
    }


def fit_spot_threshold(sentences: list[dict], names: set[str], floor: float = FLOOR_THRESHOLD,
                       max_false_alarms: float | None = None) -> dict:
    """The threshold with the best F1 on `sentences` (spotted at `floor` or lower), and its scores.
    F1 changes only where a detection's score is crossed, so every detection score at or above
    `floor` is a candidate; among equal F1s the highest threshold wins (fewer false alarms). With
    `max_false_alarms`, only thresholds with at most that many false alarms per 10 minutes of the
    drug-free sentences are candidates. The threshold returned sits `ROUNDING` below the chosen
    score: detections report their score to 4 decimals, and the spotter compares the unrounded one."""
    candidates = sorted({name["spot_score"] for sentence in sentences for name in sentence["found"]
                         if name["spot_score"] >= floor}, reverse=True)
    if not any(sentence["names"] for sentence in sentences):
        raise ValueError("no sentence names a drug: a threshold cannot be fitted on drug-free sentences alone")
    if not candidates:
        raise ValueError(f"nothing was spotted at or above {floor} per letter: the model does not spot these sentences")
    if max_false_alarms is not None and not any(not sentence["names"] for sentence in sentences):
        raise ValueError("a false-alarm limit needs drug-free sentences to count false alarms on (drug_free_sentences_per_voice, "
                         "drug_free_words_per_voice or decoy_sentences_per_voice in the recipe)")
    best = None
    for threshold in candidates:  # highest first: a tie keeps the higher threshold
        scored = score_spotting(sentences, threshold, names)
        if max_false_alarms is not None and scored["false_alarms_per_10_min"] > max_false_alarms:
            break  # a lower threshold only adds detections
        if best is None or scored["f1"] > best["f1"]:
            best = scored
    if best is None:
        raise ValueError(f"every threshold at which something is spotted gives more than {max_false_alarms:g} false alarms per 10 "
                         "minutes of the drug-free sentences")
    if best["f1"] == 0:
        raise ValueError("no detection at or above the floor names a drug of its sentence: F1 is 0 at every threshold")
    return {**best, "threshold": best["threshold"] - ROUNDING}
