"""Shared fixtures: a handful of drug names spoken by a few fast offline voices.

The session-wide folders (`corpus`, `untrained_model`) are shared by every test, so no test
may write into them: a test that needs to (run_ctc.py writes `dataset/` and manifests into its
`data_dir`; `s2t-hf calibrate` writes `calibration.json` beside the model) takes its own copy
(`corpus_copy`, `untrained_model_copy`). `session_folders_stay_untouched` enforces it: it fails
the test after which any file of a session folder was added, removed or changed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from s2t_hf.text.lexicon import build_lexicon

TEST_NAMES = ["metformin", "lisinopril", "amoxicillin", "atorvastatin", "warfarin", "ibuprofen"]
TEST_VOICES = ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "espeak-ng:en-us+m3@r1.2", "flite:slt", "flite:kal16"]
VALIDATION_VOICES = ["flite:kal16"]
TEST_SPLIT_VOICES = ["flite:slt"]


def require_program(name: str) -> None:
    """Skip a test whose TTS engine is not installed; in CI (which sets CI), where
    scripts/setup.sh installs every engine, a missing one fails instead of skipping silently."""
    if shutil.which(name) is None:
        message = f"{name} is not installed (scripts/setup.sh installs it)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; CI runs scripts/setup.sh, so its absence is a broken setup, not a reason to skip", pytrace=False)
        pytest.skip(message)


# ---- session folders no test may write into ---------------------------------------------

# folder -> its snapshot when the fixture was made
SESSION_FOLDERS: dict[Path, dict[str, tuple[int, int]]] = {}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of the folder and of every file and folder under it, by relative path.
    Folders are included: adding, removing or renaming an entry changes their mtime, so even a
    file moved away and back is seen."""
    entries = {}
    for path in [folder, *folder.rglob("*")]:
        status = path.lstat()
        entries[path.relative_to(folder).as_posix()] = (status.st_size, status.st_mtime_ns)
    return entries


def changes(folder: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """What differs in `folder` from its snapshot `before`, one line per path."""
    after = snapshot(folder)
    return sorted(
        [f"{folder / name}: added" for name in after.keys() - before.keys()]
        + [f"{folder / name}: removed" for name in before.keys() - after.keys()]
        + [f"{folder / name}: changed (size, mtime_ns) {before[name]} -> {after[name]}"
           for name in before.keys() & after.keys() if before[name] != after[name]]
    )


def protect(folder: Path) -> Path:
    """Register a session-wide folder: from now on, a test that writes into it fails."""
    SESSION_FOLDERS[Path(folder)] = snapshot(Path(folder))
    return folder


@pytest.fixture(autouse=True)
def session_folders_stay_untouched():
    """Fail the test (in its teardown) after which a session folder differs from its snapshot.
    Compared with the snapshot taken when the folder was made, so writes by module-scoped
    fixtures are caught too (at the first test that uses them)."""
    yield
    found = []
    for folder, before in SESSION_FOLDERS.items():
        changed = changes(folder, before)
        if changed:
            SESSION_FOLDERS[folder] = snapshot(folder)  # blame this test only, not every later one
            found.extend(changed)
    if found:
        pytest.fail(
            "this test (or a fixture it uses) wrote into a session-wide fixture folder; give it its own copy "
            "(the corpus_copy / untrained_model_copy fixtures):\n  " + "\n  ".join(found),
            pytrace=False,
        )


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lexicon():
    return build_lexicon(TEST_NAMES)


def make_corpus(folder, lexicon):
    """6 names x 5 voices, split by speaker (cached: clips already in `folder` are reused)."""
    from s2t_hf.speech.corpus import build_corpus

    return build_corpus(lexicon, TEST_VOICES, folder, validation_voices=VALIDATION_VOICES, test_voices=TEST_SPLIT_VOICES, progress=False)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, lexicon):
    """Synthesised once per test session: 6 names x 5 voices, split by speaker. Read only."""
    require_program("espeak-ng")
    require_program("flite")
    folder = tmp_path_factory.mktemp("corpus")
    splits = make_corpus(folder, lexicon)
    return protect(folder), splits


@pytest.fixture
def corpus_copy(tmp_path, corpus, lexicon):
    """The session corpus copied for one test that writes into it; its splits point into the copy."""
    folder = shutil.copytree(corpus[0], tmp_path / "corpus")
    return folder, make_corpus(folder, lexicon)


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
    """Read only; a test that writes beside the model (e.g. `s2t-hf calibrate`) uses untrained_model_copy."""
    return protect(save_untrained_model(tmp_path_factory.mktemp("model"), lexicon))


@pytest.fixture
def untrained_model_copy(tmp_path, untrained_model):
    return shutil.copytree(untrained_model, tmp_path / "untrained_model")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread, for the modules that ask (`pytestmark =
    pytest.mark.usefixtures("one_thread")`). With two threads on two busy cores every small op
    waits for the other thread's time slice: a tiny forward takes 80 ms instead of 1."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    """A small Whisper byte-level BPE tokenizer trained on the Whisper tests' names
    (`tests/test_whisper_ranking.py: build_tokenizer`), one per module."""
    from tests.test_whisper_ranking import build_tokenizer

    return build_tokenizer()
