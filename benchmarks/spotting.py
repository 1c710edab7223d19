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
- real-time factor (spotting time / audio time) on this machine;
- with `--drug-free MANIFEST`, false alarms on recordings that hold no drug name (real people
  saying ordinary words: the real-voice check);
- with `--joined N`, the same measures on recordings of N sentences each (long recordings:
  overlapping windows, merged).

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from s2t_hf import S2T  # noqa: E402
from s2t_hf.audio.reading import SAMPLING_RATE, read_usable_audio  # noqa: E402
from s2t_hf.evaluation.spotting import fit_spot_threshold, score_spotting, spot_sentences  # noqa: E402
from s2t_hf.speech.synthesis import read_manifest  # noqa: E402
from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402


def false_alarms_on(recogniser, manifest: str, thresholds: list[float]) -> dict:
    """Every recording of `manifest` (none says a drug name) spotted at the lowest threshold:
    the detections at each threshold are false alarms."""
    folder = Path(manifest).parent
    rows = read_manifest(manifest)
    found, seconds = [], 0.0
    for row in tqdm(rows, desc="drug-free recordings"):
        result = recogniser.spot(str(folder / row["path"]), threshold=thresholds[0])
        seconds += result.duration
        found.extend((name.spot_score, name.name, row["path"]) for name in result.names)
    table = []
    for threshold in thresholds:
        alarms = [(name, path) for score, name, path in found if score >= threshold]
        table.append({"threshold": threshold, "false_alarms": len(alarms), "per_10_min": round(len(alarms) / seconds * 600, 2),
                      "names": alarms})
    return {"manifest": manifest, "recordings": len(rows), "minutes": round(seconds / 60, 2), "by_threshold": table}


def spot_joined(recogniser, manifest: str, count: int, threshold: float, max_sentences: int | None) -> dict:
    """The manifest's sentences joined `count` at a time (0.5 s of silence between), each
    recording spotted whole: records as `spot_sentences` gives them, names' times shifted."""
    folder = Path(manifest).parent
    rows = read_manifest(manifest)[:max_sentences]
    gap = np.zeros(SAMPLING_RATE // 2, dtype=np.float32)
    records, seconds = [], 0.0
    for first in tqdm(range(0, len(rows) - count + 1, count), desc=f"recordings of {count} sentences"):
        pieces, names, offset = [], [], 0.0
        for row in rows[first : first + count]:
            clip = read_usable_audio(str(folder / row["path"]))
            names.extend({**name, "start": name["start"] + offset, "end": name["end"] + offset} for name in json.loads(row["names"]))
            pieces.extend([clip, gap])
            offset += (len(clip) + len(gap)) / SAMPLING_RATE
        result = recogniser.spot((np.concatenate(pieces), SAMPLING_RATE), threshold=threshold)
        seconds += result.duration
        records.append({"duration": result.duration, "names": names, "found": [name.to_dict() for name in result.names]})
    return {"recordings": len(records), "minutes": round(seconds / 60, 2), "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--manifest", required=True, help="a manifest-sentences-<split>.tsv")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-1.0, -0.75, -0.5, -0.35, -0.25, -0.15, -0.1])
    parser.add_argument("--max-sentences", type=int, default=None)
    parser.add_argument("--lexicon", default=None, help="names to spot (default: the model's lexicon.txt); reference names outside it are "
                                                       "not counted (e.g. the real-voice check's ordinary words)")
    parser.add_argument("--quantize", default=None, choices=["int8"], help="load the model int8-quantized (S2T.from_pretrained)")
    parser.add_argument("--output", default="benchmarks/results/spotting.json")
    parser.add_argument("--records", default=None,
                        help="also write every sentence's detections here (JSON), to score other thresholds later")
    parser.add_argument("--drug-free", default=None, metavar="MANIFEST",
                        help="also count false alarms on these recordings, which hold no drug name (a manifest with a path column; "
                             "e.g. the real-voice check's recordings of people saying ordinary words)")
    parser.add_argument("--joined", type=int, default=0, metavar="N",
                        help="also spot recordings made of N sentences one after another (0.5 s apart): long recordings, searched "
                             "in windows (CTC: overlapping, detections merged; Whisper: cut at pauses)")
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model, lexicon=args.lexicon, quantize=args.quantize)
    names = {entry.label for entry in recogniser.lexicon}
    sentences, spent = spot_sentences(recogniser, args.manifest, min(args.thresholds), args.max_sentences)
    audio_seconds = sum(sentence["duration"] for sentence in sentences)
    table = [score_spotting(sentences, threshold, names) for threshold in sorted(args.thresholds)]
    best = fit_spot_threshold(sentences, names, floor=min(args.thresholds))  # what `s2t-hf calibrate --sentences` would save
    columns = ["threshold", "precision", "recall", "f1", "spotted_name_top1", "start_error_ms", "end_error_ms", "false_alarms_per_10_min",
               "false_alarms_outside_names_per_10_min"]
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row[column]) for column in columns))
    drug_free = None
    if args.drug_free:
        drug_free = false_alarms_on(recogniser, args.drug_free, sorted(args.thresholds))
        for row in drug_free["by_threshold"]:
            print(f"drug-free recordings ({drug_free['recordings']}, {drug_free['minutes']} min): threshold {row['threshold']}: "
                  f"{row['false_alarms']} false alarms, {row['per_10_min']} per 10 min {row['names'][:5]}")
    joined = None
    if args.joined:
        joined = spot_joined(recogniser, args.manifest, args.joined, min(args.thresholds), args.max_sentences)
        records = joined.pop("records")
        joined["by_threshold"] = [score_spotting(records, threshold, names) for threshold in sorted(args.thresholds)]
        for row in joined["by_threshold"]:
            print(f"joined ({joined['recordings']} recordings of {args.joined} sentences, {joined['minutes']} min): threshold "
                  f"{row['threshold']}: precision {row['precision']}, recall {row['recall']}, F1 {row['f1']}")
    rtf = spent / audio_seconds
    print(f"best F1 at {best['threshold']:.3f} (per letter, CTC; per token, Whisper): F1 {best['f1']}, "
          f"precision {best['precision']}, recall {best['recall']}")
    print(f"{len(sentences)} sentences, {audio_seconds / 60:.1f} min of audio; real-time factor {rtf:.3f} "
          f"on {os.cpu_count()} cores ({noted_cpu_flags()})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "model": args.model, "lexicon": args.lexicon, "manifest": args.manifest, "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "platform": platform.platform()},
        "sentences": len(sentences), "audio_minutes": round(audio_seconds / 60, 2), "real_time_factor": round(rtf, 4), "by_threshold": table,
        "best_f1": best, "drug_free": drug_free, "joined": joined,
        "examples": sentences[:20],
    }, indent=2) + "\n")
    print(f"wrote {args.output}")
    if args.records:
        Path(args.records).write_text(json.dumps(sentences) + "\n")
        print(f"wrote {args.records}")


if __name__ == "__main__":
    main()
