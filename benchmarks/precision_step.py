#!/usr/bin/env python
"""A training step's time in float32 and under bfloat16 autocast on this CPU.

Times a forward and backward pass (every weight trainable) of a model folder's model on random
features and labels, `--batch` clips at a time, after two warm-up steps, in float32 and under
`torch.autocast("cpu", dtype=torch.bfloat16)`; prints both with the CPU's flags (native bf16:
`avx512_bf16` or `amx_bf16`; without them bf16 is emulated and slower, which is why recipes fall
back to fp32 there: `s2t_hf/training/precision.py`) and writes JSON.

    python benchmarks/precision_step.py outputs/quickstart
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

import torch  # noqa: E402

from s2t_hf import S2T  # noqa: E402
from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an encoder-decoder model folder (e.g. outputs/quickstart)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "precision_step.json"))
    args = parser.parse_args()
    recogniser = S2T.from_pretrained(args.model)
    if not recogniser.is_seq2seq:
        parser.error(f"{args.model}: this benchmark times an encoder-decoder (Whisper, Speech2Text)")
    model = recogniser.model.train()
    extractor = recogniser.processor.feature_extractor
    frames = extractor.nb_max_frames if hasattr(extractor, "nb_max_frames") else 300
    features = torch.randn(args.batch, extractor.feature_size, frames)
    labels = torch.randint(0, 1000, (args.batch, 8))

    def step() -> None:
        model(input_features=features, labels=labels).loss.backward()
        model.zero_grad()

    seconds = {}
    for name, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            step()
            step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
        seconds[name] = (time.perf_counter() - start) / args.steps
    print(f"{args.model}: batch {args.batch}, {frames} feature frames, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores ({noted_cpu_flags()})")
    for name, value in seconds.items():
        print(f"  {name}: {value:.3f} s a step")
    Path(args.output).write_text(json.dumps({
        "model": args.model, "batch": args.batch, "frames": frames, "seconds_a_step": seconds,
        "machine": {"cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "platform": platform.platform()},
    }, indent=1))


if __name__ == "__main__":
    main()
