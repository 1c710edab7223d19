"""run_ctc.py end to end on a tiny model and ~30 clips, as a user would start it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import TEST_NAMES, require_program

ROOT = Path(__file__).resolve().parents[1]


def write_recipe(tmp_path, **overrides):
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("\n".join(TEST_NAMES) + "\n", encoding="utf-8")
    recipe = {
        "_comment": "tiny end-to-end test",
        "lexicon": str(lexicon),
        "voices": ["espeak-ng:en-us", "espeak-ng:en-us+m3@r1.2", "espeak-ng:en-gb+f2@r0.9", "flite:kal16", "flite:slt"],
        "validation_voices": ["flite:kal16"],
        "test_voices": ["flite:slt"],
        "data_dir": str(tmp_path / "data"),
        "output_dir": str(tmp_path / "model"),
        "config_overrides": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 96, "dropout": 0.0},
        "augmentation": {"Gain": {"min_gain_db": -6.0, "max_gain_db": 0.0, "p": 0.5}},
        "per_device_train_batch_size": 6,
        "per_device_eval_batch_size": 6,
        "learning_rate": 3e-3,
        "warmup_steps": 5,
        "max_steps": 40,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 10,
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
    }
    recipe.update(overrides)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def run(recipe):
    return subprocess.run([sys.executable, str(ROOT / "run_ctc.py"), str(recipe)], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    require_program("espeak-ng")
    require_program("flite")
    tmp_path = tmp_path_factory.mktemp("run_ctc")
    result = run(write_recipe(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "model"


def test_writes_model_processor_report_and_results(trained):
    for name in ["config.json", "model.safetensors", "vocab.json", "processor_config.json", "report.md", "all_results.json", "README.md"]:
        assert (trained / name).is_file(), name
    results = json.loads((trained / "all_results.json").read_text())
    for key in ["test_top1", "test_top2", "test_top3", "test_top4", "test_top5", "test_cer", "test_fuzzy_top1", "wall_time_s"]:
        assert key in results, key
    tops = [results[f"test_top{k}"] for k in range(1, 6)]
    assert tops == sorted(tops)
    report = (trained / "report.md").read_text()
    assert "## Test split: 6 clips of voices never heard in training" in report and "flite:slt" in report
    assert f"| every name's likelihood under the model (what `S2T.recognize` ranks by) | {100 * tops[0]:.1f}% |" in report
    card = (trained / "README.md").read_text()  # what push_to_hub uploads
    assert "Lexicon: 6 names" in card and "| every name's likelihood" in card and "flite:slt" in card


def recognise_split(model_dir: Path, split: str):
    """The saved model, loaded as a user loads it, run on one split's manifest: (recogniser, rows, top-5 recognitions)."""
    from s2t_hf import S2T
    from s2t_hf.evaluation.manifests import read_evaluation_manifest

    rows = read_evaluation_manifest(model_dir.parent / "data" / f"manifest-{split}.tsv")
    recogniser = S2T.from_pretrained(model_dir)
    return recogniser, rows, recogniser.recognize([row["path"] for row in rows], top_k=5)


def test_reported_test_metrics_are_what_the_saved_model_gives_a_user(trained):
    from s2t_hf.evaluation.metrics import character_error_rate

    results = json.loads((trained / "all_results.json").read_text())
    _, rows, recognised = recognise_split(trained, "test")
    assert len(rows) == 6 and {row["voice"] for row in rows} == {"flite:slt"}
    for k in range(1, 6):
        hits = sum(row["text"] in [candidate.name for candidate in result.candidates[:k]] for row, result in zip(rows, recognised))
        assert results[f"test_top{k}"] == pytest.approx(hits / len(rows)), k
    transcripts = [result.transcript for result in recognised]
    assert results["test_cer"] == pytest.approx(character_error_rate([row["text"] for row in rows], transcripts), abs=1e-6)


def test_output_folder_holds_no_pickle_and_a_calibration(trained):
    from s2t_hf.audio.reading import load_audio

    from .test_evaluation import assert_minimises_nll

    pickled = [path.name for path in trained.iterdir() if path.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle"}]
    assert not pickled, pickled
    assert json.loads((trained / "training_args.json").read_text())["seed"] == 0
    calibration = json.loads((trained / "calibration.json").read_text())
    assert calibration["fitted_on"] == "validation split" and calibration["clips"] == 6
    # fitted on the saved model's scores of the validation voice: no other temperature fits them better
    recogniser, rows, _ = recognise_split(trained, "validation")
    assert {row["voice"] for row in rows} == {"flite:kal16"}
    scores = recogniser.score_batch([load_audio(row["path"]) for row in rows]).scores
    references = torch.tensor([TEST_NAMES.index(row["text"]) for row in rows])
    assert [entry.name for entry in recogniser.lexicon] == TEST_NAMES
    assert_minimises_nll(calibration["temperature"], scores, references)


def test_losses_fell(trained):
    results = json.loads((trained / "all_results.json").read_text())
    assert results["eval_loss"] < results["train_loss"]
    logged = [entry for entry in json.loads((trained / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logged] == [10, 20, 30, 40]  # logging_steps=10, max_steps=40
    losses = [entry["loss"] for entry in logged]
    assert losses[-1] < 0.75 * losses[0], losses  # measured: 4.42 -> 2.58
    assert results["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-3)  # the run's mean is the logged steps' mean


def test_saved_model_reloads_with_auto_classes(trained):
    from transformers import AutoModelForCTC, AutoProcessor

    import s2t_hf  # noqa: F401  (registers the from-scratch model)

    model = AutoModelForCTC.from_pretrained(trained)
    processor = AutoProcessor.from_pretrained(trained)
    assert model.config.vocab_size == len(processor.tokenizer)
    assert processor.tokenizer.pad_token_id == model.config.pad_token_id


def test_unknown_recipe_key_is_reported(tmp_path):
    result = run(write_recipe(tmp_path, learnig_rate=1e-3))
    assert result.returncode != 0
    assert "learnig_rate" in result.stderr
