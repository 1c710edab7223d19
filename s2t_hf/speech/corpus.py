"""From a lexicon and voices to a cached, speaker-disjoint corpus on disk.

`build_corpus` synthesises (cached) every name with every voice, splits by speaker, and saves
the `DatasetDict` and one manifest per split under the data folder; `load_corpus` reads back
what it saved (the other processes of a multi-process run, which must not write).

Large corpora are synthesised by several machines into shared storage: `synthesize_shard`
makes one machine's part (`s2t-hf generate-data --shard I/N`) and leaves a receipt under
`shards/`; `merge_shards` (`--merge`), once every receipt is there, builds the one manifest and
`DatasetDict` an unsharded run would have built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, concatenate_datasets, load_from_disk

from ..text.lexicon import DrugName
from .sentences import build_sentences, write_sentence_manifest
from .splits import assign_speakers, build_dataset_dict
from .synthesis import MANIFEST_NAME, Clip, collect_clips, synthesize_corpus, write_manifest
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
    sentences_per_voice: int = 0,
    drug_free_sentences_per_voice: int = 0,
    sentence_names: list[DrugName] | None = None,
    drug_free_words_per_voice: int = 0,
    decoy_sentences_per_voice: int = 0,
) -> DatasetDict:
    """Synthesise every name with every voice under `data_dir` (reusing clips already there),
    split by speaker, save the DatasetDict to `data_dir/dataset` and a manifest per split.

    With `sentences_per_voice` (and `drug_free_sentences_per_voice`, `drug_free_words_per_voice`,
    `decoy_sentences_per_voice`), each voice also speaks that many sentences around the names
    (and without them, ordinary words alone, and the name sentences with ordinary words in the
    names' places; `speech.sentences`): the training voices' sentences
    join the train split (a model learns names inside speech); all voices' are listed, with
    their names' times, in `manifest-sentences-<split>.tsv` for spotting's evaluation. The
    validation and test splits stay isolated names, whose top-k the trainer reports.
    `sentence_names`: the names sentences use (default: the lexicon; leave out words that are
    not drug names, such as the real-voice check's)."""
    parsed = parse_voices([voice.id if isinstance(voice, Voice) else voice for voice in voices])
    clips = synthesize_corpus(lexicon, parsed, data_dir, num_workers=num_workers, progress=progress)
    sentences = []
    if sentences_per_voice or drug_free_sentences_per_voice or drug_free_words_per_voice or decoy_sentences_per_voice:
        sentences = build_sentences(sentence_names or lexicon, parsed, data_dir, sentences_per_voice, drug_free_sentences_per_voice,
                                    split_seed, num_workers, progress, drug_free_words_per_voice, decoy_sentences_per_voice)
    return split_and_save(clips, data_dir, validation_voices, test_voices, split_seed, sentences)


def split_and_save(
    clips: list[Clip], data_dir: str | Path, validation_voices: list[str] | None, test_voices: list[str] | None, split_seed: int,
    sentences: list[dict] | None = None,
) -> DatasetDict:
    """Split the clips (and sentences) by speaker, save the DatasetDict to `data_dir/dataset` and a manifest per split."""
    assignment = assign_speakers([clip.speaker for clip in clips], validation_voices, test_voices, seed=split_seed)
    splits = build_dataset_dict(clips, data_dir, assignment)
    if sentences:
        for split in splits:
            write_sentence_manifest([row for row in sentences if assignment.get(row["speaker"]) == split],
                                    Path(data_dir) / f"manifest-sentences-{split}.tsv")
        training = [row for row in sentences if assignment.get(row["speaker"]) == "train"]
        if training:
            splits["train"] = concatenate_datasets([splits["train"], sentence_dataset(training, data_dir, splits["train"].features)])
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


SHARDS_FOLDER = "shards"
SHARD_RECEIPT = re.compile(r"^(\d+)-of-(\d+)\.json$")


class ShardError(ValueError):
    """Shards that cannot be made or merged as asked."""


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8): the second of eight shards, counted from 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ShardError(f"shard {text!r} must be I/N with 1 <= I <= N, e.g. 1/4 for the first of four machines")
    return int(match[1]), int(match[2])


def corpus_fingerprint(lexicon: list[DrugName], voices: list[Voice]) -> str:
    """Names and voices a shard was made from: shards of different corpora must not be merged."""
    text = "\n".join([*(entry.label for entry in lexicon), "--", *(voice.id for voice in voices)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def synthesize_shard(
    lexicon: list[DrugName], voices: list[str] | list[Voice], data_dir: str | Path, shard: tuple[int, int],
    num_workers: int | None = None, progress: bool = True,
) -> list[Clip]:
    """Synthesise shard (i, n) of the corpus into `data_dir`, then write its receipt
    (`shards/i-of-n.json`, last and atomically: a shard killed half-way has none, and rerunning
    it synthesises only what is missing)."""
    parsed = parse_voices([voice.id if isinstance(voice, Voice) else voice for voice in voices])
    clips = synthesize_corpus(lexicon, parsed, data_dir, num_workers=num_workers, progress=progress, shard=shard)
    folder = Path(data_dir) / SHARDS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    receipt = folder / f"{shard[0]}-of-{shard[1]}.json"
    partial = receipt.with_suffix(".partial")
    receipt_fields = {"shard": shard[0], "of": shard[1], "clips": len(clips), "corpus": corpus_fingerprint(lexicon, parsed)}
    partial.write_text(json.dumps(receipt_fields) + "\n")
    os.replace(partial, receipt)
    return clips


def merge_shards(
    lexicon: list[DrugName], voices: list[str] | list[Voice], data_dir: str | Path,
    validation_voices: list[str] | None = None, test_voices: list[str] | None = None, split_seed: int = 0,
) -> DatasetDict:
    """Build the corpus (manifest, splits, DatasetDict) from n finished shards of `data_dir`,
    exactly as `build_corpus` would from one machine; refuses while a shard is missing or when
    a shard was made from other names or voices."""
    parsed = parse_voices([voice.id if isinstance(voice, Voice) else voice for voice in voices])
    folder = Path(data_dir) / SHARDS_FOLDER
    receipts = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if SHARD_RECEIPT.match(path.name):
            receipts[path.name] = json.loads(path.read_text(encoding="utf-8"))
    if not receipts:
        raise ShardError(f"{folder} holds no shard receipts: run `s2t-hf generate-data ... --shard I/N` for every I first")
    counts = {receipt["of"] for receipt in receipts.values()}
    if len(counts) > 1:
        raise ShardError(f"{folder} holds shards of different splittings ({', '.join(f'N={count}' for count in sorted(counts))}); "
                         "remove the receipts of the one not wanted")
    count = counts.pop()
    missing = sorted(set(range(1, count + 1)) - {receipt["shard"] for receipt in receipts.values()})
    if missing:
        raise ShardError(f"shards {', '.join(f'{index}/{count}' for index in missing)} of {data_dir} are not finished (no receipt in "
                         f"{folder}); run `s2t-hf generate-data ... --shard I/{count}` for them, then merge")
    fingerprint = corpus_fingerprint(lexicon, parsed)
    foreign = sorted(name for name, receipt in receipts.items() if receipt["corpus"] != fingerprint)
    if foreign:
        raise ShardError(f"shard receipts {', '.join(foreign)} were made from other names or voices than this merge's; "
                         "merge with the same --lexicon, --max-names and --voices the shards used")
    clips = collect_clips(lexicon, parsed, Path(data_dir))
    write_manifest(clips, Path(data_dir) / MANIFEST_NAME)
    return split_and_save(clips, data_dir, validation_voices, test_voices, split_seed)


def sentence_dataset(rows: list[dict], data_dir: str | Path, features: Features) -> Dataset:
    """Sentence manifest rows as a Dataset with the isolated names' columns (audio: the absolute path)."""
    folder = Path(data_dir).resolve()
    records = [{**{key: row[key] for key in features if key in row}, "audio": str(folder / row["path"])} for row in rows]
    return Dataset.from_list(records, features=features)
