"""Fault injection: kill synthesis and training with SIGKILL, hang a TTS engine; nothing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import soundfile

from s2t_hf.speech import tts
from s2t_hf.speech.synthesis import TEMP_SUFFIX, read_manifest, synthesize_corpus
from s2t_hf.speech.tts import Voice
from s2t_hf.text.lexicon import build_lexicon, load_lexicon

from .conftest import require_program
from .test_run_ctc import ROOT, write_recipe


def kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process and every process under it as soon as `ready()` holds (a launcher's
    workers run in sessions of their own: killing the process group alone would leave them)."""
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before it could be killed: {process.stderr.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("the run never reached the point to kill it at")
        time.sleep(0.05)
    descendants = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()
    psutil.wait_procs(descendants, timeout=30)


def test_synthesis_killed_half_way_resumes_and_keeps_every_finished_clip(tmp_path):
    require_program("espeak-ng")
    names = load_lexicon("common", limit=150)
    lexicon_file = tmp_path / "drugs.txt"
    lexicon_file.write_text("".join(entry.name + "\n" for entry in names))
    data = tmp_path / "data"
    command = [sys.executable, "-m", "s2t_hf.cli", "generate-data", "--lexicon", lexicon_file, "--voices", "espeak-ng:en-us",
               "espeak-ng:en-gb", "espeak-ng:en-gb-scotland", "--validation-voices", "espeak-ng:en-gb", "--test-voices", "espeak-ng:en-gb-scotland",
               "--workers", "2", "-o", data]
    process = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True, start_new_session=True)
    def finished_clips() -> list[Path]:
        return [path for path in data.glob("clips/*/*.wav") if not path.name.endswith(TEMP_SUFFIX)]

    kill_when(process, lambda: len(finished_clips()) >= 100)
    finished = {path: path.stat().st_mtime_ns for path in finished_clips()}
    assert 0 < len(finished) < 450 and not (data / "manifest.tsv").exists()  # killed half-way; manifest is written last
    for path in finished:  # every clip that looks finished is a whole, readable clip
        assert soundfile.info(path).frames > 0.1 * 16000, path
    rerun = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = read_manifest(data / "manifest.tsv")
    assert len(rows) == 450 and not list(data.glob(f"clips/*/*{TEMP_SUFFIX}"))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())  # kept, not redone


def test_a_hanging_engine_times_out_and_the_rest_continue(tmp_path, monkeypatch):
    require_program("espeak-ng")
    engine = tts.get_engine("espeak-ng")
    original = engine.command

    def hangs_on_heparin(text, path, voice):
        return ["sleep", "60"] if text == "heparin" else original(text, path, voice)

    monkeypatch.setattr(engine, "command", hangs_on_heparin)
    started = time.time()
    clips = synthesize_corpus(build_lexicon(["metformin", "heparin", "warfarin"]), [Voice("espeak-ng", "en-us")], tmp_path, progress=False, timeout=2)
    assert time.time() - started < 30
    assert [clip.label for clip in clips] == ["metformin", "warfarin"]


def training_command(recipe: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run_ctc.py"), str(recipe)]


def test_training_killed_with_sigkill_resumes_from_its_last_checkpoint_and_ends_where_an_unbroken_run_does(tmp_path):
    require_program("espeak-ng")
    require_program("flite")
    settings = dict(max_steps=40, save_strategy="steps", save_steps=10, augmentation=None, data_dir=str(tmp_path / "data"))
    unbroken_dir, broken_dir = tmp_path / "unbroken", tmp_path / "broken"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unbroken = subprocess.run(training_command(write_recipe(tmp_path / "a", output_dir=str(unbroken_dir), **settings)), cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]

    recipe = write_recipe(tmp_path / "b", output_dir=str(broken_dir), **settings)
    process = subprocess.Popen(training_command(recipe), cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    kill_when(process, lambda: (broken_dir / "checkpoint-20" / "trainer_state.json").is_file())
    assert not (broken_dir / "all_results.json").exists()
    resumed = subprocess.run(training_command(recipe), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-" in resumed.stderr

    first, second = (json.loads((folder / "all_results.json").read_text()) for folder in (unbroken_dir, broken_dir))
    history = json.loads((broken_dir / "trainer_state.json").read_text())["log_history"]
    assert history[-1]["step"] == 40
    # Same seed, no augmentation, no dropout: the resumed run restores weights, optimizer,
    # scheduler and RNG and skips the batches already seen, so on one CPU it ends where the
    # unbroken one does (measured: identical eval and test losses). The tolerance only allows
    # for float summation order; train_loss is not compared, as a resumed run averages only
    # the steps it ran itself.
    assert second["test_top1"] == first["test_top1"] and second["test_top5"] == first["test_top5"]
    assert second["eval_loss"] == pytest.approx(first["eval_loss"], rel=1e-5)
    assert second["test_loss"] == pytest.approx(first["test_loss"], rel=1e-5)
