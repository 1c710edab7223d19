"""Each DeepSpeed ZeRO config, and gradient checkpointing, complete training steps through
run_ctc.py on a tiny model on the CPU, started with plain `python` (no launcher)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEST_NAMES, require_program
from .families import hubert_large_ft

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(tmp_path: Path, corpus_dir: Path, checkpoint: Path, **overrides) -> subprocess.CompletedProcess:
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
        "report_to": "none",
        "use_cpu": True,
        **overrides,
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    env = {key: value for key, value in __import__("os").environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(ROOT / "run_ctc.py"), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.parametrize("config", ["zero2.json", "zero2_offload.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_config_trains(tmp_path, corpus, config):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an extra: DS_BUILD_OPS=0 pip install 's2t-hf[deepspeed]'")
    require_program("espeak-ng")
    corpus_dir, _ = corpus
    result = run_recipe(tmp_path, corpus_dir, hubert_large_ft(tmp_path / "checkpoint"), deepspeed=f"ds_configs/{config}")
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "model" / "all_results.json").read_text())
    assert results["train_loss"] > 0 and "test_top1" in results
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_gradient_checkpointing_trains(tmp_path, corpus):
    require_program("espeak-ng")
    corpus_dir, _ = corpus
    result = run_recipe(tmp_path, corpus_dir, hubert_large_ft(tmp_path / "checkpoint"), gradient_checkpointing=True, trainable_layers=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((tmp_path / "model" / "all_results.json").read_text())["train_loss"] > 0


def test_frozen_weights_in_bfloat16_train_and_save_as_float32(tmp_path, corpus):
    require_program("espeak-ng")
    corpus_dir, _ = corpus
    result = run_recipe(tmp_path, corpus_dir, hubert_large_ft(tmp_path / "checkpoint"), bf16=True, frozen_weights_dtype="bfloat16")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "frozen parameters stored as torch.bfloat16" in result.stderr
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), framework="pt") as weights:
        assert {str(weights.get_slice(name).get_dtype()) for name in weights.keys()} == {"F32"}


def test_frozen_weights_dtype_without_bf16_is_a_clear_error(tmp_path, corpus):
    require_program("espeak-ng")
    corpus_dir, _ = corpus
    result = run_recipe(tmp_path, corpus_dir, hubert_large_ft(tmp_path / "checkpoint"), frozen_weights_dtype="bfloat16")
    assert result.returncode != 0 and "frozen_weights_dtype='bfloat16'" in result.stderr
