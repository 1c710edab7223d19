#!/usr/bin/env python
"""Where a served Whisper clip's time goes, part by part, and what the search's settings change.

Scores random clips of a manifest in batches of `--batch` (16: what the service's dynamic
batching gathers under load) as `S2T.score_batch` does, on `--threads` PyTorch threads (1: each
of the service's two batch workers has one core), timing each part: features, encoder, the
prompt and cross-attention keys (`Prompted`), the greedy transcript, and the names' search.
Each variant runs the same clips: the ranker as `S2T` builds it, then any given with
`--variant '{"round_size": 4}'` (WhisperRanker attributes). Per variant: ms a clip by part,
the search's nodes expanded and projected (median, mean, 90th percentile), top-1 against the
manifest, and how many clips' best name equals the first variant's (the search is exact: all
must, ties aside). Prints a table; writes JSON.

    python benchmarks/whisper_serving_profile.py outputs/quickstart --manifest data/quickstart/manifest-test.tsv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

from s2t_hf import S2T  # noqa: E402
from s2t_hf.decoding import whisper  # noqa: E402
from s2t_hf.models.processor import INPUT_LENGTHS, clip_features, pad_features  # noqa: E402
from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402

PARTS = ("features", "encoder", "prompt and keys", "greedy transcript", "names' search")


@torch.no_grad()
def profile(recogniser: S2T, clips: list[np.ndarray], labels: list[str], batch: int) -> dict:
    model, ranker, extractor = recogniser.model, recogniser.ranker, recogniser.processor.feature_extractor
    decoder, projection = whisper._parts(model)
    spent = dict.fromkeys(PARTS, 0.0)
    stats, tops, hits = [], [], 0
    for first in range(0, len(clips), batch):
        marks = [time.perf_counter()]
        inputs = pad_features(extractor, clip_features(extractor, clips[first : first + batch]))
        inputs.pop(INPUT_LENGTHS)
        marks.append(time.perf_counter())
        hidden = model.get_encoder()(input_features=inputs["input_features"]).last_hidden_state
        marks.append(time.perf_counter())
        prompted = whisper.Prompted(decoder, list(hidden), ranker.prompt_ids)
        marks.append(time.perf_counter())
        ranker.greedy(model, prompted, recogniser.max_new_tokens)
        marks.append(time.perf_counter())
        scores = ranker._searched_scores(decoder, projection, list(hidden), prompted, 5)
        marks.append(time.perf_counter())
        for part, start, end in zip(PARTS, marks, marks[1:]):
            spent[part] += end - start
        stats += ranker.last_stats
        for row, label in zip(scores, labels[first : first + batch]):
            tops.append(int(row.argmax()))
            entry = recogniser.lexicon[tops[-1]]
            hits += label in (entry.name, entry.label)
    expanded = [clip["nodes_expanded"] for clip in stats]
    projected = [clip["projections"] for clip in stats]
    summary = lambda counts: {"median": float(np.median(counts)), "mean": float(np.mean(counts)), "p90": float(np.percentile(counts, 90))}  # noqa: E731
    ms = {part: 1000 * seconds / len(clips) for part, seconds in spent.items()}
    return {"ms_a_clip": ms, "total_ms_a_clip": sum(ms.values()), "nodes_expanded": summary(expanded), "projections": summary(projected),
            "top1": hits / len(clips), "best": tops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a Whisper model folder (e.g. outputs/quickstart)")
    parser.add_argument("--manifest", default="data/quickstart/manifest-test.tsv")
    parser.add_argument("--clips", type=int, default=320, help="random clips of the manifest (default 320)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quantize", default=None, choices=["int8"], help="load the model int8-quantized (S2T.from_pretrained)")
    parser.add_argument("--variant", action="append", default=[], help="JSON of WhisperRanker attributes, e.g. '{\"round_size\": 4}'")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "whisper_serving_profile.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recogniser = S2T.from_pretrained(args.model, quantize=args.quantize)
    if not isinstance(recogniser.ranker, whisper.WhisperRanker):
        parser.error(f"{args.model} is not a Whisper model: this profile times Whisper's parts")
    manifest = Path(args.manifest)
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows = random.Random(0).sample(rows, min(args.clips, len(rows)))
    clips = [soundfile.read(manifest.parent / row["path"], dtype="float32")[0] for row in rows]
    labels = [row["text"] for row in rows]
    recogniser.score_batch(clips[: args.batch])  # warm-up: allocator pools, lazy imports
    variants = [{}] + [json.loads(text) for text in args.variant]
    defaults = {key: getattr(recogniser.ranker, key) for variant in variants for key in variant}
    results, load_before = [], os.getloadavg()
    for variant in variants:
        for key, value in {**defaults, **variant}.items():
            setattr(recogniser.ranker, key, value)
        result = profile(recogniser, clips, labels, args.batch)
        result["variant"] = variant
        first = results[0]["best"] if results else result["best"]
        result["same_best_as_first"] = sum(a == b for a, b in zip(result["best"], first)) / len(clips)
        results.append(result)
    quantized = f" ({args.quantize})" if args.quantize else ""
    print(f"{args.model}{quantized}: {len(clips)} clips of {manifest}, batches of {args.batch}, {args.threads} thread(s), "
          f"{os.cpu_count()} cores ({noted_cpu_flags()}); load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| variant | " + " | ".join(PARTS)
          + " | all, ms a clip | clips/s | nodes expanded (median / mean / p90) | projected | top-1 | same best name |")
    print("|---" * (len(PARTS) + 7) + "|")
    for result in results:
        ms, expanded, projected = result["ms_a_clip"], result["nodes_expanded"], result["projections"]
        print(f"| {json.dumps(result['variant'])} | " + " | ".join(f"{ms[part]:.1f}" for part in PARTS)
              + f" | {result['total_ms_a_clip']:.1f} | {1000 / result['total_ms_a_clip']:.1f}"
              + f" | {expanded['median']:.0f} / {expanded['mean']:.1f} / {expanded['p90']:.0f}"
              + f" | {projected['median']:.0f} / {projected['mean']:.1f} / {projected['p90']:.0f}"
              + f" | {result['top1']:.3f} | {result['same_best_as_first']:.3f} |")
    for result in results:
        del result["best"]
    Path(args.output).write_text(json.dumps({
        "model": args.model, "quantize": args.quantize, "manifest": str(manifest), "clips": len(clips), "batch": args.batch,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "platform": platform.platform()},
        "load_average": [load_before[0], os.getloadavg()[0]], "variants": results,
    }, indent=1))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
