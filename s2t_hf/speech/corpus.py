"""From a lexicon and voices to a cached, speaker-disjoint corpus on disk.

`build_corpus` synthesises (cached) every name with every voice, splits by speaker, and saves
the `DatasetDict` and one manifest per split under the data folder; `load_corpus` reads back
what it saved (the other processes of a multi-process run, which must not write).
"""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict, load_from_disk

from ..text.lexicon import DrugName
from .splits import assign_speakers, build_dataset_dict
from .synthesis import synthesize_corpus, write_manifest
from .tts import Voice, parse_voices

DATASET_FOLDER = "dataset"


def build_corpus(
    lexicon: list[DrugName],
    voices: list[str] | list[Voice],
    data_dir: str | Path,
    validation_voices: list[str] | None = None,
    test_voices: list[str] | None = None,
    split_seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
) -> DatasetDict:
    """Synthesise every name with every voice under `data_dir` (reusing clips already there),
    split by speaker, save the DatasetDict to `data_dir/dataset` and a manifest per split."""
    parsed = parse_voices([voice.id if isinstance(voice, Voice) else voice for voice in voices])
    clips = synthesize_corpus(lexicon, parsed, data_dir, num_workers=num_workers, progress=progress)
    assignment = assign_speakers([clip.speaker for clip in clips], validation_voices, test_voices, seed=split_seed)
    splits = build_dataset_dict(clips, data_dir, assignment)
    splits.save_to_disk(str(Path(data_dir) / DATASET_FOLDER))
    for split in splits:  # per-split manifests, e.g. for `s2t-hf evaluate MODEL --manifest data/.../manifest-test.tsv`
        write_manifest([clip for clip in clips if assignment[clip.speaker] == split], Path(data_dir) / f"manifest-{split}.tsv")
    return splits


def load_corpus(data_dir: str | Path) -> DatasetDict:
    """The `DatasetDict` `build_corpus` saved under `data_dir`, held in memory: `map` on it then
    writes no cache files into the folder (a reader must leave the writer's folder as it is)."""
    folder = Path(data_dir) / DATASET_FOLDER
    if not (folder / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{folder} holds no saved DatasetDict: build_corpus (or s2t-hf generate-data) writes it")
    return load_from_disk(str(folder), keep_in_memory=True)
