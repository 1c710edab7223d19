"""Recipes: a shared base, command-line overrides of any value, and every shipped recipe valid."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from transformers import Seq2SeqTrainingArguments, TrainingArguments

from s2t_hf.training.arguments import DataTrainingArguments, RecipeError, check_recipe, parse_arguments, read_recipe

ROOT = Path(__file__).resolve().parents[1]


def script_arguments(script: str):
    name = "recipe_script_" + script.removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the script is executed
        spec.loader.exec_module(module)
    return sys.modules[name].ModelArguments


@pytest.mark.parametrize("name", sorted(path.stem for path in (ROOT / "recipes").glob("*.json") if path.stem != "base"))
def test_every_shipped_recipe_reads_through_its_base_and_passes_the_check(name):
    recipe = read_recipe(ROOT / "recipes" / f"{name}.json")
    base = read_recipe(ROOT / "recipes" / "base.json")
    assert recipe["voices"] == base["voices"] == ["@recipes/voices/offline.txt"]
    assert "base" not in recipe and not any(key.startswith("_") for key in recipe)
    # the encoder-decoder recipes are run_seq2seq.py's; whisper-*-ctc puts a CTC head on Whisper's encoder (run_ctc.py)
    seq2seq = recipe.get("model_type") != "whisper-ctc" and (name == "s2t" or "whisper" in recipe.get("model_name_or_path", ""))
    script, training = ("run_seq2seq.py", Seq2SeqTrainingArguments) if seq2seq else ("run_ctc.py", TrainingArguments)
    check_recipe(recipe, (script_arguments(script), DataTrainingArguments, training), name)


def test_a_recipe_s_own_values_replace_the_base_s_whole_value(tmp_path):
    (tmp_path / "shared.json").write_text(json.dumps({"_comment": "x", "lexicon": "generic", "augmentation": {"Gain": {"p": 0.5}}, "seed": 1}))
    (tmp_path / "variant.json").write_text(json.dumps({"base": "shared.json", "seed": 7, "augmentation": {"AddGaussianSNR": {"p": 1.0}}}))
    assert read_recipe(tmp_path / "variant.json") == {"lexicon": "generic", "augmentation": {"AddGaussianSNR": {"p": 1.0}}, "seed": 7}


def test_a_missing_or_circular_base_is_a_clear_error(tmp_path):
    (tmp_path / "lost.json").write_text(json.dumps({"base": "nowhere.json"}))
    with pytest.raises(RecipeError, match="its base 'nowhere.json' does not exist"):
        read_recipe(tmp_path / "lost.json")
    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    with pytest.raises(RecipeError, match="leads back to itself"):
        read_recipe(tmp_path / "a.json")


def test_command_line_overrides_any_recipe_value_and_keeps_the_rest(monkeypatch):
    monkeypatch.chdir(ROOT)
    types = (script_arguments("run_ctc.py"), DataTrainingArguments, TrainingArguments)
    recipe = read_recipe("recipes/conformer.json")
    model, data, training = parse_arguments(
        types, ["recipes/conformer.json", "--max_steps", "100", "--learning_rate", "1e-3", "--voices", "espeak-ng:en-us", "flite:slt",
                "--bf16", "false", "--output_dir", "outputs/variant"],
    )
    assert (training.max_steps, training.learning_rate, training.bf16, training.output_dir) == (100, 1e-3, False, "outputs/variant")
    assert data.voices == ["espeak-ng:en-us", "flite:slt"]
    # everything not overridden is the recipe's
    assert model.config_overrides == recipe["config_overrides"] and data.augmentation == recipe["augmentation"]
    assert (training.per_device_train_batch_size, training.warmup_steps, training.lr_scheduler_type.value) == (32, 300, "cosine")
    assert parse_arguments(types, ["recipes/conformer.json"])[2].max_steps == recipe["max_steps"]


def test_an_unknown_override_is_one_clear_line(monkeypatch):
    monkeypatch.chdir(ROOT)
    types = (script_arguments("run_ctc.py"), DataTrainingArguments, TrainingArguments)
    with pytest.raises(RecipeError, match="override '--max_stepz' is not an argument; did you mean '--max_steps'"):
        parse_arguments(types, ["recipes/conformer.json", "--max_stepz", "100"])


def test_the_shipped_splits_hold_out_whole_voice_talents():
    from s2t_hf.speech.splits import assign_speakers, talent_of
    from s2t_hf.speech.tts import parse_voices

    base = read_recipe(ROOT / "recipes" / "base.json")
    speakers = [voice.speaker for voice in parse_voices([f"@{ROOT / 'recipes/voices/offline.txt'}"])]
    assignment = assign_speakers(speakers, base["validation_voices"], base["test_voices"])
    talents = {split: {talent_of(speaker) for speaker, chosen in assignment.items() if chosen == split} for split in ("train", "validation", "test")}
    assert talents["test"] == {"festvox:kal", "festvox:ked", "festvox:slt"}
    assert not talents["train"] & (talents["test"] | talents["validation"]) and not talents["test"] & talents["validation"]
    assert len(talents["train"]) >= 8
