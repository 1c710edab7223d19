"""Shared fixtures: a handful of drug names spoken by a few fast offline voices."""

from __future__ import annotations

import shutil

import pytest

from s2t_hf.lexicon import build_lexicon

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
    from s2t_hf.data import build_corpus

    folder = tmp_path_factory.mktemp("corpus")
    splits = build_corpus(
        lexicon, TEST_VOICES, folder, validation_voices=["flite:kal16"], test_voices=["flite:slt"], progress=False
    )
    return folder, splits
