"""Selective freezing: train only the last N transformer layers, the CTC head and named extras.

Fine-tuning all of HuBERT-large keeps gradients and optimiser state for 300M parameters;
training the last few layers and the head keeps most of the accuracy for a fraction of the
memory (see the README's memory benchmark).
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

logger = logging.getLogger(__name__)


# where each family keeps its stack of transformer layers
LAYER_STACK_PATTERNS = (r"^(.*encoder\.layers)\.(\d+)\.", r"^(layers)\.(\d+)\.")
HEAD_PATTERNS = (r"^lm_head\.",)


def layer_index(name: str) -> int | None:
    for pattern in LAYER_STACK_PATTERNS:
        match = re.match(pattern, name)
        if match:
            return int(match.group(2))
    return None


def count_layers(model: nn.Module) -> int:
    indices = {layer_index(name) for name, _ in model.named_parameters()} - {None}
    return max(indices) + 1 if indices else 0


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, logged."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %.2fM of %.2fM (%.1f%%)", trainable / 1e6, total / 1e6, 100 * trainable / max(total, 1))
    return trainable, total


def apply_freezing(
    model: nn.Module,
    trainable_layers: int | None = None,
    train_only_head: bool = False,
    also_trainable: list[str] | None = None,
) -> tuple[int, int]:
    """Freeze the model except the last `trainable_layers` transformer layers, the CTC head and
    parameters whose name matches a regular expression of `also_trainable`.

    `trainable_layers=None` leaves the model as it is (apart from `train_only_head`, which
    means 0 layers). Returns (trainable, total) parameter counts and logs them.
    """
    if train_only_head:
        trainable_layers = 0
    if trainable_layers is not None:
        layers = count_layers(model)
        if layers == 0:
            raise ValueError(f"{type(model).__name__} has no recognisable stack of transformer layers to freeze selectively")
        if trainable_layers < 0 or trainable_layers > layers:
            raise ValueError(f"trainable_layers={trainable_layers} must be between 0 and the model's {layers} layers")
        first_trainable = layers - trainable_layers
        extras = [re.compile(pattern) for pattern in also_trainable or []]
        for name, parameter in model.named_parameters():
            index = layer_index(name)
            parameter.requires_grad = (
                (index is not None and index >= first_trainable)
                or any(re.search(pattern, name) for pattern in HEAD_PATTERNS)
                or any(extra.search(name) for extra in extras)
            )
    return count_trainable(model)


def freeze_encoder(model: nn.Module, first_layers: int | None = None) -> tuple[int, int]:
    """Freeze an encoder-decoder's encoder (Whisper, Speech2Text): only the decoder learns. With
    `first_layers` N, only the encoder's input side: its front end (convolutions, positions) and
    its first N layers keep their pretrained weights; its later layers, final norm and the
    decoder learn. Returns (trainable, total) parameter counts and logs them."""
    encoder = model.get_encoder()
    if first_layers is None:
        for parameter in encoder.parameters():
            parameter.requires_grad = False
        logger.info("encoder frozen")
        return count_trainable(model)
    layers = len(encoder.layers)
    if not 0 <= first_layers <= layers:
        raise ValueError(f"freeze_encoder_layers={first_layers} must be between 0 and the encoder's {layers} layers")
    for name, parameter in encoder.named_parameters():
        match = re.match(r"layers\.(\d+)\.", name)
        later_layer = match is not None and int(match.group(1)) >= first_layers
        parameter.requires_grad = later_layer or name.startswith("layer_norm.")
    logger.info("encoder front end and its first %d of %d layers frozen", first_layers, layers)
    return count_trainable(model)


def cast_frozen_parameters(model: nn.Module, dtype: torch.dtype) -> int:
    """Store frozen parameters in `dtype` (e.g. bfloat16), halving their memory; trainable ones
    stay float32 for the optimiser. Train with bf16 autocast so every op sees one dtype.
    Returns how many parameters were cast."""
    cast = 0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
            cast += parameter.numel()
    logger.info("%.2fM frozen parameters stored as %s", cast / 1e6, dtype)
    return cast
