#!/usr/bin/env python
"""How far below the best name is the right one, when it is among the top 5? The measurement
behind Whisper's `max_gap` (`s2t_hf.decoding.seq2seq.WHISPER_MAX_GAP`).

The search ranks only names within `max_gap` nats of the best; proving the order of names
farther down costs most of its work. This ranks each clip with a wider gap (`--search-gap`,
default 12), exactly, and counts the top-5 hits that a smaller gap would keep: if every hit lies
within g nats, ranking within g loses none of them.

    python benchmarks/whisper_ranking_gaps.py outputs/quickstart --manifest data/quickstart/manifest-test.tsv --clips 600
    python benchmarks/whisper_ranking_gaps.py outputs/quickstart --manifest data/quickstart/manifest-test.tsv --clips 400 --snr 10
    python benchmarks/whisper_ranking_gaps.py outputs/quickstart --manifest /path/to/real-voice-words/manifest.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch

from s2t_hf.audio.channels import add_white_noise
from s2t_hf.evaluation.manifests import read_evaluation_manifest
from s2t_hf.evaluation.predictions import readable_batches
from s2t_hf.inference.recognizer import S2T

GAPS = (2, 4, 6, 8, 10, 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a Whisper model folder (the quickstart's: outputs/quickstart)")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--clips", type=int, default=None, help="a random subset of this many clips (default: all)")
    parser.add_argument("--snr", type=float, default=None, help="white noise at this SNR in dB (as `s2t-hf compare --snr`)")
    parser.add_argument("--search-gap", type=float, default=12.0, help="the gap the clips are ranked with (default 12)")
    parser.add_argument("--output", default=None, help="append the result to this JSON list (default: print only)")
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model)
    recogniser.ranker.max_gap = args.search_gap
    rows = read_evaluation_manifest(args.manifest)
    if args.clips is not None:
        rows = random.Random(0).sample(rows, min(args.clips, len(rows)))
    index_of = {entry.label: index for index, entry in enumerate(recogniser.lexicon)}
    hits: list[float] = []  # the gap of each top-5 hit
    clips, errors, started = 0, [], time.perf_counter()
    for batch in readable_batches(rows, recogniser.max_seconds, 16, errors, "ranking"):
        batch = [(position, index_of[label], clip) for position, _, label, clip in batch if label in index_of]
        audio = [clip if args.snr is None else add_white_noise(clip, args.snr, seed=position) for position, _, clip in batch]
        scores = recogniser.score_batch(audio, top_k=5).scores
        for (_, right, _), row in zip(batch, scores):
            clips += 1
            if right in row.topk(5).indices.tolist() and torch.isfinite(row[right]):
                hits.append(float(row.max() - row[right]))
    result = {
        "model": args.model, "manifest": args.manifest, "snr_db": args.snr, "clips": clips, "unreadable": len(errors),
        "search_gap": args.search_gap, "top1": round(sum(gap == 0 for gap in hits) / clips, 4), "top5": round(len(hits) / clips, 4),
        **{f"top5_within_{gap}": round(sum(hit <= gap for hit in hits) / clips, 4) for gap in GAPS},
        "largest_gap_of_a_top5_hit": round(max(hits), 2) if hits else None,
        "gaps_of_hits_below_the_best": sorted(round(hit, 2) for hit in hits if hit > 0),
        "seconds": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{clips} clips{'' if args.snr is None else f' at {args.snr:g} dB'}: top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%}, "
          f"farthest top-5 hit {result['largest_gap_of_a_top5_hit']} nats below the best")
    print("| gap (nats) | " + " | ".join(str(gap) for gap in GAPS) + " |")
    print("|---|" + "---:|" * len(GAPS))
    print("| top-5 within it | " + " | ".join(f"{result[f'top5_within_{gap}']:.1%}" for gap in GAPS) + " |")
    if args.output:
        path = Path(args.output)
        previous = json.loads(path.read_text()) if path.is_file() else []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(previous + [result], indent=2) + "\n")


if __name__ == "__main__":
    main()
