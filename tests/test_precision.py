"""bf16 only where the CPU has it: a recipe's "bf16": true falls back to fp32 on an AVX2-only CPU."""

import logging

import pytest
from transformers import TrainingArguments

from s2t_hf.training.precision import cpu_flags, cpu_has_native_bf16, noted_cpu_flags, settle_cpu_precision

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.fixture(autouse=True)
def no_isa_limits(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("S2T_HF_CPU_BF16", raising=False)


def cpu_args(tmp_path, bf16=True):
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=bf16, report_to="none")


def test_bf16_falls_back_to_fp32_with_a_notice_on_an_avx2_only_cpu(tmp_path, caplog):
    args = cpu_args(tmp_path)
    assert args.mixed_precision == "bf16"
    with caplog.at_level(logging.WARNING):
        settle_cpu_precision(args, AVX2_ONLY)
    assert not args.bf16 and args.mixed_precision == "no"
    assert "no native bf16" in caplog.text and "fp32" in caplog.text


def test_bf16_is_kept_where_the_cpu_has_it(tmp_path, caplog):
    args = cpu_args(tmp_path)
    settle_cpu_precision(args, SAPPHIRE_RAPIDS)
    assert args.bf16 and args.mixed_precision == "bf16" and not caplog.text


def test_an_fp32_recipe_stays_fp32(tmp_path):
    args = cpu_args(tmp_path, bf16=False)
    settle_cpu_precision(args, AVX2_ONLY)
    assert not args.bf16


def test_kernel_limits_set_by_the_user_count_as_no_native_bf16(monkeypatch):
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS)


def test_the_override_keeps_or_refuses_bf16_whatever_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("S2T_HF_CPU_BF16", "on")
    assert cpu_has_native_bf16(AVX2_ONLY)
    args = cpu_args(tmp_path)
    settle_cpu_precision(args, AVX2_ONLY)
    assert args.bf16
    monkeypatch.setenv("S2T_HF_CPU_BF16", "off")
    assert not cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("S2T_HF_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="S2T_HF_CPU_BF16='yes': use on, off or auto"):
        cpu_has_native_bf16(SAPPHIRE_RAPIDS)


def test_cpu_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: spectre\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_benchmarks_state_the_flags_that_decide_a_timing_in_one_order():
    assert noted_cpu_flags({"amx_bf16", "sse4_2", "avx2", "avx512_bf16", "avx512f"}) == "avx2 avx512f avx512_bf16 amx_bf16"
    assert noted_cpu_flags({"avx2", "fma"}) == "avx2"
    assert noted_cpu_flags(set()) == "none of avx2/avx512"
