"""Drug names inside sentences: refill requests and dictation, and drug-free sentences.

People do not say a bare drug name: "I need a refill of my atorvastatin", "start metformin five
hundred milligrams twice daily, stop glipizide". A sentence here is built from carrier phrases
(templates with doses, units, frequencies and routes spoken as words) around one or two names,
at the start, middle or end; a tenth of them hold no drug name at all, to count false alarms.
Ordinary English words said alone (`common_words_en.txt`) are drug-free clips too: a model
that has heard only drug names said alone takes any word said alone for one. So are decoys:
the name sentences' carrier phrases with an ordinary word where each name would be ("can you
refill my window please"): a model that has heard a drug name in every such slot writes one
there whatever is said.

Each sentence is spoken by one voice as pieces: the carrier phrases are synthesised (and cached)
once per voice under `pieces/`, the names are the corpus's own clips of that voice, and the
pieces are joined with short pauses. Joining gives every name its exact start and end in the
sentence (what spotting's time error is measured against) at the cost of a pause at each joint
where one speaker would run the words together; the same voices and their talent-disjoint
splits as the isolated names apply. `sentences/manifest-sentences-<split>.tsv` lists them with
their names' times (`names`: JSON).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.reading import SAMPLING_RATE, load_audio
from ..text.lexicon import DrugName, build_lexicon, normalize_name
from .synthesis import clip_path, synthesize_corpus, write_clip, write_tsv
from .tts import Voice

logger = logging.getLogger(__name__)

SENTENCES_FOLDER = "sentences"
PIECES_FOLDER = "pieces"
DRUG, SECOND_DRUG = "{drug}", "{drug2}"

# {drug}, {drug2}: names; {dose} {unit} {frequency} {route}: spoken as words. No punctuation:
# each piece is synthesised on its own and must normalise to letters and spaces.
WITH_NAMES = [
    "i need a refill of my {drug}",
    "can you refill my {drug} please",
    "i am calling about my {drug} prescription",
    "is my {drug} ready for pickup",
    "i ran out of {drug} yesterday",
    "does {drug} come as a generic",
    "my doctor switched me from {drug} to {drug2}",
    "i take {drug} and {drug2} every morning",
    "start {drug} {dose} {unit} {frequency}",
    "continue {drug} {dose} {unit} {route} {frequency}",
    "stop {drug} and start {drug2}",
    "patient is allergic to {drug}",
    "discontinue {drug} because of side effects",
    "{drug} {dose} {unit} {route} {frequency}",
    "{drug} was stopped last week",
    "increase the dose of {drug} to {dose} {unit}",
    "the patient reports taking {drug} at home",
    "please check the interaction between {drug} and {drug2}",
]
DRUG_FREE = [
    "i would like to check my appointment time",
    "please call me back this afternoon",
    "the patient denies chest pain or shortness of breath",
    "blood pressure is one hundred twenty over eighty",
    "follow up in two weeks",
    "can i speak to the pharmacist please",
    "my insurance card has changed",
    "take it with food and plenty of water",
    "the patient is alert and oriented",
    "no known drug allergies",
    "is the pharmacy open on sunday",
    "the lab results came back normal",
    "schedule a follow up visit next month",
    "i have a question about my bill",
]
DOSES = ["five", "ten", "twenty", "twenty five", "forty", "fifty", "one hundred", "two hundred fifty", "five hundred", "one thousand"]
UNITS = ["milligrams", "micrograms", "units", "milliliters"]
FREQUENCIES = ["once daily", "twice daily", "three times a day", "every six hours", "at bedtime", "as needed", "every morning"]
ROUTES = ["by mouth", "orally", "under the skin", "intravenously", "on the skin"]
COMMON_WORDS = Path(__file__).resolve().parents[1] / "text" / "lexicons" / "common_words_en.txt"


@functools.cache
def common_words() -> tuple[str, ...]:
    """Ordinary English words, none a drug name (scripts/make_common_words.py says which); read once."""
    lines = COMMON_WORDS.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@dataclass(frozen=True)
class Sentence:
    """A sentence as pieces to speak in order; `names` are the positions of drug-name pieces."""

    pieces: tuple[str, ...]
    names: tuple[int, ...]

    @property
    def text(self) -> str:
        return " ".join(self.pieces)


def render(template: str, names: list[DrugName], rng: random.Random) -> Sentence:
    """A template with its slots filled: carrier text as pieces, each name a piece of its own."""
    text = (template.replace("{dose}", rng.choice(DOSES)).replace("{unit}", rng.choice(UNITS))
            .replace("{frequency}", rng.choice(FREQUENCIES)).replace("{route}", rng.choice(ROUTES)))
    pieces: list[str] = []
    positions: list[int] = []
    for part in re.split(r"(\{drug2?\})", text):
        part = part.strip()
        if part in (DRUG, SECOND_DRUG):
            positions.append(len(pieces))
            pieces.append(names[0 if part == DRUG else 1].name)
        elif part:
            pieces.append(part)
    return Sentence(tuple(pieces), tuple(positions))


def plan_sentences(lexicon: list[DrugName], count: int, drug_free: int, seed: int, words: int = 0, decoys: int = 0) -> list[Sentence]:
    """`count` sentences with names (every name used about equally, in a seeded order) and
    `drug_free` without, then `words` ordinary words said alone (distinct), then `decoys`
    drug-free sentences: the name templates with an ordinary word in each name's place. Words
    and decoys are drawn apart, so a plan with them keeps the sentences, and their numbers, of
    the plan without."""
    rng = random.Random(seed)
    order = list(lexicon)
    rng.shuffle(order)
    names = iter(order * (2 * count // max(len(order), 1) + 2))
    sentences = []
    for _ in range(count):
        template = rng.choice(WITH_NAMES)
        first = next(names)
        second = next(names) if SECOND_DRUG in template else first
        if second.label == first.label:
            second = next(names)
        sentences.append(render(template, [first, second], rng))
    sentences += [Sentence((text,), ()) for text in rng.choices(DRUG_FREE, k=drug_free)]
    rng.shuffle(sentences)
    if words:
        pool = common_words()
        sentences += [Sentence((word,), ()) for word in random.Random(f"{seed}:words").sample(pool, min(words, len(pool)))]
    if decoys:
        decoy_rng, pool = random.Random(f"{seed}:decoys"), common_words()
        for _ in range(decoys):
            fillers = [DrugName(word, word) for word in decoy_rng.sample(pool, 2)]
            sentences.append(Sentence(render(decoy_rng.choice(WITH_NAMES), fillers, decoy_rng).pieces, ()))
    return sentences


def carrier_pieces(sentences: Iterable[Sentence]) -> list[DrugName]:
    """Every distinct carrier piece, as an entry to synthesise (the text is spoken as written)."""
    texts = sorted({piece for sentence in sentences for index, piece in enumerate(sentence.pieces) if index not in sentence.names})
    return build_lexicon(texts, source="carrier phrases")


def join_pieces(parts: list[np.ndarray], rng: random.Random) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Parts with 60-180 ms pauses between them (and 100 ms at both ends); each part's (start, end) seconds."""
    edge = np.zeros(int(0.1 * SAMPLING_RATE), dtype=np.float32)
    audio, spans, position = [edge], [], len(edge)
    for index, part in enumerate(parts):
        if index:
            pause = np.zeros(int(rng.uniform(0.06, 0.18) * SAMPLING_RATE), dtype=np.float32)
            audio.append(pause)
            position += len(pause)
        spans.append((position / SAMPLING_RATE, (position + len(part)) / SAMPLING_RATE))
        audio.append(part.astype(np.float32))
        position += len(part)
    audio.append(edge)
    return np.concatenate(audio), spans


SENTENCE_COLUMNS = ["path", "text", "label", "voice", "speaker", "engine", "duration", "names"]


def build_sentences(
    lexicon: list[DrugName], voices: list[Voice], corpus_dir: str | Path, per_voice: int, drug_free_per_voice: int,
    seed: int = 0, num_workers: int | None = None, progress: bool = True, words_per_voice: int = 0, decoys_per_voice: int = 0,
) -> list[dict]:
    """Speak `per_voice` sentences with names, `drug_free_per_voice` without,
    `words_per_voice` ordinary words alone and `decoys_per_voice` decoys, with every voice, under `corpus_dir/sentences/` (reusing what is there); return the manifest rows
    (path relative to `corpus_dir`). The names' clips are the corpus's (`build_corpus` first)."""
    corpus_dir = Path(corpus_dir)
    rows = []
    for voice in voices:
        rng = random.Random(f"{seed}:{voice.id}")
        sentences = plan_sentences(lexicon, per_voice, drug_free_per_voice, rng.randrange(2**32), words_per_voice, decoys_per_voice)
        pieces_dir = corpus_dir / SENTENCES_FOLDER / PIECES_FOLDER
        synthesize_corpus(carrier_pieces(sentences), [voice], pieces_dir, num_workers=num_workers, progress=progress)
        folder = corpus_dir / SENTENCES_FOLDER / clip_path(voice, DrugName("x", "x")).parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for number, sentence in enumerate(sentences):
            digest = hashlib.sha256(f"{seed}:{number}:{sentence.text}".encode()).hexdigest()[:8]  # a changed plan never reuses a stale file
            path = folder / f"{number:05d}-{digest}.wav"
            sources = [
                corpus_dir / clip_path(voice, DrugName(piece, normalize_name(piece))) if index in sentence.names
                else pieces_dir / clip_path(voice, DrugName(piece, normalize_name(piece)))
                for index, piece in enumerate(sentence.pieces)
            ]
            if not all(source.is_file() for source in sources):
                logger.warning("%s: a piece of %r was not synthesised; sentence skipped", voice.id, sentence.text)
                continue
            audio, spans = join_pieces([load_audio(source) for source in sources], random.Random(f"{seed}:{voice.id}:{number}"))
            if not path.is_file():
                write_clip(audio, path)
            names = [{"name": sentence.pieces[index], "start": round(spans[index][0], 5), "end": round(spans[index][1], 5)}
                     for index in sentence.names]
            rows.append({
                "path": str(path.relative_to(corpus_dir)), "text": sentence.text, "label": normalize_name(sentence.text),
                "voice": voice.id, "speaker": voice.speaker, "engine": voice.engine, "duration": round(len(audio) / SAMPLING_RATE, 3),
                "names": json.dumps(names),
            })
    return rows


def write_sentence_manifest(rows: list[dict], path: Path) -> None:
    write_tsv(rows, SENTENCE_COLUMNS, path)
