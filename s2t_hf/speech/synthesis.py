"""Synthesising a corpus: every lexicon name spoken by every voice, cached on disk.

Clips land at `<out>/clips/<voice id>/<label>.wav` (16 kHz mono PCM16). A clip is written to
a temporary name and renamed into place only when complete, so a killed run leaves no partial
file that reads as valid, and a rerun synthesises only what is missing. The manifest
(`manifest.tsv`) is written last, atomically, from the clips on disk.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm.auto import tqdm

from ..audio.reading import SAMPLING_RATE, AudioError, check_usable, load_audio
from ..text.lexicon import DrugName
from .tts import TTSError, Voice, check_voices, get_engine

logger = logging.getLogger(__name__)


MANIFEST_NAME = "manifest.tsv"
MANIFEST_COLUMNS = ["path", "text", "label", "voice", "speaker", "engine", "duration"]
TEMP_SUFFIX = ".partial.wav"


@dataclass
class Clip:
    path: str  # relative to the corpus folder
    text: str
    label: str
    voice: str
    speaker: str
    engine: str
    duration: float


def clip_path(voice: Voice, entry: DrugName) -> Path:
    """Where a clip lives, relative to the corpus folder."""
    voice_dir = re.sub(r"[^A-Za-z0-9@+.\-]", "_", voice.id)
    return Path("clips") / voice_dir / (entry.label.replace(" ", "_") + ".wav")


def trim_silence(audio: np.ndarray, threshold_db: float = -40.0, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing stretches quieter than `threshold_db` below the peak frame."""
    frame = SAMPLING_RATE // 100
    frames = len(audio) // frame
    if frames < 3:
        return audio
    energy = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1)) + 1e-10
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    margin = int(margin_s * SAMPLING_RATE)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def finish_clip(raw_path: Path, final_path: Path) -> bool:
    """Turn an engine's raw WAV into the corpus format and move it into place atomically."""
    try:
        audio = check_usable(trim_silence(load_audio(raw_path)), str(final_path))
    except AudioError as error:
        logger.warning("%s: engine output unusable (%s); skipped", final_path, error)
        return False
    write_clip(audio, final_path)
    return True


def write_clip(audio: np.ndarray, path: Path) -> None:
    """A 16 kHz PCM16 clip written under a temporary name and moved into place: a killed run never
    leaves a partial file that reads as a finished clip."""
    partial_path = path.with_name(path.stem + TEMP_SUFFIX)
    soundfile.write(partial_path, audio, SAMPLING_RATE, subtype="PCM_16")
    os.replace(partial_path, path)


def synthesize_batch(voice: Voice, entries: list[DrugName], corpus_dir: Path, timeout: float) -> int:
    """Speak a batch of names with one voice; return how many clips were written."""
    targets = [(entry, corpus_dir / clip_path(voice, entry)) for entry in entries]
    raw = [(entry.name, path.with_name(path.stem + ".raw" + TEMP_SUFFIX)) for entry, path in targets]
    targets[0][1].parent.mkdir(parents=True, exist_ok=True)
    fatal = True
    try:
        get_engine(voice.engine).synthesize(raw, voice, timeout)
        fatal = False
    except TTSError:
        raise  # a setup problem (engine missing, no network for gTTS): stop with its message
    except Exception as error:  # an engine crash must not end the whole corpus
        fatal = False
        logger.warning("%s: synthesis failed (%s); %d names skipped", voice.id, error, len(entries))
    finally:
        # Also when stopping on a fatal error: keep the names already spoken, leave no raw file.
        written = 0
        for (entry, final_path), (_, raw_path) in zip(targets, raw):
            if raw_path.is_file() and raw_path.stat().st_size > 0:
                written += finish_clip(raw_path, final_path)
            elif not fatal:
                logger.warning("%s produced no audio for %r; skipped", voice.id, entry.name)
            raw_path.unlink(missing_ok=True)
    return written


def in_shard(pairs: list, shard: tuple[int, int] | None) -> list:
    """Shard (i, n), 1-based, of the (voice, name) pairs: every n-th pair from the i-th, so each
    shard holds a fair share of every voice (a slow engine is not all in one shard)."""
    if shard is None:
        return pairs
    index, count = shard
    return pairs[index - 1 :: count]


def synthesize_corpus(
    lexicon: list[DrugName],
    voices: list[Voice],
    corpus_dir: str | Path,
    num_workers: int | None = None,
    batch_size: int = 64,
    timeout: float = 30.0,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> list[Clip]:
    """Make sure every (name, voice) clip exists under `corpus_dir`; return the manifest rows.

    Work runs on `num_workers` threads (default: all cores), each driving an engine process.
    With `shard=(i, n)` only the i-th of n disjoint parts is synthesised (one machine's share;
    `speech.corpus.merge_shards` builds the corpus once all n are done): its clips are returned
    and no manifest is written.
    """
    corpus_dir = Path(corpus_dir)
    if not voices:
        raise TTSError("no voices given; name at least one, e.g. 'espeak-ng:en-us'")
    check_voices(voices)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    # From a run that was killed mid-clip: partial clips, and engines' scratch files named after
    # them (gTTS's '.partial.mp3'). Labels hold no '.', so no finished clip matches.
    for leftover in corpus_dir.glob("clips/*/*.partial.*"):
        leftover.unlink()

    pairs = in_shard([(voice, entry) for voice in voices for entry in lexicon], shard)
    missing = [(voice, entry) for voice, entry in pairs if not (corpus_dir / clip_path(voice, entry)).is_file()]
    total = len(pairs)
    logger.info("corpus %s: %d clips, %d already on disk, %d to synthesise", corpus_dir, total, total - len(missing), len(missing))
    jobs = list(batches(missing, batch_size))
    with ThreadPoolExecutor(max_workers=num_workers or os.cpu_count()) as pool, tqdm(
        total=len(missing), desc="synthesising", unit="clip", disable=not progress
    ) as bar:
        futures = {pool.submit(synthesize_batch, voice, names, corpus_dir, timeout): len(names) for voice, names in jobs}
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(futures[future])
        except BaseException:
            # A fatal error (an engine gone, gTTS offline, Ctrl-C; a name that fails is only
            # logged by synthesize_batch) would otherwise wait for every queued batch to be
            # synthesised when the pool closes. Drop the batches not started, let the running
            # ones end (their clips are written atomically and kept), and stop with the error.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    clips = collect_clips(lexicon, voices, corpus_dir, pairs if shard else None)
    failed = total - len(clips)
    if failed:
        logger.warning("%d of %d clips could not be synthesised (see the warnings above)", failed, total)
    if shard is None:
        write_manifest(clips, corpus_dir / MANIFEST_NAME)
    return clips


def batches(pairs: list[tuple[Voice, DrugName]], size: int) -> Iterable[tuple[Voice, list[DrugName]]]:
    """Group (voice, name) pairs into per-voice batches of at most `size` names."""
    by_voice: dict[Voice, list[DrugName]] = {}
    for voice, entry in pairs:
        by_voice.setdefault(voice, []).append(entry)
    for voice, entries in by_voice.items():
        for start in range(0, len(entries), size):
            yield voice, entries[start : start + size]


def collect_clips(
    lexicon: list[DrugName], voices: list[Voice], corpus_dir: Path, pairs: list[tuple[Voice, DrugName]] | None = None
) -> list[Clip]:
    """Manifest rows of the clips on disk, voice by voice in lexicon order (of `pairs` only, when given)."""
    clips = []
    for voice, entry in pairs if pairs is not None else [(voice, entry) for voice in voices for entry in lexicon]:
        relative = clip_path(voice, entry)
        path = corpus_dir / relative
        if path.is_file():
            duration = soundfile.info(path).duration
            clips.append(Clip(str(relative), entry.name, entry.label, voice.id, voice.speaker, voice.engine, round(duration, 3)))
    return clips


def write_manifest(clips: list[Clip], path: Path) -> None:
    write_tsv((asdict(clip) for clip in clips), MANIFEST_COLUMNS, path)


def write_tsv(rows: Iterable[dict], columns: list[str], path: Path) -> None:
    """A tab-separated file with a header, written to a temporary name and moved into place."""
    partial = path.with_suffix(".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
