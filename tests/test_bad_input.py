"""Bad input: every class of broken audio, lexicon and recipe gets a clear error or a counted skip."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile
from datasets import Audio, Dataset

from s2t_hf.audio.reading import AudioError, read_usable_audio
from s2t_hf.text.lexicon import LexiconError, build_lexicon, load_lexicon
from s2t_hf.training.data import audit_clips

from .conftest import SESSION_FOLDERS, changes, require_program, snapshot
from .test_cli import cli
from .test_run_ctc import run, write_recipe

RATE = 16000


def speech_like(seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    """A voiced, varying tone: a stand-in for speech that is neither silent nor clipped."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def put(folder, name, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


def write(folder, name, audio, rate=RATE, **kwargs):
    path = folder / name
    soundfile.write(path, audio, rate, **kwargs)
    return path


# class -> (make the file, what must happen: None = recognised, else the AudioError reason)
AUDIO_CLASSES = {
    "empty file": (lambda d: put(d, "empty.wav", b""), "empty"),
    "zero-length WAV": (lambda d: write(d, "zero.wav", np.zeros(0, np.float32)), "empty"),
    "all silent": (lambda d: write(d, "silent.wav", np.zeros(RATE, np.float32)), "silent"),
    "NaN samples": (lambda d: write(d, "nan.wav", np.where(np.arange(RATE) % 100 == 0, np.nan, speech_like(1.0)).astype(np.float32), subtype="FLOAT"), "non-finite"),
    "inf samples": (lambda d: write(d, "inf.wav", np.where(np.arange(RATE) == 5, np.inf, speech_like(1.0)).astype(np.float32), subtype="FLOAT"), "non-finite"),
    "clipped": (lambda d: write(d, "clipped.wav", np.clip(speech_like(1.0, amplitude=3.0), -1, 1)), None),
    "shorter than 0.1 s": (lambda d: write(d, "short.wav", speech_like(0.05)), "too-short"),
    "too long": (lambda d: write(d, "long.wav", speech_like(61.0)), "too-long"),
    "8 kHz": (lambda d: write(d, "rate8k.wav", speech_like(1.0, 8000), 8000), None),
    "48 kHz": (lambda d: write(d, "rate48k.wav", speech_like(1.0, 48000), 48000), None),
    "stereo": (lambda d: write(d, "stereo.wav", np.stack([speech_like(1.0), speech_like(1.0) * 0.5], axis=1)), None),
    "24-bit WAV": (lambda d: write(d, "pcm24.wav", speech_like(1.0), subtype="PCM_24"), None),
    "float WAV": (lambda d: write(d, "float.wav", speech_like(1.0), subtype="FLOAT"), None),
    "MP3": (lambda d: write(d, "clip.mp3", speech_like(1.0), format="MP3"), None),
    "truncated WAV": (lambda d: put(d, "truncated.wav", write(d, "whole.wav", speech_like(1.0)).read_bytes()[:30]), "unreadable"),
    "corrupt bytes named .wav": (lambda d: put(d, "corrupt.wav", b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4), "unreadable"),
    "text file named .wav": (lambda d: put(d, "text.wav", b"metformin 500 mg"), "unreadable"),
    "missing path": (lambda d: d / "missing.wav", "missing"),
}


@pytest.mark.parametrize("audio_class", list(AUDIO_CLASSES))
def test_each_bad_audio_class_is_read_or_rejected_with_a_named_reason(tmp_path, audio_class):
    make, expected = AUDIO_CLASSES[audio_class]
    path = make(tmp_path)
    if expected is None:
        audio = read_usable_audio(path, max_seconds=60)
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
        assert len(audio) == pytest.approx(RATE, rel=0.05)  # resampled to 16 kHz, downmixed
    else:
        with pytest.raises(AudioError) as error:
            read_usable_audio(path, max_seconds=60)
        assert error.value.reason == expected
        assert path.name in str(error.value)


def test_recognize_gives_a_per_file_error_and_carries_on(tmp_path, untrained_model):
    paths = {audio_class: make(tmp_path) for audio_class, (make, _) in AUDIO_CLASSES.items()}
    lines = cli("recognize", untrained_model, *paths.values(), "--json").stdout.splitlines()
    records = {json.loads(line)["path"]: json.loads(line) for line in lines}
    assert len(records) == len(paths)
    for audio_class, path in paths.items():
        record = records[str(path)]
        if AUDIO_CLASSES[audio_class][1] is None:
            assert len(record["candidates"]) == 5, audio_class
        else:
            assert "error" in record and path.name in record["error"], audio_class


def test_training_audit_drops_and_counts_each_bad_clip_at_the_start(tmp_path, caplog):
    paths = {audio_class: make(tmp_path) for audio_class, (make, _) in AUDIO_CLASSES.items()}
    dataset = Dataset.from_dict({"audio": [str(path) for path in paths.values()], "label": ["metformin"] * len(paths)})
    dataset = dataset.cast_column("audio", Audio(decode=False))
    with caplog.at_level(logging.INFO, logger="s2t_hf.data"):
        kept = audit_clips(dataset, "train", max_duration_s=10.0)
    kept_paths = {audio["path"] for audio in kept["audio"]}
    assert kept_paths == {str(paths[c]) for c, (_, expected) in AUDIO_CLASSES.items() if expected is None}
    summary = next(record.message for record in caplog.records if "clips checked" in record.message)
    assert f"{len(paths)} clips checked" in summary
    expected = [("missing", 1), ("empty", 2), ("unreadable", 3), ("silent", 1), ("too-short", 1), ("too-long", 1), ("non-finite", 2), ("clipped (kept)", 1)]
    for reason, count in expected:
        assert f"{reason}: {count}" in summary, reason


def test_a_clip_broken_after_the_audit_is_skipped_by_the_collator(corpus_copy, lexicon, caplog):
    from s2t_hf.models.processor import build_processor
    from s2t_hf.training.collator import DataCollatorSpeechWithPadding
    from s2t_hf.training.data import prepare_for_training

    folder, splits = corpus_copy  # this test damages a clip: its own copy, never the session corpus
    processor = build_processor(lexicon)
    train = prepare_for_training(splits["train"], processor)
    # damage one clip after the audit, as a disk error or a user's cleanup would mid-run
    first = train.with_format(None).cast_column("audio", Audio(decode=False))[0]["audio"]
    if first["bytes"]:
        pytest.skip("clips are embedded in the dataset; nothing on disk to damage")
    assert first["path"].startswith(str(folder.resolve()))
    shutil.move(first["path"], first["path"] + ".moved")
    with caplog.at_level(logging.WARNING):
        batch = DataCollatorSpeechWithPadding(processor)([train[index] for index in range(4)])
    assert batch["input_values"].shape[0] == 3 and batch["labels"].shape[0] == 3
    # the three kept rows are clips 1..3, in order: their labels are those clips' labels
    expected = processor.tokenizer.pad({"input_ids": [train[index]["labels"] for index in range(1, 4)]}, return_tensors="pt")
    assert batch["labels"].masked_fill(batch["labels"] == -100, processor.tokenizer.pad_token_id).equal(expected["input_ids"])
    assert any("can no longer be read" in record.message for record in caplog.records)


def test_spec_augment_time_masking_survives_a_0_1_second_clip(lexicon):
    import torch

    from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC
    from s2t_hf.models.processor import build_processor

    processor = build_processor(lexicon)
    config = MelConformerConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, mask_time_prob=1.0, mask_time_length=20)
    model = MelConformerForCTC(config).train()
    inputs = processor.feature_extractor([speech_like(0.1)], sampling_rate=RATE, return_tensors="pt")
    loss = model(**inputs, labels=torch.tensor([[1]])).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no usable drug name"),
        ("\n\n  \n", "no usable drug name"),
        ("metformin\n5-fluorouracil\n", "line 2"),
        ("metformin\nα-tocopherol\n", "line 2"),
    ],
)
def test_bad_lexicon_files_name_the_line_and_the_fix(tmp_path, text, problem):
    path = tmp_path / "drugs.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LexiconError, match=problem):
        load_lexicon(path)


def test_lexicon_file_quirks_are_normalised(tmp_path):
    path = tmp_path / "drugs.txt"
    path.write_bytes("\ufeffMetformin\r\n\r\nmetformin\r\nPénicilline\r\nWeißdorn\r\nco-trimoxazole\r\n".encode("utf-8"))
    assert [entry.label for entry in load_lexicon(path)] == ["metformin", "penicilline", "weissdorn", "co trimoxazole"]
    assert [entry.label for entry in build_lexicon(["Warfarin", " warfarin ", "WARFARIN"])] == ["warfarin"]


def test_a_name_too_long_for_its_clip_is_dropped_with_a_warning_not_an_infinite_loss(caplog):
    import torch

    from s2t_hf.training.data import drop_unalignable

    dataset = Dataset.from_dict({"labels": [[1, 2, 3], [1] * 40], "input_length": [16000, 1600]})
    with caplog.at_level(logging.WARNING):
        kept = drop_unalignable(dataset, lambda samples: torch.div(samples, 320, rounding_mode="floor"), "train")
    assert len(kept) == 1 and kept[0]["labels"] == [1, 2, 3]
    assert any("dropped 1 of 2 clips" in record.message for record in caplog.records)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learnig_rate": 1e-3}, "unknown key 'learnig_rate'; did you mean 'learning_rate'?"),
        ({"learning_rate": "fast"}, "'learning_rate' must be float, got 'fast' (str)"),
        ({"max_steps": 2.5}, "'max_steps' must be int, got 2.5 (float)"),
        ({"voices": "espeak-ng:en-us"}, "'voices' must be list[str]"),
        ({"deepspeed": "ds_configs/nope.json"}, "'deepspeed' names 'ds_configs/nope.json', which does not exist"),
        ({"lexicon": "/nonexistent/drugs.txt"}, "/nonexistent/drugs.txt"),
        ({"voices": ["@/nonexistent/voices.txt"]}, "/nonexistent/voices.txt"),
    ],
)
def test_recipe_errors_are_one_line_naming_the_key(tmp_path, overrides, message):
    result = run(write_recipe(tmp_path, **overrides))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") <= 2


def test_a_missing_recipe_is_one_line(tmp_path):
    result = run(tmp_path / "nope.json")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


# ---- a broken test setup: a missing engine in CI, a test writing into a shared fixture ----


def test_a_missing_engine_fails_in_ci_and_skips_locally(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no-such-program-xyz is not installed.*scripts/setup\.sh"):
        require_program("no-such-program-xyz")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"no-such-program-xyz is not installed \(scripts/setup\.sh installs it\)"):
        require_program("no-such-program-xyz")
    require_program("sh")  # an installed program neither fails nor skips


def test_a_write_into_a_protected_folder_is_named(tmp_path):
    folder = tmp_path / "shared"
    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "a.wav").write_bytes(b"RIFF")
    (folder / "manifest.tsv").write_text("path\ttext\n")
    os.utime(folder / "clips", ns=(0, 0))  # a folder made long ago: the move below cannot fall in its mtime's clock tick
    before = snapshot(folder)
    assert changes(folder, before) == []
    (folder / "clips" / "a.wav").rename(folder / "clips" / "a.wav.moved")
    (folder / "clips" / "a.wav.moved").rename(folder / "clips" / "a.wav")  # moved away and back: the folder saw it
    assert changes(folder, before) == [f"{folder / 'clips'}: changed (size, mtime_ns) {before['clips']} -> {snapshot(folder)['clips']}"]
    before = snapshot(folder)
    (folder / "manifest.tsv").write_text("path\ttext\nx.wav\tmetformin\n")
    (folder / "dataset").mkdir()
    found = changes(folder, before)
    assert f"{folder / 'dataset'}: added" in found
    assert any(line.startswith(f"{folder / 'manifest.tsv'}: changed") for line in found)
    (folder / "clips" / "a.wav").unlink()
    assert f"{folder / 'clips' / 'a.wav'}: removed" in changes(folder, before)


def test_session_folders_are_protected(corpus, untrained_model):
    assert set(SESSION_FOLDERS) >= {corpus[0], untrained_model}
    assert all(changes(folder, before) == [] for folder, before in SESSION_FOLDERS.items())
