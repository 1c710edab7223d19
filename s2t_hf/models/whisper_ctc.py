"""Whisper's pretrained encoder with a character CTC head: pretrained acoustics for the exact CTC
ranking (every lexicon name's likelihood over the prefix tree) and word spotting.

Whisper's decoder ranks names by a pruned search; a CTC head on its encoder instead gives
frame-wise letter probabilities, so `CTCRanker` scores every name exactly, the same way as for
the mel-conformer and wav2vec 2.0. `whisper_ctc_from_pretrained` copies the encoder of a
Whisper checkpoint (a folder, a Hub id, `packaged:whisper-tiny.en`, or a loaded model), cuts its
window like `whisper.cut_window` and adds a new head; `s2t_hf.models.loading.load_ctc_model`
builds it for `run_ctc.py` with `"model_type": "whisper-ctc"`. Registered with the Auto classes:
`AutoModelForCTC.from_pretrained(output_dir)` works once `s2t_hf` is imported.

Input: Whisper log-mel features (batch, 80, frames) filling the window (the feature extractor
pads every clip to it). The encoder cannot mask padding (it attends to the whole window, as in
pretraining), but the padding is a function of the clip alone, so a clip's output never depends
on its batch mates; the `attention_mask` over frames bounds each clip's output frames for the
CTC loss, and `input_lengths` (samples) do the same for ranking.
"""

from __future__ import annotations

import logging
from os import PathLike

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCTC, WhisperConfig, WhisperForConditionalGeneration
from transformers.modeling_outputs import CausalLMOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperModel, WhisperPreTrainedModel

from ..audio.reading import SAMPLING_RATE
from .mel_conformer import ctc_loss
from .whisper import POSITIONS_PER_SECOND, cut_window, resolve_packaged

logger = logging.getLogger(__name__)

HOP_LENGTH = SAMPLING_RATE // (2 * POSITIONS_PER_SECOND)  # samples per log-mel frame: 100 frames a second, 2 per encoder position

# the WhisperConfig fields the encoder reads (and its SpecAugment); the decoder's are not copied
ENCODER_FIELDS = (
    "num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "encoder_layerdrop", "activation_function", "d_model",
    "dropout", "attention_dropout", "activation_dropout", "init_std", "scale_embedding", "max_source_positions", "apply_spec_augment",
    "mask_time_prob", "mask_time_length", "mask_time_min_masks", "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks",
)


@strict
class WhisperCTCConfig(WhisperConfig):
    """A `WhisperConfig` for the encoder alone plus a CTC head.

    Args:
        vocab_size: CTC output classes (letters, word delimiter, blank = `pad_token_id`), not
            Whisper's subword vocabulary.
        pad_token_id: the CTC blank.
        ctc_loss_reduction, ctc_zero_infinity: as in `Wav2Vec2Config`.
        final_dropout: dropout before the CTC head.
    The decoder fields `WhisperConfig` carries are unused.
    """

    model_type = "whisper-ctc"

    vocab_size: int = 32
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    decoder_start_token_id: int | None = None
    begin_suppress_tokens: list[int] | tuple[int, ...] | None = None
    is_encoder_decoder: bool = False
    use_cache: bool = False
    tie_word_embeddings: bool = False
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = True
    final_dropout: float | int = 0.0


class WhisperEncoderForCTC(WhisperPreTrainedModel):
    """Whisper's encoder (`encoder`, named as in `WhisperModel` so its weights map one to one),
    dropout and a linear CTC head (`lm_head`, as in `Wav2Vec2ForCTC`)."""

    config_class = WhisperCTCConfig
    config: WhisperCTCConfig
    input_modalities = ("audio",)

    def __init__(self, config: WhisperCTCConfig):
        super().__init__(config)
        self.encoder = WhisperEncoder(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def window_frames(self) -> int:
        """Log-mel frames the encoder reads: two per position of its (possibly cut) table."""
        return 2 * self.config.max_source_positions

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for clips of `input_lengths` samples (the name and unit of wav2vec 2.0's,
        which `drop_unalignable` and the CTC ranking use): one frame per started 10 ms, at most the
        window, halved by the second convolution."""
        frames = torch.div(input_lengths + HOP_LENGTH - 1, HOP_LENGTH, rounding_mode="floor")
        return self.frame_output_lengths(frames)

    def frame_output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Output frames for `frames` log-mel frames (the stride-2 convolution: ceil(frames / 2))."""
        frames = frames.clamp(min=1, max=self.window_frames())
        return torch.div(frames - 1, 2, rounding_mode="floor") + 1

    def freeze_feature_encoder(self) -> None:
        """Freeze the two convolutions in front of the transformer (wav2vec 2.0's feature encoder's
        counterpart); the position table is never trained."""
        for module in (self.encoder.conv1, self.encoder.conv2):
            module.requires_grad_(False)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutput:
        """`input_features` (batch, mels, frames) as the feature extractor gives them; fewer frames than
        the window are padded with each clip's floor (Whisper's silence), more are an error.
        `attention_mask` (batch, frames) marks each clip's frames (a mask over samples is read as
        such); without it every frame counts."""
        batch, _, frames = input_features.shape
        window = self.window_frames()
        if frames > window:
            raise ValueError(
                f"input_features have {frames} frames; this model reads {window} ({window // (2 * POSITIONS_PER_SECOND)} s): use its own feature extractor, "
                "which cuts every clip to the window"
            )
        if attention_mask is None:
            frame_lengths = torch.full((batch,), frames, device=input_features.device)
        elif attention_mask.shape[-1] <= frames:
            frame_lengths = attention_mask.sum(-1)
        else:  # WhisperFeatureExtractor's mask is over samples unless its call asks for one (return_attention_mask=True)
            frame_lengths = torch.div(attention_mask.sum(-1) + HOP_LENGTH - 1, HOP_LENGTH, rounding_mode="floor")
        if frames < window:
            floor = input_features.amin(dim=(1, 2), keepdim=True).expand(-1, input_features.shape[1], window - frames)
            input_features = torch.cat([input_features, floor], dim=-1)
        if self.training and self.config.apply_spec_augment:
            # Whisper's own SpecAugment (it reads only `config` and `training`); it writes in place
            frame_mask = torch.arange(window, device=input_features.device) < frame_lengths.unsqueeze(1)
            input_features = WhisperModel._mask_input_features(self, input_features.clone(), attention_mask=frame_mask.long())

        encoded = self.encoder(input_features, output_hidden_states=output_hidden_states)
        logits = self.lm_head(self.dropout(encoded.last_hidden_state))

        loss = None
        if labels is not None:
            loss = ctc_loss(logits, self.frame_output_lengths(frame_lengths), labels, self.config)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


def whisper_ctc_from_pretrained(
    whisper_folder_or_model: str | PathLike | WhisperForConditionalGeneration,
    vocab_size: int,
    pad_token_id: int,
    max_source_seconds: int | None = None,
    feature_extractor=None,
    **config_overrides,
) -> WhisperEncoderForCTC:
    """A `WhisperEncoderForCTC` with the encoder of a Whisper encoder-decoder, copied exactly, and a
    new randomly initialised head of `vocab_size` classes (blank `pad_token_id`).

    `whisper_folder_or_model`: a folder, Hub id or `packaged:whisper-...` id, or a loaded model (left
    as it is). `max_source_seconds` cuts the encoder's window (`whisper.cut_window`, which also cuts
    `feature_extractor` when given); `config_overrides` may say it as `max_source_positions` (50 a
    second) and set any other config field (dropouts, SpecAugment, CTC loss options)."""
    positions = config_overrides.pop("max_source_positions", None)
    if positions is not None:
        if positions % POSITIONS_PER_SECOND or (max_source_seconds is not None and max_source_seconds * POSITIONS_PER_SECOND != positions):
            raise ValueError(
                f"max_source_positions={positions}: must be a whole number of seconds ({POSITIONS_PER_SECOND} a second)"
                + (f" and agree with max_source_seconds={max_source_seconds}" if max_source_seconds is not None else "")
            )
        max_source_seconds = positions // POSITIONS_PER_SECOND
    whisper = whisper_folder_or_model
    if isinstance(whisper, (str, PathLike)):
        whisper = WhisperForConditionalGeneration.from_pretrained(resolve_packaged(str(whisper)))
    if not isinstance(whisper, WhisperForConditionalGeneration):
        raise TypeError(f"{type(whisper).__name__} is not a Whisper encoder-decoder (WhisperForConditionalGeneration)")
    source = whisper.get_encoder()
    fields = {name: getattr(whisper.config, name) for name in ENCODER_FIELDS}
    # the copy starts from the source's whole table; cut_window then keeps the first rows
    fields["max_source_positions"] = source.embed_positions.num_embeddings
    config = WhisperCTCConfig(**{**fields, **config_overrides, "vocab_size": vocab_size, "pad_token_id": pad_token_id})
    model = WhisperEncoderForCTC(config)
    model.encoder.load_state_dict(source.state_dict())  # strict: every weight, of the same shape
    if max_source_seconds is not None:
        cut_window(model, feature_extractor, max_source_seconds)
    logger.info(
        "Whisper encoder (%d layers, %.1fM parameters) with a new %d-class CTC head", config.encoder_layers,
        model.encoder.num_parameters() / 1e6, vocab_size,
    )
    return model


AutoConfig.register(WhisperCTCConfig.model_type, WhisperCTCConfig)


AutoModelForCTC.register(WhisperCTCConfig, WhisperEncoderForCTC)
