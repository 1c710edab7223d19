"""Batching clips for CTC training: pad audio with the processor, pad labels with -100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import Wav2Vec2Processor


@dataclass
class DataCollatorCTCWithPadding:
    """Pads `input_values` (and builds `attention_mask` where the feature extractor asks for
    one) and pads `labels` with -100 so the CTC loss ignores the padding.

    `input_lengths` (samples per clip) is always added: evaluation needs each clip's true length
    to rank names, also for models such as wav2vec2-base that must not get an attention mask.
    `CTCTrainer` removes it before the model's forward.

    `pad_to_multiple_of` rounds audio lengths up, which keeps tensor shapes few on accelerators.
    """

    processor: Wav2Vec2Processor
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audio = [{"input_values": feature["input_values"]} for feature in features]
        batch = self.processor.feature_extractor.pad(audio, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        batch["input_lengths"] = torch.tensor([len(feature["input_values"]) for feature in features])
        if "labels" in features[0]:
            labels = self.processor.tokenizer.pad({"input_ids": [feature["labels"] for feature in features]}, padding=True, return_tensors="pt")
            batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        return batch
