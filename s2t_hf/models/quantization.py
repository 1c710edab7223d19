"""int8 inference on the CPU: PyTorch's dynamic quantization of a trained model's linear layers.

`quantize_int8(model)` is the standard recipe (`torch.ao.quantization.quantize_dynamic`, as
Hugging Face Optimum and the PyTorch tutorials apply it to transformers): every `nn.Linear`
keeps its weights as int8 (one scale per output row), and each call quantizes its input to
8 bits on the fly (one scale per call, from the input's range) and multiplies in integers
(fbgemm / oneDNN kernels; AVX2 is enough). On a 2-core Xeon a (16 x 384) x (384 x 51,864)
product takes 3.8 ms instead of 17.7 in float32, an encoder layer's about half as long
(benchmarks/whisper_serving_profile.py --quantize int8 measures the whole clip).

`torch.ao.quantization` is marked deprecated in favour of torchao, but ships in the pinned
torch and its fbgemm kernels are what makes this fast on the CPU: a per-row-scaled int8 product
through `torch._int_mm` (torchao's dynamic int8 path) took 9.7 ms for the product above.

It is an approximation of the float32 model, for serving: accuracy and agreement with float32
are measured, not assumed (README, "Serving": for the quickstart model the best name's
log-likelihood moves by a median 0.06-0.22 nats, and its top-1 falls 1 point on clean synthetic
voices, 4.6 in white noise at 10 dB). The input scale is taken per product, so a clip's scores
also move a little with the clips it is batched with (their frames share the scale). Training
and every reported metric stay float32.

Whisper's output projection is tied to the token embedding and read directly by the names'
search (`decoding/whisper.py` gathers single rows for chosen tokens and projects the whole
vocabulary in chunks), so it is not swapped for a quantized module: it becomes an
`Int8Projection`, whose `weight` is the dequantized int8 weight (what gathers read: the same
numbers the int8 product multiplies) and whose `vocabulary_logits` runs the int8 product over
a range of the vocabulary, packed once per `chunk` tokens. The token embedding keeps its float32
weights.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZATIONS = ("int8",)


class Int8Projection(nn.Module):
    """An output projection (vocab x d_model, tied or not) with int8 weights: `forward` and
    `vocabulary_logits` multiply in int8; `weight` holds the dequantized weights for row gathers."""

    def __init__(self, linear: nn.Linear, chunk: int):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(1) / 127).clamp(min=1e-12).double()
        quantized = torch.quantize_per_channel(weight, scales, torch.zeros(len(weight), dtype=torch.long), 0, torch.qint8)
        self.register_buffer("weight", quantized.dequantize(), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias, persistent=False)
        self.chunk = chunk
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # prepacked int8 weights (fbgemm/oneDNN layout) per `chunk` rows of the vocabulary
        self._packed = [
            torch.ops.quantized.linear_prepack(quantized[start : start + chunk], None if bias is None else bias[start : start + chunk])
            for start in range(0, len(weight), chunk)
        ]

    def vocabulary_logits(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Logits (rows, stop - start) of tokens start..stop-1; start must be a multiple of `chunk`."""
        if start % self.chunk:
            raise ValueError(f"Int8Projection projects from multiples of {self.chunk} tokens, not from {start}")
        first, last = start // self.chunk, -(-min(stop, self.out_features) // self.chunk)
        hidden = hidden.float().contiguous()
        parts = [torch.ops.quantized.linear_dynamic(hidden, packed) for packed in self._packed[first:last]]
        logits = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return logits[:, : stop - start]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        return self.vocabulary_logits(hidden.reshape(-1, shape[-1]), 0, self.out_features).reshape(*shape[:-1], -1)


def quantize_int8(model: nn.Module, chunk: int = 4096) -> nn.Module:
    """The model (in place, on the CPU, for inference) with every `nn.Linear` dynamically
    quantized to int8, and an output projection that `decoding/whisper.py` reads by weight
    (`get_output_embeddings()` of an encoder-decoder) made an `Int8Projection`."""
    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        raise ValueError("int8 quantization runs on the CPU: load the model without --device (or with --device cpu)")
    with warnings.catch_warnings():  # torch.ao's deprecation notices (see the module docstring), once per layer otherwise
        warnings.filterwarnings("ignore", message=".*(deprecated|quantize_per_).*")
        return _quantize_int8(model, chunk)


def _quantize_int8(model: nn.Module, chunk: int) -> nn.Module:
    model.float().eval()
    projection = model.get_output_embeddings() if getattr(model.config, "is_encoder_decoder", False) else None
    if isinstance(projection, nn.Linear):
        # untie first: the token embedding keeps float32 weights, the projection gets its own int8 copy
        int8_projection = Int8Projection(projection, chunk)
        replaced = [name for name, module in model.named_modules() if module is projection]
        for name in replaced:
            parent_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attribute, int8_projection)
    torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
