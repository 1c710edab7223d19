"""Each DeepSpeed ZeRO config, and gradient checkpointing, complete training steps through
run_ctc.py on a tiny model on the CPU, started with plain `python` (no launcher)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import TEST_NAMES, require_program
from .families import hubert_large_ft

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(tmp_path: Path, corpus_dir: Path, checkpoint: Path, env: dict | None = None, **overrides) -> subprocess.CompletedProcess:
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("\n".join(TEST_NAMES) + "\n")
    recipe = {
        "lexicon": str(lexicon),
        "voices": ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "espeak-ng:en-us+m3@r1.2", "flite:slt", "flite:kal16"],
        "validation_voices": ["flite:kal16"],
        "test_voices": ["flite:slt"],
        "data_dir": str(corpus_dir),
        "model_name_or_path": str(checkpoint),
        "trainable_layers": 1,
        "output_dir": str(tmp_path / "model"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        **overrides,
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    inherited = {key: value for key, value in __import__("os").environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(ROOT / "run_ctc.py"), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**inherited, **(env or {})})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_trained(tmp_path: Path, checkpoint: Path, trained_layers: list[int], steps: int = 2) -> None:
    """Every step logged a finite loss whose mean is the reported train_loss, and the saved model
    differs from the checkpoint exactly where training may change it: the CTC head (always) and
    the trainable transformer layers (which must not stay as they were); frozen weights are
    saved as they were loaded."""
    results = json.loads((tmp_path / "model" / "all_results.json").read_text())
    logged = [entry for entry in json.loads((tmp_path / "model" / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logged] == list(range(1, steps + 1))
    losses = [entry["loss"] for entry in logged]
    assert all(math.isfinite(loss) for loss in losses) and results["train_loss"] == pytest.approx(sum(losses) / steps, rel=1e-3), losses
    before, after = weights(checkpoint), weights(tmp_path / "model")
    shared = after.keys() & before.keys()
    assert "lm_head.weight" in shared and all(after[name].shape == before[name].shape for name in shared)  # ZeRO-3 saves whole weights, not shards
    trainable = ("lm_head.", *(f"hubert.encoder.layers.{layer}." for layer in trained_layers))
    changed = {name for name in shared if not torch.equal(after[name], before[name])}
    assert "lm_head.weight" in changed
    assert {name for name in changed if not name.startswith(trainable)} == set()  # frozen stays frozen
    for layer in trained_layers:
        assert any(name.startswith(f"hubert.encoder.layers.{layer}.") for name in changed), f"layer {layer} was not trained"


@pytest.mark.parametrize("config", ["zero2.json", "zero2_offload.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_config_trains(tmp_path, corpus_copy, config):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an extra: DS_BUILD_OPS=0 pip install 's2t-hf[deepspeed]'")
    require_program("espeak-ng")
    corpus_dir, _ = corpus_copy  # run_ctc.py writes dataset/ and manifests into its data_dir
    checkpoint = hubert_large_ft(tmp_path / "checkpoint")
    # DeepSpeed's WarmupDecayLR warms up over at least 2 steps and its first two steps run at
    # learning rate 0 (measured): a 2-step run would leave every weight as it was
    result = run_recipe(tmp_path, corpus_dir, checkpoint, deepspeed=f"ds_configs/{config}", max_steps=3)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "test_top1" in json.loads((tmp_path / "model" / "all_results.json").read_text())
    assert_trained(tmp_path, checkpoint, trained_layers=[1], steps=3)


def test_gradient_checkpointing_trains(tmp_path, corpus_copy):
    require_program("espeak-ng")
    corpus_dir, _ = corpus_copy
    checkpoint = hubert_large_ft(tmp_path / "checkpoint")
    result = run_recipe(tmp_path, corpus_dir, checkpoint, gradient_checkpointing=True, trainable_layers=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_trained(tmp_path, checkpoint, trained_layers=[0, 1])  # gradients reach the checkpointed layers


def train_with_frozen_bf16_weights(tmp_path, corpus_copy, cpu_bf16: str):
    """hubert.json's settings (bf16, bfloat16 frozen weights) with S2T_HF_CPU_BF16=`cpu_bf16`: the run's
    stderr, the checkpoint's and the saved model's weights, and the names of the frozen ones."""
    require_program("espeak-ng")
    corpus_dir, _ = corpus_copy
    checkpoint = hubert_large_ft(tmp_path / "checkpoint")
    result = run_recipe(tmp_path, corpus_dir, checkpoint, env={"S2T_HF_CPU_BF16": cpu_bf16}, bf16=True, frozen_weights_dtype="bfloat16")
    assert result.returncode == 0, result.stderr[-4000:]
    before, after = weights(checkpoint), weights(tmp_path / "model")
    frozen = [name for name in before if not name.startswith(("lm_head.", "hubert.encoder.layers.1."))]
    assert frozen
    return result.stderr, before, after, frozen


def test_frozen_weights_in_bfloat16_train_and_save_as_float32(tmp_path, corpus_copy):
    # bf16 kept on any CPU (emulated where it must be), so that this path is tested on every machine
    stderr, before, after, frozen = train_with_frozen_bf16_weights(tmp_path, corpus_copy, cpu_bf16="on")
    assert "frozen parameters stored as torch.bfloat16" in stderr
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), framework="pt") as saved:
        assert {str(saved.get_slice(name).get_dtype()) for name in saved.keys()} == {"F32"}
    assert all(torch.equal(after[name], before[name].to(torch.bfloat16).float()) for name in frozen)  # kept in bfloat16
    assert not torch.equal(after["lm_head.weight"], before["lm_head.weight"])


def test_frozen_bf16_weights_fall_back_to_float32_with_bf16_on_a_cpu_without_it(tmp_path, corpus_copy):
    """hubert.json asks for bf16 and bfloat16 frozen weights; a CPU without native bf16 turns both off and trains."""
    stderr, before, after, frozen = train_with_frozen_bf16_weights(tmp_path, corpus_copy, cpu_bf16="off")
    assert "training in fp32 instead" in stderr and "they stay float32" in stderr
    assert "frozen parameters stored as" not in stderr
    assert all(torch.equal(after[name], before[name]) for name in frozen)  # untouched, not rounded to bfloat16


def test_frozen_weights_dtype_without_bf16_is_a_clear_error(tmp_path, corpus_copy):
    require_program("espeak-ng")
    corpus_dir, _ = corpus_copy
    result = run_recipe(tmp_path, corpus_dir, hubert_large_ft(tmp_path / "checkpoint"), frozen_weights_dtype="bfloat16")
    assert result.returncode != 0 and "frozen_weights_dtype='bfloat16'" in result.stderr
