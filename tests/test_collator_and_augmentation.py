import numpy as np
import pytest

from s2t_hf.audio.augmentation import AugmentationError, build_augmenter
from s2t_hf.models.processor import build_processor
from s2t_hf.training.collator import DataCollatorSpeechWithPadding
from s2t_hf.training.data import prepare_for_training


def test_collator_pads_audio_with_mask_and_labels_with_minus_100(lexicon):
    processor = build_processor(lexicon)
    ids = processor.tokenizer(["warfarin", "st johns wort"]).input_ids
    batch = DataCollatorSpeechWithPadding(processor)(
        [{"input_values": np.ones(800, np.float32), "labels": ids[0]}, {"input_values": np.ones(500, np.float32), "labels": ids[1]}]
    )
    assert batch["input_values"].shape == (2, 800)
    assert batch["attention_mask"].sum(-1).tolist() == [800, 500]
    assert batch["labels"].shape == (2, len(ids[1]))
    assert batch["labels"][0, len(ids[0]) :].eq(-100).all()
    assert batch["labels"][1].tolist() == ids[1]
    assert processor.tokenizer.decode(ids[1], group_tokens=False) == "st johns wort"


def test_augmenter_builds_from_names_and_changes_audio():
    augment = build_augmenter({"AddGaussianSNR": {"min_snr_db": 5.0, "max_snr_db": 10.0, "p": 1.0}, "Gain": {"p": 1.0}})
    audio = np.sin(np.linspace(0, 800, 16000)).astype(np.float32) * 0.5
    augmented = augment(audio)
    assert augmented.shape == audio.shape and augmented.dtype == np.float32
    assert not np.allclose(augmented, audio)
    assert np.abs(augmented).max() <= 1.0
    assert build_augmenter(None) is None and build_augmenter({}) is None


@pytest.mark.parametrize("spec, message", [({"NoSuchTransform": {}}, "not an audiomentations transform"), ({"Gain": {"loudness": 3}}, "Gain")])
def test_bad_augmentation_recipe(spec, message):
    with pytest.raises(AugmentationError, match=message):
        build_augmenter(spec)


def test_training_split_hears_a_new_variant_each_time(corpus, lexicon):
    _, splits = corpus
    processor = build_processor(lexicon)
    augment = build_augmenter({"AddGaussianSNR": {"min_snr_db": 5.0, "max_snr_db": 10.0, "p": 1.0}})
    train = prepare_for_training(splits["train"], processor, augment)
    plain = prepare_for_training(splits["test"], processor)
    assert not np.allclose(train[0]["input_values"], train[0]["input_values"])
    np.testing.assert_allclose(plain[0]["input_values"], plain[0]["input_values"])
    assert set(train[0]) == {"input_values", "labels", "input_length"}
    assert abs(np.mean(plain[0]["input_values"])) < 1e-3  # normalised by the feature extractor


def test_length_grouping_reads_the_length_column_without_featurising_a_clip(tmp_path):
    """Trainer's own sampler looks each length up through the dataset's on-the-fly transform
    (reading and augmenting every clip before step 1); ours reads the column alone."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from s2t_hf.training.trainers import LengthsFromColumn

    calls = []

    def transform(batch):
        calls.append(len(next(iter(batch.values()))))
        return batch

    dataset = Dataset.from_dict({"audio": ["x"] * 40, "input_length": [16000 + 100 * (i % 7) for i in range(40)]})
    dataset.set_transform(transform)
    dataset["input_length"][3]  # what Trainer's LengthGroupedSampler does, row by row
    assert calls, "datasets no longer formats a column row through the transform: LengthsFromColumn may be unneeded"
    calls.clear()

    class Sampling(LengthsFromColumn):
        def __init__(self):
            self.train_dataset = dataset
            self.args = TrainingArguments(output_dir=str(tmp_path), train_sampling_strategy="group_by_length",
                                          length_column_name="input_length", per_device_train_batch_size=4, use_cpu=True)

    order = list(Sampling()._get_train_sampler())
    assert sorted(order) == list(range(40)) and not calls
