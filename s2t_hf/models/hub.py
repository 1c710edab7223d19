"""Files of a checkpoint, from a local folder or a Hub repository, with clear failures.

A model is "a folder, or a Hub id" everywhere in s2t-hf. These helpers answer three questions
the same way for both: where is file X of this model (None when the model has no such file),
which revision is it, and does it ship a tokenizer. A missing file is an answer; a network or
cache problem is an error that names the model and the fix, never a silent fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only")  # the from_pretrained options that locate a file
TOKENIZER_FILES = ("tokenizer_config.json", "vocab.json", "tokenizer.json")


def hub_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of `from_pretrained` keyword arguments that say where a Hub file comes from."""
    return {key: kwargs[key] for key in HUB_OPTIONS if kwargs.get(key) is not None}


def model_file(source: str | Path, filename: str, **options: Any) -> Path | None:
    """Path of `filename` in a model folder or Hub repository (downloaded to the Hub cache), or
    None when the model has no such file. Raises OSError when the Hub cannot be asked."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    repo_id = str(source)
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=options.get("cache_dir"), revision=options.get("revision"))
    if cached is _CACHED_NO_EXIST:
        return None
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(hf_hub_download(repo_id, filename, **options))
    except RemoteEntryNotFoundError:
        return None  # the repository has no such file
    except LocalEntryNotFoundError:
        raise OSError(
            f"{repo_id}: {filename!r} is not in the local Hub cache and the Hub cannot be reached "
            f"(offline, or no network); connect once so it is cached, or use a local copy of the model folder"
        ) from None


def model_revision(source: str | Path, **options: Any) -> str | None:
    """The commit a Hub model's files come from (its snapshot folder), None for a local folder."""
    if Path(source).is_dir():
        return None
    config = model_file(source, "config.json", **options)
    if config is None:
        raise OSError(f"{source}: no config.json; is it a model repository?")
    return config.parent.name  # .../snapshots/<commit>/config.json


def has_tokenizer(source: str | Path, **options: Any) -> bool:
    """Whether a checkpoint ships a tokenizer (pretrained-only ones such as XLSR-53 do not)."""
    return any(model_file(source, name, **options) is not None for name in TOKENIZER_FILES)
