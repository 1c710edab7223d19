"""Synthesis on a thread pool: no voice object used by two threads at once, and a fatal error
stops the run at once instead of after every queued batch."""

from __future__ import annotations

import sys
import threading
import time
import types
import wave
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from s2t_hf.speech import tts
from s2t_hf.speech.synthesis import clip_path, synthesize_corpus
from s2t_hf.speech.tts import TTSEngine, TTSError, Voice
from s2t_hf.text.lexicon import build_lexicon

NAMES = [
    "metformin",
    "lisinopril",
    "amoxicillin",
    "atorvastatin",
    "warfarin",
    "ibuprofen",
    "heparin",
    "insulin",
    "omeprazole",
    "simvastatin",
    "losartan",
    "amlodipine",
    "gabapentin",
    "sertraline",
    "prednisone",
    "tramadol",
]


def tone_frames(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """PCM16 mono samples of a tone loud and long enough to pass as a spoken clip."""
    samples = 0.5 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)
    return (samples * 32767).astype("<i2").tobytes()


def write_tone(path: Path) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(tone_frames())


class FakePiperVoice:
    """Stands in for piper's PiperVoice; records how many threads use this one object at once."""

    loaded: ClassVar[list[FakePiperVoice]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.users = 0
        self.most_users = 0
        self.threads: set[int] = set()

    @classmethod
    def load(cls, model_path: str) -> FakePiperVoice:
        voice = cls()
        with cls.lock:
            cls.loaded.append(voice)
        return voice

    def synthesize_wav(self, text: str, wav: wave.Wave_write, syn_config: object = None) -> None:
        with self.lock:
            self.users += 1
            self.most_users = max(self.most_users, self.users)
            self.threads.add(threading.get_ident())
        time.sleep(0.03)  # long enough for the other workers to reach a shared object meanwhile
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(tone_frames())
        with self.lock:
            self.users -= 1


def test_each_thread_speaks_with_its_own_piper_voice(tmp_path, monkeypatch):
    piper = types.ModuleType("piper")
    piper.PiperVoice = FakePiperVoice
    piper.SynthesisConfig = lambda **settings: settings
    monkeypatch.setitem(sys.modules, "piper", piper)  # no piper-tts needed, and no real model
    monkeypatch.setattr(FakePiperVoice, "loaded", [])
    engine = tts.get_engine("piper")
    monkeypatch.setattr(engine, "_local", threading.local())
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"")

    clips = synthesize_corpus(
        build_lexicon(NAMES), [Voice("piper", str(model))], tmp_path / "corpus", num_workers=4, batch_size=1, progress=False
    )
    assert len(clips) == len(NAMES)
    voices = FakePiperVoice.loaded
    assert 1 <= len(voices) <= 4  # one per worker thread, not one per batch
    assert all(voice.most_users == 1 for voice in voices), [voice.most_users for voice in voices]
    assert all(len(voice.threads) == 1 for voice in voices)


class FailsOnFirstName(TTSEngine):
    """A test engine: the first name raises `fatal`, every other name takes a moment and is spoken."""

    name = "fails-first"
    install_hint = "nothing to install"

    def __init__(self, first: str, fatal: BaseException) -> None:
        self.first, self.fatal = first, fatal
        self.attempted: list[str] = []

    def voices(self) -> list[str]:
        return ["any"]

    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        for text, path in items:
            self.attempted.append(text)
            if text == self.first:
                raise self.fatal
            time.sleep(0.2)
            write_tone(path)


@pytest.mark.parametrize("fatal", [TTSError("engine 'fails-first' vanished"), KeyboardInterrupt()], ids=["TTSError", "KeyboardInterrupt"])
def test_a_fatal_error_cancels_the_pending_batches(tmp_path, monkeypatch, fatal):
    lexicon = build_lexicon(NAMES + [name + " extra" for name in NAMES])  # 32 names, one batch each
    engine = FailsOnFirstName(lexicon[0].name, fatal)
    monkeypatch.setitem(tts.ENGINES, engine.name, engine)
    voice = Voice(engine.name, "any")

    started = time.time()
    with pytest.raises(type(fatal)):
        synthesize_corpus(lexicon, [voice], tmp_path, num_workers=2, batch_size=1, progress=False)
    assert time.time() - started < 1.5  # all 32 would take 3.2 s on two threads
    assert len(engine.attempted) < 8, engine.attempted  # not every queued name was spoken
    # a batch that was running when the error came may or may not finish (timing); either way
    # it leaves a whole clip or none, never a partial one (checked below)
    for name in engine.attempted[1:]:
        path = tmp_path / clip_path(voice, next(entry for entry in lexicon if entry.name == name))
        assert not path.exists() or path.stat().st_size > 1000, name
    assert not list(tmp_path.glob("clips/*/*.partial.*"))
