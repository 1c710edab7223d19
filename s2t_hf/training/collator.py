"""Batching clips: pad model inputs with the processor, pad labels with -100 (CTC and seq2seq)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import ProcessorMixin

from ..models.processor import INPUT_LENGTHS, pad_features


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch without `input_lengths`, which is for ranking, not for the model."""
    return {key: value for key, value in batch.items() if key != INPUT_LENGTHS}


@dataclass
class DataCollatorSpeechWithPadding:
    """Pads the feature extractor's input (`input_values` of wav2vec 2.0-style models,
    `input_features` of Speech2Text; with `attention_mask` where the feature extractor asks for
    one) and pads `labels` with -100 so the loss ignores the padding.

    `input_lengths` (samples per clip) is always added: evaluation needs each clip's true length
    to rank names, also for models such as wav2vec2-base that must not get an attention mask.
    `CTCTrainer` removes it before the model's forward.

    `pad_to_multiple_of` rounds audio lengths up, which keeps tensor shapes few on accelerators.

    `decoder_start_token_id` (encoder-decoders): a label row's leading start token is dropped,
    since the model prepends it to the decoder input again; Whisper's tokenizer writes
    `<|startoftranscript|>` into every label, and a doubled start token is a silent accuracy loss.
    """

    processor: ProcessorMixin
    pad_to_multiple_of: int | None = None
    decoder_start_token_id: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        name = self.processor.feature_extractor.model_input_names[0]
        features = [feature for feature in features if feature[name] is not None]  # clips ClipReader could not read
        if not features:
            raise RuntimeError("every clip of a batch was unreadable; see the warnings above and rebuild the data folder")
        batch = pad_features(self.processor.feature_extractor, [feature[name] for feature in features], self.pad_to_multiple_of)
        if "labels" in features[0]:
            labels = self.processor.tokenizer.pad({"input_ids": [feature["labels"] for feature in features]}, padding=True, return_tensors="pt")
            labels = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
            if self.decoder_start_token_id is not None and bool((labels[:, 0] == self.decoder_start_token_id).all()):
                labels = labels[:, 1:]
            batch["labels"] = labels
        return batch
