"""Drug-name lexicons: loading, and normalising a written name into the text a model learns.

A lexicon entry keeps the name as written (what users see in results), its *label*: the
lower-case letters-and-spaces string the recogniser is trained to output, and for a brand name
its generic ("Lipitor" -> "atorvastatin"): given in the file (`Lipitor<TAB>atorvastatin`), else
from the FDA's brand/generic pairs shipped in `lexicons/`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
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
COMBINE = "+"  # "brand+generic": several lists ranked together
BRAND_GENERIC_PAIRS = "brand_generic_pairs_ndc2019.tsv"  # Brand<TAB>generic, FDA NDC 2019 (see lexicons/README.md)


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
    """One lexicon entry: the name as written, the label text the model is trained on, and for
    a brand name its generic (as written; None for a generic name or a brand not known)."""

    name: str
    label: str
    generic: str | None = None


@lru_cache(maxsize=1)
def brand_generics() -> dict[str, str]:
    """Brand label -> its generic name, from the FDA NDC 2019 single-ingredient products."""
    pairs = {}
    for line in (Path(__file__).parent / "lexicons" / BRAND_GENERIC_PAIRS).read_text(encoding="utf-8").splitlines():
        brand, _, generic = line.partition("\t")
        if brand and generic:
            pairs[normalize_name(brand)] = generic.strip()
    return pairs


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


def normalize_label(text: str) -> str:
    """`normalize_name` for comparing names, never failing (digits and other marks kept)."""
    try:
        return normalize_name(text)
    except LexiconError:
        return text.strip().lower()


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
    """Normalise names into entries, dropping blank lines and names whose label repeats an earlier one.
    A line `name<TAB>generic` gives the name's generic; a brand name without one gets the FDA's."""
    entries: list[DrugName] = []
    seen: dict[str, str] = {}
    for line_number, raw in enumerate(names, start=1):
        name, _, generic = raw.lstrip("\ufeff").partition("\t")
        name, generic = name.strip(), generic.strip() or None
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
        generic = generic or brand_generics().get(label)
        entries.append(DrugName(name=name, label=label, generic=generic if generic and normalize_label(generic) != label else None))
    if not entries:
        raise LexiconError(f"{source} holds no usable drug name; give a file with one name per line")
    return entries


def load_lexicon(
    lexicon: str | Path = DEFAULT_LEXICON, skip_invalid: bool = False, limit: int | None = None, extra: str | Path | None = None
) -> list[DrugName]:
    """Read a lexicon (built-in short name or path; one name per line, UTF-8).

    `limit` keeps only the first N usable names, for quick experiments and tests; `extra` names
    a second list whose names are added after them (those already present are not repeated).
    `"brand+generic"` (any lists joined by '+') ranks several lists together the same way.
    """
    if isinstance(lexicon, str) and COMBINE in lexicon and not Path(lexicon).expanduser().is_file():
        first, *others = lexicon.split(COMBINE)  # "brand+generic": the first list (limited), then the others' new names
        entries = load_lexicon(first, skip_invalid, limit)
        for other in [*others, *([extra] if extra is not None else [])]:
            labels = {entry.label for entry in entries}
            entries += [entry for entry in load_lexicon(other, skip_invalid) if entry.label not in labels]
        return entries
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
    path.write_text("".join(entry.name + (f"\t{entry.generic}" if entry.generic else "") + "\n" for entry in lexicon), encoding="utf-8")
    return path
