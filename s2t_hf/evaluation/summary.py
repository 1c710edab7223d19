"""Prediction records to every number a report shows: top-1..10, CER, per group, the
sound-alike subset, calibration error, the ambiguity flag's trade-off and out-of-lexicon
detection.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..decoding.ranking import RANKED_FOR_METRICS
from ..inference.calibration import Calibration, expected_calibration_error
from ..text.sound_alike import partners_in_lexicon
from .manifests import ManifestError
from .metrics import TOP_KS, character_error_rate, top_k_accuracy


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
