import pytest

from s2t_hf.speech.splits import SplitError, assign_speakers

SPEAKERS = [f"espeak-ng:v{i}" for i in range(6)] + ["flite:a", "flite:b", "flite:c", "festival:x", "festival:y"]


def test_default_holds_out_one_speaker_per_engine_with_three_or_more():
    assignment = assign_speakers(SPEAKERS, seed=3)
    for split in ("validation", "test"):
        held = [speaker for speaker, chosen in assignment.items() if chosen == split]
        assert sorted(speaker.split(":")[0] for speaker in held) == ["espeak-ng", "flite"]
    assert assignment["festival:x"] == assignment["festival:y"] == "train"
    assert assign_speakers(SPEAKERS, seed=3) == assignment


def test_globs_hold_out_a_whole_engine():
    assignment = assign_speakers(SPEAKERS, validation=["flite:a"], test=["festival:*"])
    assert {speaker for speaker, split in assignment.items() if split == "test"} == {"festival:x", "festival:y"}
    assert assignment["flite:a"] == "validation"


def test_unknown_or_overlapping_held_out_voices_are_errors():
    with pytest.raises(SplitError, match="'piper:joe' matches none"):
        assign_speakers(SPEAKERS, validation=["flite:a"], test=["piper:joe"])
    with pytest.raises(SplitError, match="both the validation and the test"):
        assign_speakers(SPEAKERS, validation=["flite:*"], test=["flite:a"])
    with pytest.raises(SplitError, match="train split has no speaker"):
        assign_speakers(["flite:a", "flite:b"], validation=["flite:a"], test=["flite:b"])


def test_saved_splits_share_no_voice(corpus):
    folder, splits = corpus
    speakers = {name: set(split["speaker"]) for name, split in splits.items()}
    assert speakers["test"] == {"flite:slt"} and speakers["validation"] == {"flite:kal16"}
    assert not speakers["train"] & (speakers["test"] | speakers["validation"])
    from s2t_hf.speech.synthesis import read_manifest

    assert {row["speaker"] for row in read_manifest(folder / "manifest-test.tsv")} == {"flite:slt"}
    assert len(read_manifest(folder / "manifest-train.tsv")) == 18
    from datasets import Audio, load_from_disk

    from s2t_hf.audio.reading import load_audio

    reloaded = load_from_disk(str(folder / "dataset"))
    assert {name: len(split) for name, split in reloaded.items()} == {"train": 18, "validation": 6, "test": 6}
    stored = reloaded["test"].cast_column("audio", Audio(decode=False))[0]["audio"]
    assert len(load_audio(stored["bytes"] or stored["path"])) > 0.2 * 16000
