#!/usr/bin/env python
"""Peak memory and step time of fine-tuning HuBERT-large, per low-memory setting.

Builds HuBERT-large from its config (24 layers, hidden 1024, randomly initialised: no Hub) and
runs real training steps (forward, CTC loss, backward, optimiser step) at batch 4 x 2 s of
audio. Each setting runs in its own process so peaks do not mix. Prints a table, writes JSON.

    python benchmarks/hubert_memory.py --out benchmarks/results/hubert_memory.json           # CPU
    python benchmarks/hubert_memory.py --device cuda --bf16 --out benchmarks/results/hubert_memory_gpu.json

Peak RSS is the process's maximum resident set (model, gradients, optimiser state,
activations, and the Python/torch runtime, about 0.4 GiB). On CUDA, peak allocated GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (trainable transformer layers or None for all, freeze feature encoder, gradient checkpointing, DeepSpeed config)
SETTINGS = {
    "full fine-tune (naive)": (None, False, False, None),
    "feature encoder frozen": (None, True, False, None),
    "feature encoder frozen + checkpointing": (None, True, True, None),
    "last 12 layers": (12, True, False, None),
    "last 12 layers + checkpointing": (12, True, True, None),
    "last 8 layers": (8, True, False, None),
    "last 8 layers + checkpointing": (8, True, True, None),
    "last 4 layers": (4, True, False, None),
    "last 4 layers + checkpointing": (4, True, True, None),
    "head only (0 layers)": (0, True, False, None),
    "head only + checkpointing": (0, True, True, None),
    "last 4 layers, frozen weights bf16": (4, True, False, "frozen-bf16"),
    "last 8 layers, frozen weights bf16": (8, True, False, "frozen-bf16"),
    "ZeRO-2 + CPU offload (encoder frozen)": (None, True, True, "ds_configs/zero2_offload.json"),
    "ZeRO-3 + CPU offload (encoder frozen)": (None, True, True, "ds_configs/zero3_offload.json"),
}


def hubert_large():
    from transformers import HubertConfig, HubertForCTC

    config = HubertConfig(  # facebook/hubert-large-ls960-ft's architecture
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, vocab_size=32,
        mask_time_prob=0.05, mask_time_length=4, layerdrop=0.0, ctc_loss_reduction="mean", ctc_zero_infinity=True,
    )
    return HubertForCTC(config)


def measure(setting: str, steps: int, device: str, bf16: bool) -> dict:
    import torch

    from s2t_hf.models.freezing import apply_freezing, cast_frozen_parameters

    trainable_layers, freeze_encoder, checkpointing, deepspeed_config = SETTINGS[setting]
    frozen_bf16 = deepspeed_config == "frozen-bf16"
    if frozen_bf16:
        deepspeed_config, bf16 = None, True
    torch.manual_seed(0)
    model = hubert_large()
    if freeze_encoder:
        model.freeze_feature_encoder()
    trainable, total = apply_freezing(model, trainable_layers)
    if frozen_bf16:
        cast_frozen_parameters(model, torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    audio = torch.randn(4, 32000)
    labels = torch.randint(5, 32, (4, 20))
    parameters = [p for p in model.parameters() if p.requires_grad]
    if deepspeed_config:
        import deepspeed

        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}.items():
            os.environ.setdefault(key, value)
        config = json.loads((ROOT / deepspeed_config).read_text())
        config.update(train_batch_size=4, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1, gradient_clipping=1.0)
        config["fp16"]["enabled"] = False
        config["bf16"]["enabled"] = bf16
        config["optimizer"]["params"] = {"lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
        config.pop("scheduler")
        for key, value in list(config["zero_optimization"].items()):
            if value == "auto":
                config["zero_optimization"].pop(key)
        engine, *_ = deepspeed.initialize(model=model, model_parameters=parameters, config=config)

        def step() -> float:
            loss = engine(engine_inputs(audio, engine.device), labels=labels.to(engine.device)).loss
            engine.backward(loss)
            engine.step()
            return loss.item()

        def engine_inputs(values, target):
            return values.to(target, dtype=torch.bfloat16 if bf16 else torch.float32)
    else:
        model.to(device)
        optimizer = torch.optim.AdamW(parameters, lr=1e-5)

        def step() -> float:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                loss = model(audio.to(device), labels=labels.to(device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

    step()  # warm-up: allocates gradients and optimiser state
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.time()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.time() - started) / steps
    result = {
        "setting": setting,
        "trainable_m": round(trainable / 1e6, 1),
        "total_m": round(total / 1e6, 1),
        "seconds_per_step": round(seconds, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device == "cuda":
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setting, after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (the CTC loss stays float32)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these settings (names as in the table)")
    parser.add_argument("--out", default="benchmarks/results/hubert_memory.json")
    parser.add_argument("--table-only", action="store_true", help="print the table of an earlier --out JSON without measuring")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one setting in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.device, args.bf16)))
        return

    if args.table_only:
        saved = json.loads(Path(args.out).read_text())
        print_table(saved["rows"], saved["device"], saved["bf16"], args.steps)
        return
    rows = []
    for setting in args.only or SETTINGS:
        command = [sys.executable, __file__, "--one", setting, "--steps", str(args.steps), "--device", args.device] + (["--bf16"] if args.bf16 else [])
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            rows.append({"setting": setting, "error": completed.stderr.strip().splitlines()[-1][:200]})
        else:
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": args.device, "bf16": args.bf16, "rows": rows}, indent=2))
    print_table(rows, args.device, args.bf16, args.steps)


def print_table(rows: list[dict], device: str, bf16: bool, steps: int) -> None:
    naive = next((row for row in rows if row["setting"].startswith("full") and "peak_rss_gib" in row), None)
    memory_key = "peak_cuda_gib" if device == "cuda" else "peak_rss_gib"
    print(f"HuBERT-large, batch 4 x 2 s, {device}{' bf16' if bf16 else ' fp32'}, {steps} timed steps")
    print(f"| setting | trainable | peak {'CUDA' if device == 'cuda' else 'RSS'} | vs naive | s/step |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['setting']} | failed: {row['error']} | | | |")
            continue
        if naive is None or row is naive:
            ratio = "1.0x"
        elif row[memory_key] <= naive[memory_key]:
            ratio = f"{naive[memory_key] / row[memory_key]:.1f}x lower"
        else:
            ratio = f"{row[memory_key] / naive[memory_key]:.1f}x higher"
        print(f"| {row['setting']} | {row['trainable_m']}M of {row['total_m']}M | {row[memory_key]:.2f} GiB | {ratio} | {row['seconds_per_step']:.1f} |")


if __name__ == "__main__":
    main()
