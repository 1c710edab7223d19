"""A tiny model overfits a handful of clips and then ranks each of them right.

Metrics of a few-step run are near chance and prove nothing about learning; this test can
only pass when the processor's labels, the collator, the CTC loss, the model's frame lengths
and the likelihood ranking `S2T.recognize` uses all fit together.
"""

from __future__ import annotations

import time

from .conftest import TEST_NAMES

VOICES = ["espeak-ng:en-us", "espeak-ng:en-gb+f2"]  # two of the corpus's training voices: 6 names x 2 = 12 clips
# full-batch AdamW steps. Measured over seeds 0-2: every clip ranked right from step 35-45, every greedy
# transcript exact from step 70-75, and at step 90 a CTC loss of 0.08-0.09 and a best-name lead of 3.5+
# (log-likelihood per letter). 6-35 s on 2 cores, depending on what else runs on them
STEPS = 90
LEARNING_RATE = 3e-3


def test_a_tiny_model_overfits_a_few_clips_and_then_ranks_each_one_first(corpus, lexicon):
    import torch
    from datasets import Audio

    from s2t_hf import S2T
    from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC
    from s2t_hf.models.processor import build_processor
    from s2t_hf.training.collator import DataCollatorSpeechWithPadding, model_inputs
    from s2t_hf.training.data import prepare_for_training

    _, splits = corpus
    clips = splits["train"].filter(lambda voice: voice in VOICES, input_columns="voice")
    paths = [audio["path"] for audio in clips.cast_column("audio", Audio(decode=False))["audio"]]
    names = clips["label"]
    assert sorted(names) == sorted(TEST_NAMES * 2)

    torch.manual_seed(0)
    processor = build_processor(lexicon)
    config = MelConformerConfig(
        vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        dropout=0.0, time_masks=0, freq_masks=0,  # nothing random: the same 12 clips every step
    )
    model = MelConformerForCTC(config)

    untrained = S2T(model, processor, lexicon).recognize(paths, top_k=1)
    assert [result.candidates[0].name for result in untrained] != names  # not right by chance before training

    train = prepare_for_training(clips, processor)
    batch = model_inputs(DataCollatorSpeechWithPadding(processor)([train[index] for index in range(len(train))]))
    assert batch["labels"].shape[0] == len(paths) == 12
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    losses, started = [], time.perf_counter()
    for _ in range(STEPS):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{STEPS} steps in {time.perf_counter() - started:.1f} s; CTC loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    assert losses[-1] < losses[0] / 10, losses
    recogniser = S2T(model, processor, lexicon)
    recognised = recogniser.recognize(paths, top_k=len(lexicon))
    assert [result.candidates[0].name for result in recognised] == names  # training-set top-1 is 1.0
    for result, name in zip(recognised, names):
        assert result.candidates[0].score > result.candidates[1].score + 1.0, (name, result.candidates[:2])  # not by a hair
    assert [result.transcript for result in recognised] == names  # the free transcript spells each name too
