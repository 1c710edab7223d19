#!/usr/bin/env python
"""How long ranking a lexicon takes for one clip, on this machine's CPU.

Times `CTCRanker` (the prefix-tree CTC forward every s2t-hf ranking uses) against
`torch.nn.functional.ctc_loss` over every name (what it replaced), for the 1,128 common names
and the 6,528 generic + brand names, on one clip's CTC output, and checks both give the same
ranking. The log-probabilities come from the model when one is given (`--model`, with a real
clip from `--clip`), else from random frames with the quickstart model's frame rate (25 frames
a second). Only the ranking is timed; the acoustic model's forward pass is timed separately.

    python benchmarks/ranking_speed.py --model outputs/quickstart --clip data/quickstart/clips/.../metformin.wav
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2t_hf.decoding.ctc import CTCRanker
from s2t_hf.decoding.ranking import pad_ids
from s2t_hf.models.processor import build_processor
from s2t_hf.text.lexicon import load_lexicon
from s2t_hf.text.vocabulary import encode_labels


def ctc_loss_scores(log_probs: torch.Tensor, label_ids: list[list[int]], blank: int) -> torch.Tensor:
    """The reference: ctc_loss over every name at once, divided by label length."""
    frames, vocab = log_probs.shape
    targets, lengths = pad_ids(label_ids, fill=0)
    nll = F.ctc_loss(
        log_probs.unsqueeze(1).expand(frames, len(label_ids), vocab), targets, torch.full((len(label_ids),), frames),
        lengths, blank=blank, reduction="none",
    )
    return -nll / lengths


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model folder; with --clip, rank its real output")
    parser.add_argument("--clip", default=None, help="an audio file for --model")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length for random frames (default 2 s)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/ranking_speed.json")
    args = parser.parse_args()

    model_ms = None
    if args.model and args.clip:
        from s2t_hf import S2T

        recogniser = S2T.from_pretrained(args.model)
        inputs = recogniser.process(args.clip)
        with torch.no_grad():
            model_ms = timed(lambda: recogniser.model(**inputs), args.repeats)
            log_probs = recogniser.model(**inputs).logits.float().log_softmax(-1)[0]
        source = f"{args.model} on {args.clip} ({log_probs.shape[0]} frames)"
    else:
        generator = torch.Generator().manual_seed(0)
        log_probs = None  # built per lexicon below, once the vocabulary is known
        source = f"random frames, {args.seconds:g} s at 25 frames/s"

    rows = []
    for name, lexicon in [("common", load_lexicon("common")), ("generic + brand", load_lexicon("generic") + load_lexicon("brand"))]:
        tokenizer = recogniser.processor.tokenizer if args.model and args.clip else build_processor(lexicon).tokenizer
        label_ids = encode_labels(tokenizer, lexicon)
        if log_probs is None or log_probs.shape[1] != len(tokenizer):
            frames = round(args.seconds * 25)
            log_probs = (torch.randn(frames, len(tokenizer), generator=generator) * 4).log_softmax(-1)
        ranker = CTCRanker(lexicon, label_ids, tokenizer.pad_token_id)
        # what S2T ranks with: an optional '|' between words and at the ends
        with_breaks = CTCRanker.for_tokenizer(lexicon, tokenizer)
        ours = ranker.scores(log_probs.unsqueeze(0))[0]
        reference = ctc_loss_scores(log_probs, label_ids, tokenizer.pad_token_id)
        same_top10 = ours.topk(10).indices.tolist() == reference.topk(10).indices.tolist()
        finite = torch.isfinite(reference)
        rows.append({
            "lexicon": name,
            "names": len(lexicon),
            "prefix_tree_nodes": len(ranker.trie),
            "prefix_tree_ms": round(timed(lambda: ranker.rank(log_probs.unsqueeze(0), top_k=10), args.repeats), 1),
            "word_breaks_nodes": len(with_breaks.trie),
            "word_breaks_ms": round(timed(lambda: with_breaks.rank(log_probs.unsqueeze(0), top_k=10), args.repeats), 1),
            "ctc_loss_ms": round(timed(lambda: ctc_loss_scores(log_probs, label_ids, tokenizer.pad_token_id).topk(10), args.repeats), 1),
            "same_top10": same_top10,
            "max_score_difference": float((ours[finite] - reference[finite]).abs().max()),
        })
    print(f"Ranking one clip: {source}; {torch.get_num_threads()} CPU threads; median of {args.repeats}")
    if model_ms is not None:
        print(f"(the model's own forward pass on that clip: {model_ms:.1f} ms)")
    print("| lexicon | names | prefix-tree nodes | s2t-hf ranking (ms) | with optional word breaks: nodes, ms | ctc_loss, all names in one call (ms) "
          "| same top-10 | max score difference |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(f"| {row['lexicon']} | {row['names']} | {row['prefix_tree_nodes']} | {row['prefix_tree_ms']} | {row['word_breaks_nodes']}, "
              f"{row['word_breaks_ms']} | {row['ctc_loss_ms']} | {row['same_top10']} | {row['max_score_difference']:.1e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"source": source, "threads": torch.get_num_threads(), "model_forward_ms": model_ms, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
