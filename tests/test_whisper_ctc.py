"""Whisper's encoder with a CTC head (`s2t_hf.models.whisper_ctc`): the encoder copied exactly with
its window cut, a save/load round trip through the Auto classes, training steps that lower the CTC
loss, each clip's padding kept out of its scores, and the real packaged tiny.en encoder reproduced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCTC, AutoProcessor, Wav2Vec2Processor, WhisperFeatureExtractor, WhisperForConditionalGeneration

from s2t_hf import S2T
from s2t_hf.decoding.ctc import CTCRanker, ctc_log_probs, output_lengths
from s2t_hf.models.loading import load_ctc_model, load_seq2seq_model
from s2t_hf.models.processor import INPUT_LENGTHS, clip_features, pad_features
from s2t_hf.models.whisper import resolve_packaged
from s2t_hf.models.whisper_ctc import WhisperCTCConfig, WhisperEncoderForCTC, whisper_ctc_from_pretrained
from s2t_hf.text.vocabulary import encode_labels, model_text
from s2t_hf.training.collator import DataCollatorSpeechWithPadding, model_inputs

from .conftest import protect
from .families import whisper_tiny_en
from .test_layers import graph, layer_of
from .test_whisper_import import require_wheel


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random Whisper encoder-decoder folder (families.whisper_tiny_en). Read only."""
    return protect(whisper_tiny_en(tmp_path_factory.mktemp("whisper") / "tiny"))


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Noise under a Hann envelope, with a pitch of its own: clips a tiny model can tell apart."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * 16000)
    time = np.arange(samples) / 16000
    tone = np.sin(2 * np.pi * (200 + 150 * seed) * time)
    return ((0.05 * rng.standard_normal(samples) + 0.3 * tone) * np.hanning(samples)).astype(np.float32)


def load(lexicon, folder, seconds: int = 3):
    return load_ctc_model(lexicon, str(folder), "whisper-ctc", {"max_source_positions": 50 * seconds, "ctc_zero_infinity": True})


def test_encoder_weights_are_copied_exactly_and_the_position_table_cut(tiny_whisper):
    seq2seq = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    model = whisper_ctc_from_pretrained(seq2seq, vocab_size=29, pad_token_id=0, max_source_seconds=3)
    source, copied = seq2seq.model.encoder.state_dict(), model.encoder.state_dict()
    assert copied.keys() == source.keys()
    for name, tensor in source.items():
        assert torch.equal(copied[name], tensor[:150] if name == "embed_positions.weight" else tensor), name
    assert model.encoder.embed_positions.weight.shape == (150, 16) and model.config.max_source_positions == 150
    assert seq2seq.model.encoder.embed_positions.num_embeddings == 1500  # the source model is left as it was
    assert model.lm_head.weight.shape == (29, 16) and model.lm_head.weight.std() > 0
    assert (model.config.model_type, model.config.is_encoder_decoder, model.config.pad_token_id) == ("whisper-ctc", False, 0)

    from_folder = whisper_ctc_from_pretrained(str(tiny_whisper), vocab_size=29, pad_token_id=0, max_source_positions=100)
    assert from_folder.encoder.embed_positions.weight.shape[0] == 100
    assert torch.equal(from_folder.encoder.layers[0].fc1.weight, seq2seq.model.encoder.layers[0].fc1.weight)
    with pytest.raises(ValueError, match="whole number of seconds"):
        whisper_ctc_from_pretrained(seq2seq, vocab_size=29, pad_token_id=0, max_source_positions=175)
    with pytest.raises(ValueError, match="whole seconds from 1"):
        whisper_ctc_from_pretrained(seq2seq, vocab_size=29, pad_token_id=0, max_source_seconds=31)
    with pytest.raises(TypeError, match="not a Whisper encoder-decoder"):
        whisper_ctc_from_pretrained(seq2seq.model, vocab_size=29, pad_token_id=0)


def test_load_ctc_model_builds_it_and_a_saved_model_reloads_with_identical_logits(tiny_whisper, lexicon, tmp_path):
    loaded = load(lexicon, tiny_whisper)
    model, processor = loaded.model.eval(), loaded.processor
    assert loaded.head == "new" and isinstance(model, WhisperEncoderForCTC)
    assert isinstance(processor.feature_extractor, WhisperFeatureExtractor) and processor.feature_extractor.nb_max_frames == 300
    assert model.config.vocab_size == len(processor.tokenizer) and model.config.pad_token_id == processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="starts from a Whisper checkpoint"):
        load_ctc_model(lexicon, None, "whisper-ctc")

    model.save_pretrained(tmp_path / "ctc")
    processor.save_pretrained(tmp_path / "ctc")
    reloaded = AutoModelForCTC.from_pretrained(tmp_path / "ctc").eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path / "ctc")
    assert type(reloaded) is WhisperEncoderForCTC and isinstance(reloaded.config, WhisperCTCConfig)
    assert reloaded.encoder.embed_positions.weight.shape[0] == 150
    assert isinstance(reloaded_processor, Wav2Vec2Processor) and reloaded_processor.feature_extractor.nb_max_frames == 300
    extractor = reloaded_processor.feature_extractor
    batch = pad_features(extractor, clip_features(extractor, [speech_like(0.8, 0), speech_like(1.6, 1)]))
    assert "attention_mask" in batch  # the saved extractor still asks for the frame mask
    inputs = model_inputs(batch)
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)

    again = load_ctc_model(lexicon, str(tmp_path / "ctc"), "whisper-ctc")  # a whisper-ctc folder: its head is kept
    assert again.head == "kept" and torch.equal(again.model.lm_head.weight, model.lm_head.weight)
    result = S2T.from_pretrained(tmp_path / "ctc", lexicon=lexicon).recognize((speech_like(1.0, 2), 16000), top_k=3)
    assert len(result.candidates) == 3 and all(np.isfinite(c.score) for c in result.candidates)


def test_a_few_training_steps_lower_the_ctc_loss(tiny_whisper, lexicon):
    torch.manual_seed(0)
    loaded = load(lexicon, tiny_whisper, seconds=2)
    model, processor = loaded.model, loaded.processor
    clips = [speech_like(0.9 + 0.2 * index, index) for index in range(3)]
    labels = processor.tokenizer([model_text(entry.label, processor.tokenizer) for entry in lexicon[:3]]).input_ids
    features = clip_features(processor.feature_extractor, clips)
    batch = DataCollatorSpeechWithPadding(processor)([{"input_features": f, "labels": label} for f, label in zip(features, labels)])
    inputs = model_inputs(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(12):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        after = model(**inputs).loss.item()
    assert np.isfinite(losses[0]) and after < 0.5 * losses[0], losses + [after]


def test_padding_changes_neither_a_short_clips_log_probs_nor_its_scores(tiny_whisper, lexicon):
    loaded = load(lexicon, tiny_whisper)
    model, processor = loaded.model.eval(), loaded.processor
    extractor = processor.feature_extractor
    short, long = speech_like(0.5, 0), speech_like(2.5, 1)
    alone = pad_features(extractor, clip_features(extractor, [short]))
    together = pad_features(extractor, clip_features(extractor, [short, long]))
    # each clip's frames: where Whisper's silence padding starts (ceil(samples / 160), plus the frames it still reaches)
    assert together["attention_mask"].sum(-1).tolist() == torch.div(together[INPUT_LENGTHS], 160, rounding_mode="floor").tolist()
    frames = together["attention_mask"].sum(-1)
    assert 50 <= int(frames[0]) <= 52 and 250 <= int(frames[1]) <= 252, frames
    lengths = output_lengths(model, together[INPUT_LENGTHS], 150)
    expected = model._get_feat_extract_output_lengths(torch.tensor([len(short), len(long)]))
    assert (lengths - expected).abs().max() <= 1 and int(lengths[1]) < 150, (lengths, expected)

    log_probs_alone = ctc_log_probs(model, model_inputs(alone), alone[INPUT_LENGTHS])
    log_probs_together = ctc_log_probs(model, model_inputs(together), together[INPUT_LENGTHS])
    length = int(lengths[0])
    torch.testing.assert_close(log_probs_together[0, :length], log_probs_alone[0, :length], rtol=0, atol=2e-4)
    ranker = CTCRanker(lexicon, encode_labels(processor.tokenizer, lexicon), processor.tokenizer.pad_token_id)
    scores_alone = ranker.scores(log_probs_alone, output_lengths(model, alone[INPUT_LENGTHS], 150))
    scores_together = ranker.scores(log_probs_together, lengths)
    torch.testing.assert_close(scores_together[:1], scores_alone, rtol=0, atol=2e-4)

    # the loss reads each clip's frames only: the CTC loss of its first `length` output frames
    label_ids = encode_labels(processor.tokenizer, lexicon[:1])[0]
    labels = torch.tensor([label_ids])
    with torch.no_grad():
        loss = model(**model_inputs(alone), labels=labels).loss
        whole_window = model(input_features=alone["input_features"], labels=labels).loss
    expected_loss = F.ctc_loss(log_probs_alone[0, :length, None], labels, torch.tensor([length]), torch.tensor([len(label_ids)]),
                               blank=processor.tokenizer.pad_token_id, reduction="mean", zero_infinity=True)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert abs(float(whole_window - loss)) > 1e-3  # the mask matters: 150 frames would give another loss

    with torch.no_grad():
        # fewer frames than the window are padded with the clip's floor, as the feature extractor pads
        cut = model(input_features=alone["input_features"][..., :120]).logits
        assert torch.equal(cut, model(input_features=alone["input_features"]).logits)
        # the feature extractor's own mask (over samples unless asked for frames) gives the clip's frames too
        own = extractor(short, sampling_rate=16000, return_tensors="pt")
        own_frames = extractor(short, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        assert own["attention_mask"].shape[-1] == 48000 and own_frames["attention_mask"].shape[-1] == 300
        torch.testing.assert_close(model(**own, labels=labels).loss, model(**own_frames, labels=labels).loss)


def test_whisper_ctc_imports_only_text_audio_and_models():
    layers = {layer_of(target) for target in graph()["s2t_hf.models.whisper_ctc"]}
    assert layers and layers <= {"text", "audio", "models"}, layers


@pytest.fixture(scope="module")
def packaged_cache(tmp_path_factory):
    """An S2T_HF_CACHE holding the real tiny.en, imported from its wheel through `packaged:`. Read only."""
    require_wheel("tiny.en")
    cache = tmp_path_factory.mktemp("s2t_hf_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("S2T_HF_CACHE", str(cache))
        resolve_packaged("packaged:whisper-tiny.en")
    return protect(cache)


def test_the_real_tiny_en_encoder_gives_the_seq2seq_encoders_output(packaged_cache, lexicon, monkeypatch):
    monkeypatch.setenv("S2T_HF_CACHE", str(packaged_cache))
    loaded = load_ctc_model(lexicon, "packaged:whisper-tiny.en", "whisper-ctc", {"max_source_positions": 150})
    seq2seq, processor = load_seq2seq_model(lexicon, "packaged:whisper-tiny.en", max_source_seconds=3)
    clips = [speech_like(1.2, 0), speech_like(2.0, 1)]
    ours = pad_features(loaded.processor.feature_extractor, clip_features(loaded.processor.feature_extractor, clips))
    theirs = pad_features(processor.feature_extractor, clip_features(processor.feature_extractor, clips))
    assert torch.equal(ours["input_features"], theirs["input_features"]) and ours["input_features"].shape == (2, 80, 300)
    assert loaded.model.encoder.embed_positions.weight.shape == (150, 384)
    with torch.no_grad():
        hidden = loaded.model.eval().encoder(ours["input_features"]).last_hidden_state
        reference = seq2seq.eval().get_encoder()(theirs["input_features"]).last_hidden_state
        logits = loaded.model(**model_inputs(ours)).logits
    torch.testing.assert_close(hidden, reference, rtol=0, atol=1e-5)
    assert logits.shape == (2, 150, len(loaded.processor.tokenizer)) and torch.isfinite(logits).all()
