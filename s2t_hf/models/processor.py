"""The character-level `Wav2Vec2Processor` a model trained on a lexicon uses: the lexicon's
vocabulary as a CTC tokenizer, and a per-clip normalising feature extractor.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import FeatureExtractionMixin, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor, WhisperFeatureExtractor

from ..audio.reading import SAMPLING_RATE
from ..text.lexicon import DrugName
from ..text.vocabulary import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, build_vocabulary

INPUT_LENGTHS = "input_lengths"  # samples (Speech2Text: feature frames) per clip before padding: ranking needs each clip's true length


def build_processor(lexicon: list[DrugName], return_attention_mask: bool = True) -> Wav2Vec2Processor:
    """A processor whose tokenizer spells the lexicon's labels letter by letter.

    Audio is normalised to zero mean and unit variance per clip; padding value 0.
    """
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(build_vocabulary(lexicon)))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=return_attention_mask,
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def clip_features(feature_extractor: FeatureExtractionMixin, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Each 16 kHz clip's model input, normalised on its own and never with padding: a feature
    extractor that normalises a padded batch lets a clip's input depend on its batch mates.
    Training (`ClipReader`) and inference (`S2T`) both extract features through here."""
    name = feature_extractor.model_input_names[0]  # input_values (wav2vec 2.0 style) or input_features (log-mel)
    return [np.asarray(feature_extractor(clip, sampling_rate=SAMPLING_RATE)[name][0]) for clip in clips]


def whisper_clip_frames(features: np.ndarray) -> int:
    """How many frames of a Whisper log-mel window (mels, frames) hold the clip. Whisper's feature
    extractor pads every clip with silence to its window, and its normalisation puts every silent
    frame at the window's floor (its minimum) in every mel bin: the clip ends after its last frame
    above that floor. Trailing silence inside the clip counts as padding, which is harmless."""
    above = np.flatnonzero((features > features.min()).any(axis=0))
    return int(above[-1]) + 1 if len(above) else 1


def pad_features(feature_extractor: FeatureExtractionMixin, features: list[np.ndarray], pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """One padded batch of per-clip features, with `attention_mask` where the feature extractor
    gives one and `input_lengths` (each clip's length before padding) always.

    Whisper features already fill the window each: they are stacked as they are, with each clip's
    frames found by `whisper_clip_frames` (the mask, when the extractor asks for one, is over
    frames; `input_lengths` are in samples like a raw-audio model's)."""
    name = feature_extractor.model_input_names[0]
    if isinstance(feature_extractor, WhisperFeatureExtractor):
        frames = torch.tensor([whisper_clip_frames(feature) for feature in features])
        stacked = torch.from_numpy(np.stack(features).astype(np.float32, copy=False))
        batch = {name: stacked}
        if feature_extractor.return_attention_mask:
            batch["attention_mask"] = (torch.arange(stacked.shape[-1]) < frames.unsqueeze(1)).long()
        batch[INPUT_LENGTHS] = frames * feature_extractor.hop_length
        return batch
    batch = feature_extractor.pad([{name: feature} for feature in features], padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    batch = dict(batch)
    batch[INPUT_LENGTHS] = torch.tensor([len(feature) for feature in features])
    return batch
