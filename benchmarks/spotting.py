#!/usr/bin/env python
"""Spotting drug names in sentences of voices never heard in training.

Runs `S2T.spot` on every sentence of a sentence manifest (`manifest-sentences-test.tsv`, written
when a recipe sets `sentences_per_voice`; each row lists its names with their exact times) and
reports, per threshold:

- precision, recall and F1 of names (a detection is right when it names a name of the sentence
  and overlaps that name's time; each reference is matched once);
- top-1 of the spotted name: of the detections that overlap a reference name in time, the share
  that name it correctly;
- start and end error (ms) of the right detections;
- false alarms per 10 minutes on the drug-free sentences, and per 10 minutes of all the speech
  outside the names (carrier phrases too: a larger sample);
- real-time factor (spotting time / audio time) on this machine.

One spotting pass at the lowest threshold; a higher threshold keeps the detections scoring at
least it (the best-first selection takes them in the same order).

    python benchmarks/spotting.py outputs/spotting --manifest data/quickstart/manifest-sentences-test.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2t_hf import S2T  # noqa: E402
from s2t_hf.speech.synthesis import read_manifest  # noqa: E402
from s2t_hf.text.lexicon import normalize_label  # noqa: E402


def cpu_flags() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    return " ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags)


def overlaps(first: dict, second: dict) -> bool:
    return first["start"] < second["end"] and second["start"] < first["end"]


def score(sentences: list[dict], threshold: float, names: set[str]) -> dict:
    right = wrong_name = false_alarms = references = detections = outside = 0
    start_errors, end_errors = [], []
    drug_free_seconds = outside_seconds = 0.0
    for sentence in sentences:
        found = [name for name in sentence["found"] if name["spot_score"] >= threshold]
        truth = [name for name in sentence["names"] if normalize_label(name["name"]) in names]  # words outside the lexicon: not drug names
        references += len(truth)
        detections += len(found)
        # speech outside every name (carrier phrases and drug-free sentences): detections there are false alarms too
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--manifest", required=True, help="a manifest-sentences-<split>.tsv")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-1.0, -0.75, -0.5, -0.35, -0.25, -0.15, -0.1])
    parser.add_argument("--max-sentences", type=int, default=None)
    parser.add_argument("--lexicon", default=None, help="names to spot (default: the model's lexicon.txt); reference names outside it are "
                                                       "not counted (e.g. the real-voice check's ordinary words)")
    parser.add_argument("--output", default="benchmarks/results/spotting.json")
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model, lexicon=args.lexicon)
    names = {entry.label for entry in recogniser.lexicon}
    rows = read_manifest(args.manifest)[: args.max_sentences]
    folder = Path(args.manifest).parent
    sentences, spent, audio_seconds = [], 0.0, 0.0
    for number, row in enumerate(rows):
        started = time.perf_counter()
        result = recogniser.spot(str(folder / row["path"]), threshold=min(args.thresholds))
        spent += time.perf_counter() - started
        audio_seconds += result.duration
        sentences.append({"path": row["path"], "text": row["text"], "duration": result.duration, "names": json.loads(row["names"]),
                          "found": [name.to_dict() for name in result.names]})
        if number % 100 == 0:
            print(f"{number}/{len(rows)} sentences", file=sys.stderr)
    table = [score(sentences, threshold, names) for threshold in sorted(args.thresholds)]
    columns = ["threshold", "precision", "recall", "f1", "spotted_name_top1", "start_error_ms", "end_error_ms", "false_alarms_per_10_min",
               "false_alarms_outside_names_per_10_min"]
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row[column]) for column in columns))
    rtf = spent / audio_seconds
    print(f"{len(rows)} sentences, {audio_seconds / 60:.1f} min of audio; real-time factor {rtf:.3f} "
          f"on {os.cpu_count()} cores ({cpu_flags()})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "model": args.model, "lexicon": args.lexicon, "manifest": args.manifest, "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform()},
        "sentences": len(rows), "audio_minutes": round(audio_seconds / 60, 2), "real_time_factor": round(rtf, 4), "by_threshold": table,
        "examples": sentences[:20],
    }, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
