"""DeepSpeed ZeRO-3 helpers: build a model whole, and fold weight-normed convolutions."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


@contextmanager
def without_zero3_init():
    """Build a model whole, not partitioned by ZeRO-3's `zero.Init`: transformers' weight
    initialisation of the weight-normed positional convolution fails on partitioned weights.
    DeepSpeed partitions the model when training starts."""
    from transformers.integrations import deepspeed as hf_deepspeed

    active = hf_deepspeed._hf_deepspeed_config_weak_ref() if hf_deepspeed._hf_deepspeed_config_weak_ref else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if active is not None:
            hf_deepspeed.set_hf_deepspeed_config(active)


def fold_weight_norm(model: PreTrainedModel) -> int:
    """Fold weight-normed convolutions (the positional convolution of wav2vec 2.0 / HuBERT) into
    plain weights. Under ZeRO-3 their weight-norm parameters are still partitioned when the
    convolution reads them and the forward fails; the folded weight is the same function, and
    training updates it directly. Returns how many convolutions were folded."""
    from torch.nn.utils import parametrize

    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
    if folded:
        logger.info("folded %d weight-normed convolution(s) into plain weights for ZeRO-3", folded)
    return folded
