#!/usr/bin/env python
"""Where Whisper spotting spends its time, part by part, on sentences of a sentence manifest.

Wraps the parts of `s2t_hf.decoding.whisper_spotting` (the greedy transcript, candidate spans,
alignment-head timing, each span's in-place ranking: building its token tree and searching it)
with timers, spots every `--every`-th sentence with `S2T.spot` (alone, or `--join N` of them
as one recording, whose windows are decoded side by side), and prints per part the total, the
calls and the time a call, with the real-time factor of the whole; writes the same as JSON.
The parts are timed where they run, so the profile costs nothing beyond the timers.

    python benchmarks/whisper_spotting_profile.py outputs/whisper-spotting --lexicon common \
        --manifest data/quickstart/manifest-sentences-test.tsv
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import s2t_hf.decoding.whisper_spotting as whisper_spotting  # noqa: E402
import s2t_hf.inference.spotting as spotting  # noqa: E402
from s2t_hf import S2T  # noqa: E402
from s2t_hf.audio.reading import SAMPLING_RATE, read_usable_audio  # noqa: E402
from s2t_hf.decoding.whisper import WhisperRanker  # noqa: E402
from s2t_hf.speech.sentences import common_words  # noqa: E402
from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402

PARTS = {  # part: (owner, attribute), each replaced by a timed wrapper of itself
    "windows, all of it": (spotting, "_whisper_windows"),
    "greedy transcripts (windows side by side)": (whisper_spotting.WhisperSpotter, "transcribe_windows"),
    "candidate spans": (whisper_spotting, "candidate_spans"),
    "times (alignment heads)": (whisper_spotting, "token_times"),
    "candidate's bound from the greedy steps": (whisper_spotting.WhisperSpotter, "no_name_within_gap"),
    "span ranked in place": (whisper_spotting.WhisperSpotter, "in_place"),
    "  its token tree (ranker built)": (WhisperRanker, "__init__"),
    "  its search": (WhisperRanker, "scores"),
}


def time_parts() -> tuple[dict[str, float], collections.Counter]:
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    for part, (owner, attribute) in PARTS.items():
        original = getattr(owner, attribute)

        def timed(*args, _original=original, _part=part, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_part] += time.perf_counter() - start
                calls[_part] += 1

        setattr(owner, attribute, timed)
    return spent, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a Whisper model folder that spots (e.g. outputs/whisper-spotting)")
    parser.add_argument("--manifest", required=True, help="a sentence manifest (path column)")
    parser.add_argument("--lexicon", default=None, help="names to rank (default: the model's own)")
    parser.add_argument("--every", type=int, default=25, help="spot every N-th sentence (default 25)")
    parser.add_argument("--sentences-only", action="store_true",
                        help="leave out the ordinary words said alone (drug_free_words_per_voice): time sentences only")
    parser.add_argument("--join", type=int, default=1, metavar="N",
                        help="time recordings of N sentences joined (0.5 s of silence between, as benchmarks/spotting.py --joined): "
                             "a recording's windows are decoded side by side (default 1: each sentence alone)")
    parser.add_argument("--quantize", default=None, choices=["int8"], help="load the model int8-quantized (S2T.from_pretrained)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "whisper_spotting_profile.json"))
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model, lexicon=args.lexicon, quantize=args.quantize)
    manifest = Path(args.manifest)
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if args.sentences_only:
        words = set(common_words())
        rows = [row for row in rows if not (row["text"] in words and json.loads(row.get("names") or "[]") == [])]
    rows = rows[:: args.every]
    clips = [read_usable_audio(str(manifest.parent / row["path"])) for row in rows]
    gap = np.zeros(SAMPLING_RATE // 2, dtype=np.float32)
    recordings = [clips[first] if args.join == 1 else
                  np.concatenate([part for clip in clips[first : first + args.join] for part in (clip, gap)])
                  for first in range(0, len(clips), args.join)]
    audio_seconds = sum(len(recording) for recording in recordings) / SAMPLING_RATE
    spent, calls = time_parts()  # after loading: the recogniser's own ranker is not counted
    started = time.perf_counter()
    for recording in recordings:
        recogniser.spot((recording, SAMPLING_RATE))
    total = time.perf_counter() - started
    table = [
        {"part": part, "seconds": round(spent[part], 3), "calls": calls[part],
         "ms_a_call": round(1000 * spent[part] / calls[part], 1) if calls[part] else None,
         "ms_a_sentence": round(1000 * spent[part] / len(rows), 1)}
        for part in PARTS
    ]
    # every candidate span is bounded first; those the bound does not pass over are ranked in place
    passed_over = calls["candidate's bound from the greedy steps"] - calls["span ranked in place"]
    print(f"{len(rows)} sentences in {len(recordings)} recordings, {audio_seconds:.1f} s of audio, spotted in {total:.1f} s: "
          f"real-time factor {total / audio_seconds:.3f} on {os.cpu_count()} cores ({noted_cpu_flags()}); "
          f"{passed_over} candidate spans passed over")
    print("| part | s | calls | ms a call | ms a sentence |\n|---|---:|---:|---:|---:|")
    for row in table:
        print(f"| {row['part']} | {row['seconds']} | {row['calls']} | {row['ms_a_call']} | {row['ms_a_sentence']} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "model": args.model, "manifest": args.manifest, "lexicon": args.lexicon, "quantize": args.quantize,
        "sentences_only": args.sentences_only, "sentences": len(rows), "joined": args.join, "recordings": len(recordings),
        "audio_seconds": round(audio_seconds, 2), "seconds": round(total, 2), "real_time_factor": round(total / audio_seconds, 4),
        "cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "spans_passed_over": passed_over, "parts": table,
    }, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
