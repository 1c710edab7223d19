"""Every model family of the recipes, driven through the code path a Hub id takes, on tiny models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s2t_hf.models.loading import load_ctc_model
from s2t_hf.training.arguments import read_recipe

from .conftest import TEST_NAMES, require_program
from .families import ALL_FAMILIES, CTC_FAMILIES, SEQ2SEQ_FAMILIES, lacking_letters, whisper_tiny_en

ROOT = Path(__file__).resolve().parents[1]
# every family's recipe, and the embedded default's (Whisper tiny.en fine-tuned) on the tiny Whisper
RECIPES = {**ALL_FAMILIES, "quickstart": whisper_tiny_en}
SEQ2SEQ_RECIPES = {*SEQ2SEQ_FAMILIES, "quickstart"}
EXPECTED_HEAD = {"hubert": "kept", "wav2vec2-base": "kept", "wav2vec2-large": "kept", "xlsr": "new"}


@pytest.mark.parametrize("family", sorted(CTC_FAMILIES))
def test_head_is_kept_only_when_the_vocabulary_spells_the_lexicon(tmp_path, lexicon, family):
    checkpoint = CTC_FAMILIES[family](tmp_path / family)
    loaded = load_ctc_model(lexicon, str(checkpoint))
    assert loaded.head == EXPECTED_HEAD[family]
    if loaded.head == "kept":
        from transformers import AutoModelForCTC

        original = AutoModelForCTC.from_pretrained(checkpoint)
        assert loaded.model.lm_head.weight.equal(original.lm_head.weight)
        ids = loaded.processor.tokenizer("metformin").input_ids
        assert loaded.processor.tokenizer.convert_ids_to_tokens(ids) == list("METFORMIN")  # upper-cased for this vocabulary
        assert loaded.processor.tokenizer.decode(loaded.processor.tokenizer("metformin").input_ids, group_tokens=False) == "metformin"
    else:
        assert loaded.model.config.vocab_size == len(loaded.processor.tokenizer) == 29


def test_vocabulary_lacking_letters_gets_a_new_head(tmp_path, lexicon):
    loaded = load_ctc_model(lexicon, str(lacking_letters(tmp_path / "a-to-m")))
    assert loaded.head == "new"
    assert "z" in loaded.processor.tokenizer.get_vocab()
    assert loaded.model.lm_head.out_features == len(loaded.processor.tokenizer)


@pytest.fixture(scope="module", params=sorted(RECIPES))
def fine_tuned(request, tmp_path_factory, corpus):
    """The family's recipe for a few steps from its tiny checkpoint, on a copy of the shared test
    corpus (the run writes `dataset/` and manifests into its data_dir)."""
    require_program("espeak-ng")
    tmp_path = tmp_path_factory.mktemp(request.param)
    corpus_dir = shutil.copytree(corpus[0], tmp_path / "data")
    checkpoint = RECIPES[request.param](tmp_path / "checkpoint")
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("\n".join(TEST_NAMES) + "\n")
    recipe = read_recipe(ROOT / "recipes" / f"{request.param}.json")  # with its base recipe's keys merged in
    recipe.update(
        lexicon=str(lexicon),
        extra_lexicon=None,  # the six test names only
        voices=["espeak-ng:en-us", "espeak-ng:en-gb+f2", "espeak-ng:en-us+m3@r1.2", "flite:slt", "flite:kal16"],
        validation_voices=["flite:kal16"],
        test_voices=["flite:slt"],
        data_dir=str(corpus_dir),
        model_name_or_path=str(checkpoint),
        output_dir=str(tmp_path / "model"),
        max_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=1,
        eval_strategy="no",
        save_strategy="no",
        bf16=bool(recipe.get("frozen_weights_dtype")),  # bfloat16 frozen weights need bf16 autocast (CPU has it)
        use_cpu=True,
        dataloader_num_workers=0,
    )
    recipe.pop("num_train_epochs", None)
    if "trainable_layers" in recipe:
        recipe["trainable_layers"] = 1  # the tiny models have 2 layers
    if "freeze_encoder_layers" in recipe:
        recipe["freeze_encoder_layers"] = 0  # the tiny Whisper has 1 encoder layer: its front end frozen, the layer trains
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    script = "run_seq2seq.py" if request.param in SEQ2SEQ_RECIPES else "run_ctc.py"
    result = subprocess.run([sys.executable, str(ROOT / script), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "model", corpus_dir


def test_recipe_trains_and_s2t_recognizes(fine_tuned):
    from s2t_hf import S2T
    from s2t_hf.evaluation.manifests import read_evaluation_manifest

    model_dir, corpus_dir = fine_tuned
    results = json.loads((model_dir / "all_results.json").read_text())
    recogniser = S2T.from_pretrained(model_dir)
    recogniser.batch_size = 4  # as the run's evaluation batched the test split: same padding, same scores
    rows = read_evaluation_manifest(corpus_dir / "manifest-test.tsv")
    assert len(rows) == 6 and {row["voice"] for row in rows} == {"flite:slt"}
    recognised = recogniser.recognize([row["path"] for row in rows], top_k=5)
    for result in recognised:
        names = [candidate.name for candidate in result.candidates]
        assert len(set(names)) == 5 and set(names) <= set(TEST_NAMES)
        scores = [candidate.score for candidate in result.candidates]
        assert scores == sorted(scores, reverse=True)
        assert isinstance(result.transcript, str)
    # the reported test metrics are what the saved model gives a user, clip for clip; a run that
    # evaluated under bf16 autocast (with bfloat16 frozen weights) may flip one near-tie against float32
    tolerance = 1 / len(rows) if json.loads((model_dir / "training_args.json").read_text())["bf16"] else 0.0
    for k in (1, 5):
        hits = sum(row["text"] in [candidate.name for candidate in result.candidates[:k]] for row, result in zip(rows, recognised))
        assert results[f"test_top{k}"] == pytest.approx(hits / len(rows), abs=tolerance + 1e-9), k


def test_cli_recognize_json(fine_tuned):
    model_dir, corpus_dir = fine_tuned
    clip = sorted(corpus_dir.glob("clips/flite_slt/*.wav"))[0]
    result = subprocess.run(
        [sys.executable, "-m", "s2t_hf.cli", "recognize", str(model_dir), str(clip), str(corpus_dir / "missing.wav"), "--json", "--top-k", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found, missing = [json.loads(line) for line in result.stdout.splitlines()]
    assert found["path"] == str(clip) and len(found["candidates"]) == 3
    assert {"name", "score"} <= set(found["candidates"][0])
    assert "does not exist" in missing["error"]


def test_pipeline_loads_the_output_directory(fine_tuned):
    from transformers import pipeline

    import s2t_hf  # noqa: F401
    from s2t_hf import S2T
    from s2t_hf.audio.reading import load_audio

    model_dir, corpus_dir = fine_tuned
    clip = load_audio(sorted(corpus_dir.glob("clips/flite_slt/*.wav"))[1])
    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    output = asr({"raw": clip, "sampling_rate": 16000})
    recogniser = S2T.from_pretrained(model_dir)
    if recogniser.is_seq2seq:
        # a random tiny decoder's near-uniform scores make greedy text flip on float noise
        assert asr.type.startswith("seq2seq") and isinstance(output["text"], str)  # "seq2seq_whisper" for Whisper
    else:
        assert asr.type == "ctc"
        assert output["text"].lower() == recogniser.transcribe((clip, 16000))
