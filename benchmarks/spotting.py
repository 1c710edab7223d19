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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2t_hf import S2T  # noqa: E402
from s2t_hf.evaluation.spotting import fit_spot_threshold, score_spotting, spot_sentences  # noqa: E402


def cpu_flags() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    return " ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags)


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
    sentences, spent = spot_sentences(recogniser, args.manifest, min(args.thresholds), args.max_sentences)
    audio_seconds = sum(sentence["duration"] for sentence in sentences)
    table = [score_spotting(sentences, threshold, names) for threshold in sorted(args.thresholds)]
    best = fit_spot_threshold(sentences, names, floor=min(args.thresholds))  # what `s2t-hf calibrate --sentences` would save
    columns = ["threshold", "precision", "recall", "f1", "spotted_name_top1", "start_error_ms", "end_error_ms", "false_alarms_per_10_min",
               "false_alarms_outside_names_per_10_min"]
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row[column]) for column in columns))
    rtf = spent / audio_seconds
    print(f"best F1 at {best['threshold']:.3f} per letter: F1 {best['f1']}, precision {best['precision']}, recall {best['recall']}")
    print(f"{len(sentences)} sentences, {audio_seconds / 60:.1f} min of audio; real-time factor {rtf:.3f} "
          f"on {os.cpu_count()} cores ({cpu_flags()})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "model": args.model, "lexicon": args.lexicon, "manifest": args.manifest, "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform()},
        "sentences": len(sentences), "audio_minutes": round(audio_seconds / 60, 2), "real_time_factor": round(rtf, 4), "by_threshold": table,
        "best_f1": best,
        "examples": sentences[:20],
    }, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
