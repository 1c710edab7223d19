import pytest

from s2t_hf.speech.splits import SplitError, assign_speakers, talent_of

SPEAKERS = [f"espeak-ng:v{i}" for i in range(6)] + ["flite:a", "flite:b", "flite:c", "festival:x", "festival:y"]


def test_default_holds_out_one_talent_per_engine_family_with_three_or_more():
    assignment = assign_speakers(SPEAKERS, seed=3)
    for split in ("validation", "test"):
        held = [speaker for speaker, chosen in assignment.items() if chosen == split]
        assert len(held) == 2 and {speaker.split(":")[0] for speaker in held} <= {"espeak-ng", "flite", "festival"}
        assert "espeak-ng" in {speaker.split(":")[0] for speaker in held}
    assert assign_speakers(SPEAKERS, seed=3) == assignment


def test_talents_group_accent_variants_and_festvox_voices_across_engines():
    assert talent_of("espeak-ng:en-gb-x-gbcwmd+f3") == talent_of("espeak-ng:en-gb-x-gbcwmd+m4") == "espeak-ng:en-gb-x-gbcwmd"
    assert talent_of("espeak-ng:en-gb") != talent_of("espeak-ng:en-gb-scotland")
    assert talent_of("flite:kal") == talent_of("flite:kal16") == talent_of("festival:kal_diphone") == "festvox:kal"
    assert talent_of("flite:slt") == talent_of("festival:cmu_us_slt_arctic_hts") == "festvox:slt"
    assert talent_of("flite:awb_time") == talent_of("flite:awb") != talent_of("flite:rms")
    assert talent_of("piper:joe") == "piper:joe"


def test_default_split_holds_out_every_variant_of_a_talent():
    speakers = [f"espeak-ng:en-{accent}{variant}" for accent in ("us", "gb", "029", "sc") for variant in ("", "+f3", "+m2")]
    speakers += ["flite:kal", "flite:kal16", "festival:kal_diphone", "flite:slt", "festival:cmu_us_slt_arctic_hts", "flite:awb", "flite:rms"]
    for seed in range(6):
        assignment = assign_speakers(speakers, seed=seed)
        talent_splits = {}
        for speaker, split in assignment.items():
            talent_splits.setdefault(talent_of(speaker), set()).add(split)
        assert all(len(splits) == 1 for splits in talent_splits.values()), talent_splits
        assert {"train", "validation", "test"} == set(assignment.values())


def test_a_held_out_voice_that_shares_its_talent_with_a_training_voice_is_refused():
    speakers = ["espeak-ng:en-us", "espeak-ng:en-us+f3", "espeak-ng:en-gb", "flite:kal", "festival:kal_diphone", "flite:awb"]
    with pytest.raises(SplitError, match=r"'espeak-ng:en-us\+f3'.*'espeak-ng:en-us'.*one voice talent"):
        assign_speakers(speakers, validation=["flite:awb"], test=["espeak-ng:en-us+f3"])
    with pytest.raises(SplitError, match=r"festival:kal_diphone.*flite:kal.*festvox:kal"):
        assign_speakers(speakers, validation=["espeak-ng:en-gb"], test=["festival:*"])
    with pytest.raises(SplitError, match="one voice talent"):  # the same talent in validation and test leaks too
        assign_speakers(speakers, validation=["flite:kal"], test=["festival:*"])
    assignment = assign_speakers(speakers, validation=["espeak-ng:en-gb"], test=["festival:*", "flite:kal"])
    assert {speaker for speaker, split in assignment.items() if split == "test"} == {"flite:kal", "festival:kal_diphone"}


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
