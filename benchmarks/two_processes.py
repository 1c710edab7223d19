#!/usr/bin/env python
"""One process against two (gloo, `accelerate_configs/cpu-2-processes.yaml`) on this machine.

Trains the conformer recipe (`recipes/conformer.json`) on a small slice of the corpus three ways:

1. one process (`python run_ctc.py`), batch B;
2. two processes (`accelerate launch`), batch B/2 each: the same effective batch, same steps;
3. one process again on run 2's output folder: it resumes at run 2's final checkpoint, trains
   nothing and evaluates it, so its metrics are a one-process evaluation of the very weights
   run 2 evaluated with two processes. They must be equal.

Prints a table and writes JSON (wall times, train_runtime, test metrics). Each run gets both
cores: one process uses two threads, two processes one thread each.

    python benchmarks/two_processes.py                    # ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2t_hf.training.precision import noted_cpu_flags  # noqa: E402

METRICS = ["test_top1", "test_top5", "test_cer", "test_clips", "test_loss", "eval_top1", "eval_clips", "eval_loss"]


def run(command: list[str], threads: int) -> tuple[float, subprocess.CompletedProcess]:
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return round(time.time() - started, 1), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="outputs/two_processes", help="folder for data and the three output folders")
    parser.add_argument("--max-names", type=int, default=120)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="effective batch size (each of two processes gets half)")
    parser.add_argument("--output", default="benchmarks/results/two_processes.json")
    args = parser.parse_args()
    work = ROOT / args.work
    common = [
        "--max_lexicon_names", str(args.max_names), "--extra_lexicon", "real-voice-words",
        "--voices", "espeak-ng:en-us", "espeak-ng:en-gb", "espeak-ng:en-us+m3", "espeak-ng:en-gb-scotland", "flite:slt", "flite:kal16",
        "flite:rms", "--validation_voices", "espeak-ng:en-gb-scotland", "--test_voices", "flite:rms",
        "--data_dir", str(work / "data"), "--max_steps", str(args.steps), "--warmup_steps", str(args.steps // 10),
        "--eval_steps", str(args.steps), "--save_steps", str(args.steps), "--bf16", "false", "--dataloader_num_workers", "0",
        "--max_eval_samples", "101", "--max_test_samples", "201",
    ]
    recipe = str(ROOT / "recipes" / "conformer.json")
    config = ROOT / "accelerate_configs" / "cpu-2-processes.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    rows = {}
    one_seconds, _ = run([sys.executable, "run_ctc.py", recipe, *common, "--output_dir", str(work / "one"),
                          "--per_device_train_batch_size", str(args.batch)], threads=2)
    rows["one process"] = {"wall_s": one_seconds, **json.loads((work / "one" / "all_results.json").read_text())}
    two_seconds, _ = run([*launcher, "run_ctc.py", recipe, *common, "--output_dir", str(work / "two"),
                          "--per_device_train_batch_size", str(args.batch // 2)], threads=1)
    rows["two processes"] = {"wall_s": two_seconds, **json.loads((work / "two" / "all_results.json").read_text())}
    again_seconds, again = run([sys.executable, "run_ctc.py", recipe, *common, "--output_dir", str(work / "two"),
                                "--per_device_train_batch_size", str(args.batch // 2)], threads=2)
    if f"checkpoint-{args.steps}" not in again.stderr:
        sys.exit("the one-process rerun did not resume from the two-process run's final checkpoint")
    again_results = json.loads((work / "two" / "all_results.json").read_text())
    rows["two-process checkpoint, one-process evaluation"] = {"wall_s": again_seconds, **again_results}

    print(f"{'run':<48} {'wall s':>7} {'train s':>8} " + " ".join(f"{metric:>11}" for metric in METRICS))
    for name, row in rows.items():
        print(f"{name:<48} {row['wall_s']:>7} {row.get('train_runtime', 0):>8.1f} "
              + " ".join(f"{row[metric]:>11.4f}" if isinstance(row[metric], float) else f"{row[metric]:>11}" for metric in METRICS))
    two, evaluated = rows["two processes"], rows["two-process checkpoint, one-process evaluation"]
    equal = {metric: two[metric] == evaluated[metric] for metric in METRICS if "loss" not in metric}
    print("two processes == one-process evaluation of the same checkpoint:", equal)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "cpu_flags": noted_cpu_flags(), "platform": platform.platform()},
        "command": " ".join(["python", *sys.argv]), "steps": args.steps, "effective_batch": args.batch, "names": args.max_names,
        "runs": {name: {key: row[key] for key in ["wall_s", "train_runtime", *METRICS] if key in row} for name, row in rows.items()},
        "ranking_metrics_equal": equal,
    }, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
