"""`s2t-hf compare`: several models on one manifest, each run once, predictions cached.

Each (model, lexicon, clips, condition: clean, white noise at an SNR, a telephone codec) gets
one Parquet file of prediction records in the cache folder, named by a fingerprint of all four, so a rerun, a new report or a new table
costs no inference; changing the model's weights, calibration or lexicon, or the clips,
makes a new file. Parquet holds plain columns (no pickle): it is safe to share and to open in
pandas, DuckDB or `datasets`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..audio.channels import condition_name
from ..inference.model_files import model_calibration, model_lexicon
from ..inference.recognizer import S2T
from ..models.hub import model_revision
from ..models.whisper import resolve_packaged
from ..text.lexicon import DrugName
from .manifests import read_evaluation_manifest
from .predictions import predict_manifest
from .summary import summarize

logger = logging.getLogger(__name__)


CACHE_FORMAT = 3  # 2: groups stored as JSON text (a manifest without group columns has none); 3: conditions by name
MODEL_FILES = ("config.json", "model.safetensors", "calibration.json", "lexicon.txt", "preprocessor_config.json", "tokenizer_config.json")


def model_fingerprint(source: str | Path) -> str:
    """What identifies a model's predictions: for a folder, the size and modification time of
    its weight, config, calibration and lexicon files; for a Hub id, the id and the commit its
    files come from (a new push to the repository is a cache miss)."""
    folder = Path(source)
    if not folder.is_dir():
        return f"{source}@{model_revision(source)}"
    parts = [str(folder.resolve())]
    for name in MODEL_FILES:
        path = folder / name
        if path.is_file():
            stat = path.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


class PredictionCache:
    """Prediction records on disk as Parquet, one file per model, lexicon, clips and condition."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(
        self, source: str | Path, lexicon: list[DrugName], rows: list[dict], condition: float | str | None, quantize: str | None = None
    ) -> Path:
        parts = [CACHE_FORMAT, model_fingerprint(source), [entry.label for entry in lexicon], [(row["path"], row["text"]) for row in rows],
                 condition]
        key = json.dumps(parts + [quantize] if quantize else parts)  # float32 keys as before quantization existed
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        slug = "".join(character if character.isalnum() or character in "-_." else "_" for character in Path(str(source)).name)
        slug += f"-{quantize}" if quantize else ""
        return self.folder / f"{slug}-{condition_name(condition).replace(' ', '')}-{digest}.parquet"

    @staticmethod
    def load(path: Path) -> tuple[list[dict], list[dict], float] | None:
        if not path.is_file():
            return None
        table = pq.read_table(path)
        rows = table.to_pylist()
        seconds_per_clip = float(json.loads(table.schema.metadata[b"s2t_hf"])["seconds_per_clip"])
        records = [row for row in rows if row["error"] is None]
        errors = [{"path": row["path"], "error": row["error"]} for row in rows if row["error"] is not None]
        for record in records:
            del record["error"]
            record["groups"] = json.loads(record["groups"])
        return records, errors, seconds_per_clip

    def save(self, path: Path, records: list[dict], errors: list[dict], seconds_per_clip: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # groups as JSON text: Parquet cannot store the empty struct of a manifest without group columns
        rows = [{**record, "groups": json.dumps(record["groups"]), "error": None} for record in records]
        rows += [{"path": error["path"], "error": error["error"]} for error in errors]
        table = pa.Table.from_pylist(rows).replace_schema_metadata({"s2t_hf": json.dumps({"seconds_per_clip": seconds_per_clip})})
        partial = path.with_suffix(".partial")
        pq.write_table(table, partial)
        os.replace(partial, path)  # a killed run never leaves a truncated file that reads as a cache hit


def sample_rows(rows: list[dict], max_clips: int | None, seed: int = 0) -> list[dict]:
    """The same random subset of clips for every model (all of them when max_clips is None)."""
    if max_clips is None or max_clips >= len(rows):
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_clips, replace=False))
    return [rows[index] for index in chosen]


def unique_labels(sources: list[str]) -> list[str]:
    """Short, distinct names for models in tables and plots (folder names, with parents when needed)."""
    labels = [Path(str(source)).name or str(source) for source in sources]
    if len(set(labels)) < len(labels):
        labels = [str(source) for source in sources]
    return labels


def compare_models(
    sources: list[str],
    manifest: str | Path,
    cache_dir: str | Path,
    conditions: list[float | str | None] = (None,),
    lexicon: str | Path | None = None,
    device: str | None = None,
    max_clips: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    quantize: str | None = None,
) -> dict[str, dict]:
    """Each model's summary per condition: {model: {"clean": summary, "10 dB": ..., "telephone": ...}};
    a condition is None (clean), an SNR in dB (white noise) or a codec name (`audio/channels.py`).
    A model is loaded only when some condition is not in the cache yet. `quantize="int8"`: every
    model int8-quantized (`S2T.from_pretrained`), labelled "(int8)"."""
    rows = sample_rows(read_evaluation_manifest(manifest), max_clips)
    cache = PredictionCache(cache_dir)
    results: dict[str, dict] = {}
    for label, source in zip(unique_labels(sources), sources):
        label += f" ({quantize})" if quantize else ""
        source = resolve_packaged(str(source))  # packaged:whisper-tiny.en: its imported folder
        names = model_lexicon(source, lexicon)
        calibration = model_calibration(source)
        recogniser = None
        results[label] = {}
        for condition in conditions:
            path = cache.path(source, names, rows, condition, quantize)
            cached = cache.load(path)
            if cached is None:
                if recogniser is None:
                    recogniser = S2T.from_pretrained(source, lexicon=names, device=device, quantize=quantize)
                started = time.perf_counter()
                records, errors = predict_manifest(recogniser, rows, condition, batch_size=batch_size, progress=progress)
                seconds_per_clip = (time.perf_counter() - started) / max(1, len(rows))
                cache.save(path, records, errors, seconds_per_clip)
                logger.info("%s, %s: predictions cached in %s", label, condition_name(condition), path)
            else:
                records, errors, seconds_per_clip = cached
                logger.info("%s, %s: predictions read from %s", label, condition_name(condition), path)
            summary = summarize(records, errors, [entry.label for entry in names], calibration)
            summary["seconds_per_clip"] = seconds_per_clip
            summary["calibrated"] = calibration.is_fitted
            summary["records"] = records
            results[label][condition_name(condition)] = summary
    return results
