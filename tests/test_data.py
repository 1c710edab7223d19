import torch
from datasets import Dataset

from s2t_hf.training.data import ctc_frames_needed, drop_unalignable


def test_ctc_needs_a_blank_between_repeated_tokens():
    assert ctc_frames_needed([1, 2, 3]) == 3
    assert ctc_frames_needed([5, 5, 6, 6, 6]) == 8
    assert ctc_frames_needed([]) == 0


def test_clips_too_short_for_their_label_are_dropped_and_the_transform_kept():
    dataset = Dataset.from_dict({"input_length": [1600, 320, 16000], "labels": [[3, 3, 4], [5, 6, 7, 8], [9]]})
    dataset.set_transform(lambda batch: {**batch, "seen": [True] * len(batch["labels"])})
    kept = drop_unalignable(dataset, lambda samples: torch.div(samples, 320, rounding_mode="floor"), "train")
    assert kept.with_format(None)["input_length"][:] == [1600, 16000]
    assert kept[0]["seen"] is True
