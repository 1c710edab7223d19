"""Drug-name lexicons: loading, and normalising a written name into the text a model learns.

A lexicon entry keeps the name as written (what users see in results) and its *label*: the
lower-case letters-and-spaces string the recogniser is trained to output.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


BUILTIN_LEXICONS = {
    "common": "common_generic_pd.txt",
    "generic": "generic_us_pd.txt",
    "brand": "brand_us_pd.txt",
    # not drug names: the 18 words real people say in the real-voice check (digits and 8 words),
    # added to a training lexicon to measure how synthetic training transfers to real voices
    "real-voice-words": "real_voice_words.txt",
}


DEFAULT_LEXICON = "common"


# Letters that NFKD does not decompose into an ASCII base letter.
_SPECIAL_LETTERS = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "þ": "th"}


# Characters that are spoken as a pause between word parts, or not spoken at all.
_AS_SPACE = re.compile(r"[\s\-‐‑‒–—_/]+")
_SILENT = re.compile(r"['’`´.]")
_ALLOWED = re.compile(r"[a-z ]+")


class LexiconError(ValueError):
    """A lexicon file or name that cannot be used."""


@dataclass(frozen=True)
class DrugName:
    """One lexicon entry: the name as written and the label text the model is trained on."""

    name: str
    label: str


def normalize_name(name: str) -> str:
    """Turn a written drug name into its label: lower-case ASCII letters and single spaces.

    Accents are removed ("Émla" -> "emla"), hyphens and other dashes become spaces,
    apostrophes and periods are dropped ("St. John's wort" -> "st johns wort").
    Raises `LexiconError` for a name with anything else left, such as digits or Greek letters.
    """
    text = unicodedata.normalize("NFKC", name).strip().lower()
    text = "".join(_SPECIAL_LETTERS.get(ch, ch) for ch in text)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = _SILENT.sub("", text)
    text = _AS_SPACE.sub(" ", text).strip()
    if not text:
        raise LexiconError(f"drug name {name!r} normalises to nothing; remove it from the lexicon")
    if not _ALLOWED.fullmatch(text):
        bad = sorted(set(re.sub(r"[a-z ]", "", text)))
        raise LexiconError(
            f"drug name {name!r} contains {''.join(bad)!r}, which cannot be spoken as letters; "
            "spell it out in words (for example '5-fluorouracil' -> 'five-fluorouracil') or remove it"
        )
    return text


def resolve_lexicon_path(lexicon: str | Path) -> Path:
    """Map a built-in short name ('common', 'generic', 'brand') or a file path to a file."""
    if str(lexicon) in BUILTIN_LEXICONS:
        return Path(__file__).parent / "lexicons" / BUILTIN_LEXICONS[str(lexicon)]
    path = Path(lexicon).expanduser()
    if not path.is_file():
        raise LexiconError(
            f"lexicon {str(lexicon)!r} is neither a file nor one of the built-in lists "
            f"{sorted(BUILTIN_LEXICONS)}"
        )
    return path


def build_lexicon(names: list[str], skip_invalid: bool = False, source: str = "lexicon") -> list[DrugName]:
    """Normalise names into entries, dropping blank lines and names whose label repeats an earlier one."""
    entries: list[DrugName] = []
    seen: dict[str, str] = {}
    for line_number, raw in enumerate(names, start=1):
        name = raw.strip().lstrip("\ufeff").strip()
        if not name:
            continue
        try:
            label = normalize_name(name)
        except LexiconError as error:
            if not skip_invalid:
                raise LexiconError(f"{source}, line {line_number}: {error}") from None
            logger.warning("%s, line %d: skipped: %s", source, line_number, error)
            continue
        if label in seen:
            logger.info("%s, line %d: %r duplicates %r after normalisation; kept the first", source, line_number, name, seen[label])
            continue
        seen[label] = name
        entries.append(DrugName(name=name, label=label))
    if not entries:
        raise LexiconError(f"{source} holds no usable drug name; give a file with one name per line")
    return entries


def load_lexicon(
    lexicon: str | Path = DEFAULT_LEXICON, skip_invalid: bool = False, limit: int | None = None, extra: str | Path | None = None
) -> list[DrugName]:
    """Read a lexicon (built-in short name or path; one name per line, UTF-8).

    `limit` keeps only the first N usable names, for quick experiments and tests; `extra` names
    a second list whose names are added after them (those already present are not repeated).
    """
    path = resolve_lexicon_path(lexicon)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise LexiconError(f"lexicon {str(path)!r} is not UTF-8 text ({error}); save it as UTF-8") from None
    entries = build_lexicon(text.splitlines(), skip_invalid=skip_invalid, source=str(path))
    entries = entries[:limit] if limit else entries
    if extra is None:
        return entries
    labels = {entry.label for entry in entries}
    return entries + [entry for entry in load_lexicon(extra, skip_invalid) if entry.label not in labels]


LEXICON_FILE = "lexicon.txt"


def save_lexicon(lexicon: list[DrugName], folder: str | Path) -> Path:
    """Store the names a model was trained on beside it, so `S2T` ranks the same list."""
    path = Path(folder) / LEXICON_FILE
    path.write_text("".join(entry.name + "\n" for entry in lexicon), encoding="utf-8")
    return path
