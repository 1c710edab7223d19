"""bf16 only where the CPU computes it natively.

On a CPU without bf16 instructions (AVX2 only: no `avx512_bf16`, no AMX), PyTorch emulates bf16
autocast: a training step of the quickstart model measured 4.2 s instead of 0.48 s in fp32. A
recipe's `"bf16": true` therefore means "bf16 where it is fast": on such a CPU the run falls back
to fp32 with a one-line notice. GPUs are left to the recipe and Trainer.

`S2T_HF_CPU_BF16=on` keeps bf16 on any CPU (emulated where need be: to measure it, or to test
the bf16 path on any machine); `off` never uses it; unset (or `auto`) decides by the CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import TrainingArguments

logger = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ONEDNN_MAX_CPU_ISA values that still allow bf16 instructions (oneDNN's names, upper case)
BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10", "ALL")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def noted_cpu_flags(flags: set[str] | None = None) -> str:
    """The flags that decide a CPU timing here (vector width, native bf16), as benchmarks state
    their machine: e.g. "avx2 avx512f avx512_bf16 amx_bf16"."""
    flags = cpu_flags() if flags is None else flags
    return " ".join(flag for flag in ("avx2", "avx512f", *NATIVE_BF16_FLAGS) if flag in flags) or "none of avx2/avx512"


CPU_BF16_SETTING = "S2T_HF_CPU_BF16"


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU runs bf16 natively, honouring the limits a user can put on PyTorch's
    kernels (ATEN_CPU_CAPABILITY=avx2/default, ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16) and
    the `S2T_HF_CPU_BF16` override (on / off)."""
    setting = os.environ.get(CPU_BF16_SETTING, "auto").lower()
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"{CPU_BF16_SETTING}={setting!r}: use on, off or auto")
    if setting != "auto":
        return setting == "on"
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and not isa.startswith(BF16_ISAS):
        return False
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def trains_on_cpu(args: TrainingArguments) -> bool:
    import torch

    return args.use_cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())


def settle_cpu_precision(args: TrainingArguments, flags: set[str] | None = None) -> None:
    """Turn a recipe's bf16 off, with a notice, when it would be emulated on this CPU."""
    if args.bf16 and trains_on_cpu(args) and not cpu_has_native_bf16(flags):
        args.bf16 = False
        args.mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").replace("bf16", "no")  # what Trainer hands Accelerate
        logger.warning("bf16: this CPU has no native bf16 (no avx512_bf16/amx_bf16 flag), where PyTorch emulates it about 9x "
                       "slower: training in fp32 instead (S2T_HF_CPU_BF16=on keeps it)")
