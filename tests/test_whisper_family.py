"""Whisper as a family: prompt tokens in labels, a cut window that survives save and reload,
packaged weights as a model id, and fine-tuning steps that lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2t_hf import S2T
from s2t_hf.models.loading import load_seq2seq_model
from s2t_hf.models.processor import clip_features
from s2t_hf.models.whisper import resolve_packaged
from s2t_hf.text.vocabulary import model_text
from s2t_hf.training.collator import DataCollatorSpeechWithPadding

from .families import whisper_tiny_en


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return whisper_tiny_en(tmp_path_factory.mktemp("whisper") / "tiny")


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = int(seconds * 16000)
    return (0.1 * rng.standard_normal(samples) * np.hanning(samples)).astype(np.float32)


def batch_for(processor, model, lexicon, clips):
    features = clip_features(processor.feature_extractor, clips)
    labels = processor.tokenizer([model_text(entry.label, processor.tokenizer) for entry in lexicon[: len(clips)]]).input_ids
    collator = DataCollatorSpeechWithPadding(processor, decoder_start_token_id=model.config.decoder_start_token_id)
    return collator([{"input_features": feature, "labels": label} for feature, label in zip(features, labels)])


def test_labels_start_after_the_start_token_the_model_prepends(tiny_whisper, lexicon):
    model, processor = load_seq2seq_model(lexicon, str(tiny_whisper))
    batch = batch_for(processor, model, lexicon, [speech_like(1.0, 0), speech_like(1.5, 1)])
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["labels"][0][batch["labels"][0] >= 0].tolist())
    assert tokens == ["<|notimestamps|>", "Ġmet", "form", "in", "<|endoftext|>"]  # " metformin": no doubled <|startoftranscript|>
    assert model.config.decoder_start_token_id == processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")


def test_a_cut_window_loads_and_predicts_after_save_and_reload(tiny_whisper, lexicon, tmp_path):
    model, processor = load_seq2seq_model(lexicon, str(tiny_whisper), max_source_seconds=3)
    assert model.config.max_source_positions == 150 and processor.feature_extractor.nb_max_frames == 300
    model.save_pretrained(tmp_path / "cut")
    processor.save_pretrained(tmp_path / "cut")
    recogniser = S2T.from_pretrained(tmp_path / "cut", lexicon=lexicon)
    assert recogniser.model.model.encoder.embed_positions.weight.shape[0] == 150
    torch.testing.assert_close(recogniser.model.model.encoder.embed_positions.weight, model.model.encoder.embed_positions.weight)
    assert recogniser.processor.feature_extractor(speech_like(1.0, 2), sampling_rate=16000).input_features[0].shape == (80, 300)
    result = recogniser.recognize((speech_like(1.2, 3), 16000), top_k=3)
    assert len(result.candidates) == 3 and {c.name for c in result.candidates} <= {entry.name for entry in lexicon}
    with pytest.raises(ValueError, match="whole seconds from 1"):
        load_seq2seq_model(lexicon, str(tiny_whisper), max_source_seconds=31)


def test_a_few_fine_tuning_steps_lower_the_loss(tiny_whisper, lexicon):
    torch.manual_seed(0)
    model, processor = load_seq2seq_model(lexicon, str(tiny_whisper), max_source_seconds=2)
    batch = batch_for(processor, model, lexicon, [speech_like(1.0 + 0.2 * index, index) for index in range(4)])
    inputs = {"input_features": batch["input_features"], "labels": batch["labels"]}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    losses = []
    for _ in range(10):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 2.0 and losses == sorted(losses, reverse=True), losses


def test_packaged_ids_resolve_to_an_imported_folder_once(tmp_path, monkeypatch):
    from s2t_hf.models import whisper_import

    calls = []

    def fake_import(size, folder, overwrite=False):
        calls.append(size)
        folder.mkdir(parents=True)
        (folder / "whisper_import.json").write_text('{"size": "%s"}' % size)
        return folder

    monkeypatch.setenv("S2T_HF_CACHE", str(tmp_path))
    monkeypatch.setattr(whisper_import, "import_whisper", fake_import)
    assert resolve_packaged("packaged:whisper-tiny.en") == str(tmp_path / "whisper-tiny.en")
    assert resolve_packaged("packaged:whisper-tiny.en") == str(tmp_path / "whisper-tiny.en")
    assert calls == ["tiny.en"]  # the second use loads the folder the first one wrote
    assert resolve_packaged("openai/whisper-tiny.en") == "openai/whisper-tiny.en"
    with pytest.raises(ValueError, match="no such packaged model"):
        resolve_packaged("packaged:whisper-large")
