#!/usr/bin/env python
"""Speed and accuracy of Whisper spotting's knobs (`WhisperSpotter`'s keyword arguments:
`max_gap`, `context_words`, `fuzzy_cutoff`, `max_words`), one setting after another on the
same sentences, at the model's fitted spotting threshold.

Each setting is a JSON object of keyword arguments (`{}`: the defaults). Every `--every`-th row
of the manifest (default: a third of the validation voices' sentences and words) is spotted;
the table gives the real-time factor, precision, recall, F1, spotted-name top-1 and false
alarms of each; the JSON holds the same.

    python benchmarks/whisper_spotting_knobs.py outputs/whisper-spotting --lexicon common \
        --manifest data/quickstart/manifest-sentences-validation.tsv '{"max_gap": 12}' '{}'
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2t_hf import S2T  # noqa: E402
from s2t_hf.decoding.whisper_spotting import WhisperSpotter  # noqa: E402
from s2t_hf.evaluation.spotting import FLOOR_THRESHOLD, score_spotting, spot_sentences  # noqa: E402
from s2t_hf.inference.spotting import spotter_for  # noqa: E402
from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402

REPORTED = ["precision", "recall", "f1", "spotted_name_top1", "false_alarms", "drug_free_minutes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a Whisper model folder that spots (e.g. outputs/whisper-spotting)")
    parser.add_argument("settings", nargs="+", type=json.loads, help='WhisperSpotter keyword arguments as JSON, e.g. \'{"max_gap": 12}\'')
    parser.add_argument("--manifest", required=True, help="a sentence manifest (manifest-sentences-<split>.tsv)")
    parser.add_argument("--lexicon", default=None, help="names to spot (default: the model's own)")
    parser.add_argument("--every", type=int, default=3, help="spot every N-th row (default 3)")
    parser.add_argument("--quantize", default=None, choices=["int8"], help="load the model int8-quantized (S2T.from_pretrained)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "whisper_spotting_knobs.json"))
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model, lexicon=args.lexicon, quantize=args.quantize)
    threshold = recogniser.calibration.spot_threshold
    if threshold is None:
        parser.error(f"{args.model} has no fitted spot threshold: run s2t-hf calibrate {args.model} --sentences ... first")
    alignment_heads = spotter_for(recogniser).alignment_heads
    names = {entry.label for entry in recogniser.lexicon}
    manifest = Path(args.manifest).resolve()
    with manifest.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns, rows = reader.fieldnames, list(reader)[:: args.every]
    results = []
    with tempfile.TemporaryDirectory() as folder:  # the chosen rows, paths made absolute
        subset = Path(folder) / "manifest.tsv"
        with subset.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t")
            writer.writeheader()
            writer.writerows({**row, "path": str(manifest.parent / row["path"])} for row in rows)
        for setting in args.settings:
            recogniser._spotter = WhisperSpotter(recogniser.ranker, alignment_heads, **setting)
            sentences, seconds = spot_sentences(recogniser, subset, threshold=min(threshold, FLOOR_THRESHOLD))
            audio = sum(sentence["duration"] for sentence in sentences)
            scores = score_spotting(sentences, threshold, names)
            results.append({"setting": setting, "real_time_factor": round(seconds / audio, 4), **{key: scores[key] for key in REPORTED}})
    print(f"{len(rows)} rows of {args.manifest}, threshold {threshold:.3f}, {os.cpu_count()} cores ({noted_cpu_flags()})")
    print("| setting | RTF | precision | recall | F1 | spotted name right | false alarms |\n|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        print(f"| {json.dumps(row['setting'])} | {row['real_time_factor']} | {row['precision']} | {row['recall']} | {row['f1']} | "
              f"{row['spotted_name_top1']} | {row['false_alarms']} in {row['drug_free_minutes']} min |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "model": args.model, "manifest": args.manifest, "lexicon": args.lexicon, "every": args.every, "quantize": args.quantize,
        "rows": len(rows), "threshold": threshold, "cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
