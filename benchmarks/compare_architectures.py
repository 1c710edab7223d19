#!/usr/bin/env python
"""Which architecture learns drug names fastest from scratch on a CPU?

Trains each candidate with the quickstart recipe's data, augmentation and schedule for the
same number of minutes' worth of steps, then prints validation top-1/top-5 (on unseen voices)
and seconds per step, and writes the table as JSON.

    python benchmarks/compare_architectures.py --steps 600 --out benchmarks/results/architectures.json

Candidates: the mel-conformer the quickstart uses, and a small wav2vec 2.0 (raw-waveform
convolutional encoder + transformer) of similar size, both trained from scratch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from s2t_hf.training.arguments import read_recipe

ROOT = Path(__file__).resolve().parents[1]

CANDIDATES = {
    "mel-conformer (quickstart)": {"model_type": "mel-conformer-ctc"},
    "wav2vec2 small (waveform CNN + transformer)": {
        "model_type": "wav2vec2",
        "config_overrides": {
            "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 768,
            "conv_dim": [128, 128, 128, 128, 128, 128, 128], "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 8,
            "feat_extract_norm": "layer", "do_stable_layer_norm": True, "mask_time_prob": 0.05, "mask_time_length": 4,
            "hidden_dropout": 0.1, "activation_dropout": 0.0, "attention_dropout": 0.1, "feat_proj_dropout": 0.0,
        },
    },
}


def count_parameters(weights: Path) -> int:
    from math import prod

    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as tensors:
        return sum(prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())


def run_candidate(name: str, overrides: dict, steps: int, workdir: Path) -> dict:
    recipe = read_recipe(ROOT / "recipes" / "quickstart.json")  # with its base resolved
    recipe.pop("config_overrides", None)
    recipe.update(overrides)
    recipe.update(
        output_dir=str(workdir / name.split()[0]), max_steps=steps, eval_strategy="no", save_strategy="no",
        warmup_steps=min(recipe["warmup_steps"], steps // 5),
    )
    path = workdir / f"{name.split()[0]}.json"
    path.write_text(json.dumps(recipe))
    started = time.time()
    subprocess.run([sys.executable, str(ROOT / "run_ctc.py"), str(path)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = json.loads((Path(recipe["output_dir"]) / "all_results.json").read_text())
    return {
        "architecture": name,
        "parameters_m": round(count_parameters(Path(recipe["output_dir"]) / "model.safetensors") / 1e6, 2),
        "steps": steps,
        "seconds_per_step": round(results["train_runtime"] / steps, 3),
        "validation_top1": results["eval_top1"],
        "validation_top5": results["eval_top5"],
        "test_top1": results["test_top1"],
        "test_top5": results["test_top5"],
        "wall_s": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per candidate (batch 32)")
    parser.add_argument("--out", default="benchmarks/results/architectures.json", help="where to write the JSON table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [run_candidate(name, overrides, args.steps, Path(folder)) for name, overrides in CANDIDATES.items()]
    print("| architecture | params | steps | s/step | val top-1 | val top-5 | test top-1 | test top-5 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['architecture']} | {row['parameters_m']:.1f}M | {row['steps']} | {row['seconds_per_step']:.2f} | {100 * row['validation_top1']:.1f}% | "
            f"{100 * row['validation_top5']:.1f}% | {100 * row['test_top1']:.1f}% | {100 * row['test_top5']:.1f}% |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
