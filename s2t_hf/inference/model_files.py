"""The files a model folder or Hub repository carries beside its weights: `lexicon.txt`
(the names it ranks) and `calibration.json` (its temperature and flag thresholds).

Both come from where the weights come from: a folder, or the Hub repository at the same
revision (`hf_hub_download`). A model without them (a raw Hub checkpoint) ranks the built-in
common names uncalibrated, and the log says so; a Hub that cannot be asked is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..models.hub import model_file
from ..text.lexicon import DEFAULT_LEXICON, LEXICON_FILE, DrugName, load_lexicon
from .calibration import CALIBRATION_FILE, Calibration

logger = logging.getLogger(__name__)


def model_lexicon(source: str | Path, lexicon: str | Path | list[DrugName] | None = None, **hub_options: Any) -> list[DrugName]:
    """The names a model ranks: `lexicon` when given, else the `lexicon.txt` saved with the
    model (folder or Hub repository), else the built-in common generic names, with a warning."""
    if lexicon is None:
        saved = model_file(source, LEXICON_FILE, **hub_options)
        if saved is None:
            logger.warning("%s has no %s: ranking the built-in %r lexicon; pass lexicon= to choose the names", source, LEXICON_FILE, DEFAULT_LEXICON)
        lexicon = saved or DEFAULT_LEXICON
    return lexicon if isinstance(lexicon, list) else load_lexicon(lexicon)


def model_calibration(source: str | Path, **hub_options: Any) -> Calibration:
    """The `calibration.json` saved with a model (folder or Hub repository), or an unfitted
    calibration (temperature 1, no flags) with a warning."""
    path = model_file(source, CALIBRATION_FILE, **hub_options)
    if path is None:
        logger.warning("%s has no %s: probabilities at temperature 1 and no ambiguity or not-in-lexicon flags; "
                       "fit one with `s2t-hf calibrate`", source, CALIBRATION_FILE)
        return Calibration()
    return Calibration.from_file(path)
