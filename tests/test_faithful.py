"""One faithful path from a checkpoint to an answer.

- Raw Hub-shaped checkpoints (as downloaded, never fine-tuned here) recognise through `S2T`,
  the CLI and `compare`, spelling names the way training would (upper case, `|`).
- A clip's scores do not depend on its batch mates, for every family.
- A Hub id brings its own lexicon, calibration and revision (a local Hub cache, offline).
- Loading fails loudly; the output folder and `push_to_hub` carry no pickle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from s2t_hf import S2T
from s2t_hf.decoding.ctc import ctc_log_probs
from s2t_hf.models.loading import load_ctc_model
from s2t_hf.models.processor import build_processor
from s2t_hf.text.lexicon import save_lexicon

from .conftest import TEST_NAMES, save_untrained_model
from .families import ALL_FAMILIES, CTC_FAMILIES, lacking_letters, wav2vec2_base_960h

RAW_HUB_CTC = ["hubert", "wav2vec2-base", "wav2vec2-large"]  # fine-tuned for characters: usable as they are


def clips(seed: int = 0) -> list[np.ndarray]:
    """A short clip and two longer ones: noise shaped like speech loudness, 16 kHz."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000)) * np.hanning(int(seconds * 16000))).astype(np.float32)
            for seconds in (0.5, 1.5, 2.5)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw-hub")
    return {family: build(folder / family) for family, build in ALL_FAMILIES.items()}


@pytest.mark.parametrize("family", RAW_HUB_CTC)
def test_raw_hub_ctc_checkpoint_recognises_as_it_is(checkpoints, lexicon, family, caplog):
    with caplog.at_level(logging.WARNING):
        recogniser = S2T.from_pretrained(checkpoints[family])
    assert "has no lexicon.txt" in caplog.text and "has no calibration.json" in caplog.text
    assert len(recogniser.lexicon) == 1128  # the built-in common names, said in the log
    tokenizer = recogniser.processor.tokenizer  # what the ranker spells every name with
    assert tokenizer.convert_ids_to_tokens(tokenizer("metformin").input_ids) == list("METFORMIN")
    two_words = next(entry.label for entry in recogniser.lexicon if " " in entry.label)
    assert tokenizer.convert_ids_to_tokens(tokenizer(two_words).input_ids) == list(two_words.upper().replace(" ", "|"))
    result = recogniser.recognize((clips()[1], 16000), top_k=3)
    assert len(result.candidates) == 3 and result.transcript == result.transcript.lower()


def test_raw_hub_checkpoint_through_cli_and_compare(checkpoints, tmp_path):
    import soundfile

    from s2t_hf.evaluation.comparison import compare_models

    rows = ["path\ttext"]
    for index, clip in enumerate(clips()):
        soundfile.write(tmp_path / f"{index}.wav", clip, 16000)
        rows.append(f"{index}.wav\t{TEST_NAMES[index]}")
    (tmp_path / "manifest.tsv").write_text("\n".join(rows) + "\n")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(TEST_NAMES) + "\n")
    model = checkpoints["wav2vec2-base"]
    result = subprocess.run(
        [sys.executable, "-m", "s2t_hf.cli", "recognize", str(model), str(tmp_path / "0.wav"), "--lexicon", str(names), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert {c["name"] for c in json.loads(result.stdout)["candidates"]} <= set(TEST_NAMES)
    results = compare_models([str(model)], tmp_path / "manifest.tsv", tmp_path / "cache", lexicon=str(names), progress=False)
    assert results["wav2vec2-base"]["clean"]["n"] == 3


@pytest.mark.parametrize("family", sorted([*ALL_FAMILIES, "mel-conformer"]))
def test_a_clip_scores_the_same_alone_and_in_a_batch_with_longer_clips(checkpoints, lexicon, family, tmp_path):
    if family == "mel-conformer":
        recogniser = S2T.from_pretrained(save_untrained_model(tmp_path / "mel", lexicon), lexicon=lexicon)
    elif family in CTC_FAMILIES:
        loaded = load_ctc_model(lexicon, str(checkpoints[family]))  # XLSR gets a new head: as training starts it
        recogniser = S2T(loaded.model, loaded.processor, lexicon)
    else:
        recogniser = S2T.from_pretrained(checkpoints[family], lexicon=lexicon)
    short, *longer = clips()
    alone = recogniser.score_batch([short])
    together = recogniser.score_batch([*longer, short])  # the short clip last, padded the most
    torch.testing.assert_close(together.scores[-1], alone.scores[0], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(together.transcript_scores[-1], alone.transcript_scores[0], atol=2e-4, rtol=1e-4)
    assert together.transcripts[-1] == alone.transcripts[0]


def test_padding_without_a_mask_would_change_wav2vec2_base_so_it_runs_clip_by_clip(checkpoints, lexicon):
    """The invariance above is real: a padded batch without an attention mask changes
    wav2vec2-base's output (its feature encoder normalises over the padding)."""
    from s2t_hf.models.processor import clip_features, pad_features

    recogniser = S2T.from_pretrained(checkpoints["wav2vec2-base"], lexicon=lexicon)
    extractor = recogniser.processor.feature_extractor
    assert not extractor.return_attention_mask
    short, long_clip, _ = clips()
    batch = pad_features(extractor, clip_features(extractor, [long_clip, short]))
    lengths = batch.pop("input_lengths")
    alone = recogniser.model(input_values=torch.tensor(clip_features(extractor, [short])[0])[None]).logits.log_softmax(-1)
    frames = alone.shape[1]
    naive = recogniser.model(**batch).logits.log_softmax(-1)[1, :frames]
    assert (naive - alone[0]).abs().max() > 1e-3  # padding leaks into the clip
    faithful = ctc_log_probs(recogniser.model, batch, lengths)[1, :frames]
    torch.testing.assert_close(faithful, alone[0], atol=1e-5, rtol=1e-5)


def test_loading_fails_loudly_on_a_broken_tokenizer(tmp_path, lexicon):
    checkpoint = wav2vec2_base_960h(tmp_path / "broken")
    (checkpoint / "vocab.json").write_text("{not json")
    with pytest.raises(Exception) as raised:
        load_ctc_model(lexicon, str(checkpoint))
    assert not isinstance(raised.value, AssertionError)  # an error, not a fresh head built in silence


def test_only_the_ctc_head_may_change_shape(tmp_path, lexicon):
    checkpoint = lacking_letters(tmp_path / "a-to-m")
    assert load_ctc_model(lexicon, str(checkpoint)).head == "new"  # the head alone is resized: fine
    with pytest.raises(ValueError, match="outside the CTC head"):
        load_ctc_model(lexicon, str(checkpoint), config_overrides={"intermediate_size": 64})


# ---- a Hub id, from a local Hub cache, offline ---------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_with(cache: Path, repo_id: str, folder: Path, absent: tuple[str, ...] = ()) -> None:
    """Lay a model folder out as the Hub cache would hold repo_id at COMMIT; `absent` files are
    recorded as known-missing, as the Hub client records a 404."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    for name in absent:
        marker = repo / ".no_exist" / COMMIT / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def load_offline(cache: Path, code: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=environment)


def test_a_hub_id_brings_its_lexicon_calibration_and_revision(tmp_path, lexicon):
    from s2t_hf.inference.calibration import Calibration

    trained = save_untrained_model(tmp_path / "trained", lexicon[:3])
    Calibration(temperature=0.5, ambiguity_margin=0.2, fitted_on="validation", clips=10).save(trained)
    hub_cache_with(tmp_path / "cache", "s2t-hf-tests/drug-model", trained)
    raw = save_untrained_model(tmp_path / "raw", lexicon)
    (raw / "lexicon.txt").unlink()
    hub_cache_with(tmp_path / "cache", "s2t-hf-tests/raw", raw, absent=("lexicon.txt", "calibration.json"))
    hub_cache_with(tmp_path / "cache", "s2t-hf-tests/unknown", raw)  # nothing known about lexicon.txt
    result = load_offline(tmp_path / "cache", """
        import json
        from s2t_hf import S2T
        from s2t_hf.evaluation.comparison import model_fingerprint
        model = S2T.from_pretrained("s2t-hf-tests/drug-model")
        raw = S2T.from_pretrained("s2t-hf-tests/raw")
        try:
            S2T.from_pretrained("s2t-hf-tests/unknown")
            unknown = "loaded"
        except OSError as error:
            unknown = str(error)
        print(json.dumps({"names": [e.name for e in model.lexicon], "temperature": model.calibration.temperature,
                          "revision": model.revision, "raw_names": len(raw.lexicon), "raw_temperature": raw.calibration.temperature,
                          "fingerprint": model_fingerprint("s2t-hf-tests/drug-model"), "unknown": unknown}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded["names"] == TEST_NAMES[:3] and loaded["temperature"] == 0.5
    assert loaded["revision"] == COMMIT and loaded["fingerprint"] == f"s2t-hf-tests/drug-model@{COMMIT}"
    assert loaded["raw_names"] == 1128 and loaded["raw_temperature"] == 1.0
    assert "has no lexicon.txt" in result.stderr
    assert "'lexicon.txt' is not in the local Hub cache" in loaded["unknown"]


# ---- the output folder and push_to_hub ------------------------------------------------------

class FakeHub:
    """Stands in for the Hub API the Trainer calls: records what an upload would send."""

    def __init__(self):
        self.uploaded: list[str] = []

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, folder_path, ignore_patterns=(), **kwargs):
        import fnmatch

        for path in Path(folder_path).rglob("*"):
            relative = path.relative_to(folder_path).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, pattern) for pattern in ignore_patterns):
                self.uploaded.append(relative)


def test_push_to_hub_uploads_no_pickled_training_arguments(tmp_path, lexicon, monkeypatch):
    import transformers.trainer
    from transformers import TrainingArguments

    from s2t_hf.decoding.ctc import CTCRanker
    from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC
    from s2t_hf.text.vocabulary import encode_labels
    from s2t_hf.training.trainers import CTCTrainer

    hub = FakeHub()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    processor = build_processor(lexicon)
    model = MelConformerForCTC(MelConformerConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32))
    args = TrainingArguments(output_dir=str(tmp_path / "model"), push_to_hub=True, hub_model_id="someone/drug-model", report_to="none", use_cpu=True)
    trainer = CTCTrainer(model=model, args=args, processing_class=processor,
                         ranker=CTCRanker(lexicon, encode_labels(processor.tokenizer, lexicon), processor.tokenizer.pad_token_id))
    save_lexicon(lexicon, args.output_dir)
    trainer.push_to_hub()
    assert "model.safetensors" in hub.uploaded and "lexicon.txt" in hub.uploaded
    assert "training_args.json" in hub.uploaded
    assert not [name for name in hub.uploaded if name.endswith((".bin", ".pt", ".pth", ".pkl"))], hub.uploaded
