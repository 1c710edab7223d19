"""The files a model folder or Hub repository carries beside its weights: `lexicon.txt`
(the names it ranks) and `calibration.json`, and the revision they came from.
"""

from __future__ import annotations

from pathlib import Path

from ..text.lexicon import DEFAULT_LEXICON, LEXICON_FILE, DrugName, load_lexicon


def model_lexicon(path_or_hub_id: str | Path, lexicon: str | Path | list[DrugName] | None = None) -> list[DrugName]:
    """The names a model ranks: `lexicon` when given, else the `lexicon.txt` saved with the
    model, else the built-in common generic names."""
    if lexicon is None:
        saved = Path(path_or_hub_id) / LEXICON_FILE
        lexicon = saved if saved.is_file() else DEFAULT_LEXICON
    return lexicon if isinstance(lexicon, list) else load_lexicon(lexicon)
