"""A small conformer CTC model on log-mel features, for training from scratch on a CPU.

Pretrained wav2vec 2.0 / HuBERT models need the Hub; this one is what the embedded default
trains when no Hub is reachable. It takes the same raw 16 kHz `input_values` as wav2vec 2.0
(the log-mel front end is inside the model), so it shares the processor, collator, Trainer,
ranking and `pipeline` code with every other CTC family. Registered with the Auto classes:
`AutoModelForCTC.from_pretrained(output_dir)` works once `s2t_hf` is imported.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCTC, PretrainedConfig, PreTrainedModel
from transformers.audio_utils import mel_filter_bank
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutput


class MelConformerConfig(PretrainedConfig):
    """Configuration of `MelConformerForCTC`.

    Args:
        vocab_size: CTC output classes (letters, word delimiter, blank = `pad_token_id`).
        num_mel_bins, n_fft, hop_length: the log-mel front end (25 ms windows, 10 ms hop).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, conv_kernel_size:
            the conformer encoder. Time is subsampled 4x (two stride-2 convolutions).
        time_masks, time_mask_max_fraction, freq_masks, freq_mask_max_bins: SpecAugment while
            training; time masks are bounded by a fraction of each clip's length, so short
            clips (single drug names) are never masked away.
        ctc_loss_reduction, ctc_zero_infinity: as in `Wav2Vec2Config`.
    """

    model_type = "mel-conformer-ctc"

    def __init__(
        self,
        vocab_size: int = 32,
        sampling_rate: int = 16_000,
        num_mel_bins: int = 80,
        n_fft: int = 400,
        hop_length: int = 160,
        hidden_size: int = 144,
        num_hidden_layers: int = 8,
        num_attention_heads: int = 4,
        intermediate_size: int = 576,
        conv_kernel_size: int = 15,
        dropout: float = 0.1,
        layerdrop: float = 0.0,
        time_masks: int = 2,
        time_mask_max_fraction: float = 0.1,
        freq_masks: int = 2,
        freq_mask_max_bins: int = 12,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        pad_token_id: int = 0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.sampling_rate = sampling_rate
        self.num_mel_bins = num_mel_bins
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.conv_kernel_size = conv_kernel_size
        self.dropout = dropout
        self.layerdrop = layerdrop
        self.time_masks = time_masks
        self.time_mask_max_fraction = time_mask_max_fraction
        self.freq_masks = freq_masks
        self.freq_mask_max_bins = freq_mask_max_bins
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class LogMelFrontEnd(nn.Module):
    """Waveform -> per-clip normalised log-mel frames (batch, frames, mels)."""

    def __init__(self, config: MelConformerConfig):
        super().__init__()
        self.n_fft, self.hop_length = config.n_fft, config.hop_length
        filters = mel_filter_bank(
            num_frequency_bins=config.n_fft // 2 + 1,
            num_mel_filters=config.num_mel_bins,
            min_frequency=20.0,
            max_frequency=config.sampling_rate / 2,
            sampling_rate=config.sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("mel_filters", torch.from_numpy(np.asarray(filters, dtype=np.float32)))
        self.register_buffer("window", torch.hann_window(config.n_fft))

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        return samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # zero (not reflect) padding at the edges: a clip then gives the same frames alone or padded in a batch
        spectrum = torch.stft(
            waveform.float(), self.n_fft, self.hop_length, window=self.window, pad_mode="constant", return_complex=True
        )
        power = spectrum.abs().pow(2).transpose(1, 2)  # (batch, frames, bins)
        features = torch.log(power @ self.mel_filters + 1e-6)
        mask = frame_mask.unsqueeze(-1).to(features.dtype)
        count = mask.sum(1, keepdim=True).clamp(min=1)
        mean = (features * mask).sum(1, keepdim=True) / count
        std = (((features - mean) ** 2 * mask).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-3)
        return (features - mean) / std * mask


def spec_augment(features: torch.Tensor, frame_lengths: torch.Tensor, config: MelConformerConfig) -> torch.Tensor:
    """Zero random frequency bands and time spans; time masks scale with each clip's length."""
    batch, frames, bins = features.shape
    keep = torch.ones_like(features, dtype=torch.bool)
    positions = torch.arange(frames, device=features.device)
    bin_positions = torch.arange(bins, device=features.device)
    for _ in range(config.freq_masks):
        width = torch.randint(0, config.freq_mask_max_bins + 1, (batch, 1), device=features.device)
        start = (torch.rand(batch, 1, device=features.device) * (bins - width)).long()
        keep &= ~((bin_positions >= start) & (bin_positions < start + width)).unsqueeze(1)
    max_widths = (frame_lengths.float() * config.time_mask_max_fraction).long()
    for _ in range(config.time_masks):
        width = (torch.rand(batch, device=features.device) * (max_widths + 1).float()).long().unsqueeze(1)
        start = (torch.rand(batch, 1, device=features.device) * (frame_lengths.unsqueeze(1) - width).clamp(min=0).float()).long()
        keep &= ~((positions >= start) & (positions < start + width)).unsqueeze(2)
    return features * keep


class ConvSubsampling(nn.Module):
    """Two stride-2 1-D convolutions over mel frames: 4x fewer frames, 40 ms each."""

    def __init__(self, config: MelConformerConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.hidden_size, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(config.hidden_size, config.hidden_size, 3, stride=2, padding=1)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(2):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.conv1(features.transpose(1, 2)))
        half_lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        hidden = hidden * (torch.arange(hidden.shape[2], device=hidden.device) < half_lengths.unsqueeze(1)).unsqueeze(1)
        return F.gelu(self.conv2(hidden)).transpose(1, 2)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies)
    return table


class FeedForward(nn.Module):
    def __init__(self, config: MelConformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.dropout(F.silu(self.up(self.norm(hidden))))))


class SelfAttention(nn.Module):
    def __init__(self, config: MelConformerConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.norm = nn.LayerNorm(config.hidden_size)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = hidden.shape
        q, k, v = self.qkv(self.norm(hidden)).view(batch, frames, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return F.dropout(self.out(attended.transpose(1, 2).reshape(batch, frames, dim)), self.dropout, self.training)


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, pointwise conv (padding frames zeroed)."""

    def __init__(self, config: MelConformerConfig):
        super().__init__()
        dim = config.hidden_size
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, config.conv_kernel_size, padding=config.conv_kernel_size // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        hidden = F.glu(self.pointwise_in(self.norm(hidden).transpose(1, 2)), dim=1)
        hidden = self.depthwise(hidden * key_mask.unsqueeze(1)).transpose(1, 2)  # padding frames must not leak in
        hidden = F.silu(self.depthwise_norm(hidden)).transpose(1, 2)
        return self.dropout(self.pointwise_out(hidden).transpose(1, 2))


class ConformerBlock(GradientCheckpointingLayer):
    """Macaron conformer block: half feed-forward, self-attention, convolution, half feed-forward."""

    def __init__(self, config: MelConformerConfig):
        super().__init__()
        self.feed_forward_in = FeedForward(config)
        self.attention = SelfAttention(config)
        self.convolution = ConvolutionModule(config)
        self.feed_forward_out = FeedForward(config)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden + 0.5 * self.feed_forward_in(hidden)
        hidden = hidden + self.attention(hidden, key_mask)
        hidden = hidden + self.convolution(hidden, key_mask)
        hidden = hidden + 0.5 * self.feed_forward_out(hidden)
        return self.norm(hidden)


class MelConformerPreTrainedModel(PreTrainedModel):
    config_class = MelConformerConfig
    base_model_prefix = "mel_conformer"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, std=self.config.initializer_range if isinstance(module, nn.Linear) else 1 / math.sqrt(module.weight[0].numel()))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MelConformerForCTC(MelConformerPreTrainedModel):
    def __init__(self, config: MelConformerConfig):
        super().__init__(config)
        self.front_end = LogMelFrontEnd(config)
        self.subsampling = ConvSubsampling(config)
        self.layers = nn.ModuleList(ConformerBlock(config) for _ in range(config.num_hidden_layers))
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for clips of `input_lengths` samples (same name as wav2vec 2.0's)."""
        return ConvSubsampling.output_lengths(self.front_end.frames(input_lengths))

    def freeze_feature_encoder(self) -> None:
        """The mel front end has no weights; freezing it freezes the subsampling convolutions."""
        for parameter in self.subsampling.parameters():
            parameter.requires_grad = False

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutput:
        batch, samples = input_values.shape
        sample_lengths = attention_mask.sum(-1) if attention_mask is not None else torch.full((batch,), samples, device=input_values.device)
        mel_lengths = self.front_end.frames(sample_lengths)
        mel_frames = self.front_end.frames(torch.tensor(samples))
        mel_mask = torch.arange(int(mel_frames), device=input_values.device) < mel_lengths.unsqueeze(1)
        features = self.front_end(input_values, mel_mask)
        if self.training:
            features = spec_augment(features, mel_lengths, self.config)

        hidden = self.subsampling(features, mel_lengths)
        output_lengths = ConvSubsampling.output_lengths(mel_lengths)
        key_mask = torch.arange(hidden.shape[1], device=hidden.device) < output_lengths.unsqueeze(1)
        hidden = self.dropout(hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device))
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.layers:
            if self.training and self.config.layerdrop and torch.rand(()) < self.config.layerdrop:
                continue
            hidden = layer(hidden, key_mask)
            if output_hidden_states:
                all_hidden.append(hidden)
        logits = self.lm_head(self.dropout(hidden))

        loss = None
        if labels is not None:
            loss = ctc_loss(logits, output_lengths, labels, self.config)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=tuple(all_hidden) if all_hidden else None)


def ctc_loss(logits: torch.Tensor, output_lengths: torch.Tensor, labels: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """CTC loss in float32 whatever the autocast dtype (fp16 CTC overflows); labels padded with -100."""
    if labels.max() >= config.vocab_size:
        raise ValueError(f"label id {int(labels.max())} is outside the vocabulary of {config.vocab_size}")
    label_mask = labels >= 0
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.ctc_loss(
            log_probs,
            labels.masked_select(label_mask),
            output_lengths,
            label_mask.sum(-1),
            blank=config.pad_token_id,
            reduction=config.ctc_loss_reduction,
            zero_infinity=config.ctc_zero_infinity,
        )


AutoConfig.register(MelConformerConfig.model_type, MelConformerConfig)


AutoModelForCTC.register(MelConformerConfig, MelConformerForCTC)
