"""Shared fixtures: a handful of drug names spoken by a few fast offline voices."""

from __future__ import annotations

import shutil

import pytest

from s2t_hf.text.lexicon import build_lexicon

TEST_NAMES = ["metformin", "lisinopril", "amoxicillin", "atorvastatin", "warfarin", "ibuprofen"]
TEST_VOICES = ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "espeak-ng:en-us+m3@r1.2", "flite:slt", "flite:kal16"]


def require_program(name: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="session")
def lexicon():
    return build_lexicon(TEST_NAMES)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, lexicon):
    """Synthesised once per test session: 6 names x 5 voices, split by speaker."""
    require_program("espeak-ng")
    require_program("flite")
    from s2t_hf.speech.corpus import build_corpus

    folder = tmp_path_factory.mktemp("corpus")
    splits = build_corpus(
        lexicon, TEST_VOICES, folder, validation_voices=["flite:kal16"], test_voices=["flite:slt"], progress=False
    )
    return folder, splits


def save_untrained_model(folder, lexicon, seed: int = 0):
    """A tiny randomly initialised mel-conformer CTC model folder, as run_ctc.py writes one."""
    import torch

    from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC
    from s2t_hf.models.processor import build_processor
    from s2t_hf.text.lexicon import save_lexicon

    torch.manual_seed(seed)
    processor = build_processor(lexicon)
    config = MelConformerConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    MelConformerForCTC(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    save_lexicon(lexicon, folder)
    return folder


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory, lexicon):
    return save_untrained_model(tmp_path_factory.mktemp("model"), lexicon)
