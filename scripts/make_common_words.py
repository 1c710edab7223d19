#!/usr/bin/env python
"""Make `s2t_hf/text/lexicons/common_words_en.txt`: ordinary English words, none a drug name,
that spotting recipes speak alone as drug-free clips (`drug_free_words_per_voice`), so that a
model learns that a word said alone is not always a drug name.

The words are the most frequent English words of wordfreq 3.1.1 (Robyn Speer et al.; code
Apache-2.0, frequency data CC BY-SA 4.0, https://github.com/rspeer/wordfreq), kept in frequency
order when they are lower-case letters only, at least 3 letters, not a name or word of any
shipped drug lexicon, and not one of the 18 words of `real_voice_words.txt`: those are what
the real people of the transfer check say, and they are left out so that its false-alarm
count measures words the model never heard synthesised. wordfreq is not a dependency of
s2t-hf; to remake the list:

    python -m venv /tmp/wordfreq && /tmp/wordfreq/bin/pip install wordfreq==3.1.1
    /tmp/wordfreq/bin/python scripts/make_common_words.py
"""

from __future__ import annotations

import re
from pathlib import Path

import wordfreq

LEXICONS = Path(__file__).resolve().parents[1] / "s2t_hf" / "text" / "lexicons"
OUTPUT = LEXICONS / "common_words_en.txt"
WORDS = 2000
HEADER = ("# Ordinary English words for drug-free training clips: the most frequent of wordfreq 3.1.1 (CC BY-SA 4.0),\n"
          "# filtered by scripts/make_common_words.py (which says how). One word per line.\n")
LEFT_OUT = {"sex", "fuck", "fucking", "shit", "damn", "hell", "ass", "bitch", "porn", "sexy", "gay", "dick"}  # not training words for a clinical product


def drug_words() -> set[str]:
    """Every name of the shipped drug lexicons and every word of those names, lower case,
    apostrophes and periods dropped as labels drop them ("N'ice" -> "nice")."""
    words: set[str] = set()
    for path in ["brand_us_pd.txt", "generic_us_pd.txt", "common_generic_pd.txt", "real_voice_words.txt"]:
        for line in (LEXICONS / path).read_text(encoding="utf-8").splitlines():
            name = re.sub(r"['.]", "", line.split("\t")[0].strip().lower())
            words.add(name)
            words.update(re.split(r"[\s\-]+", name))
    return words


def main() -> None:
    excluded = drug_words() | LEFT_OUT
    kept = [word for word in wordfreq.top_n_list("en", 20 * WORDS)
            if re.fullmatch(r"[a-z]{3,}", word) and word not in excluded][:WORDS]
    OUTPUT.write_text(HEADER + "\n".join(kept) + "\n", encoding="utf-8")
    print(f"wrote {len(kept)} words to {OUTPUT}")


if __name__ == "__main__":
    main()
