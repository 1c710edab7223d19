"""s2t-hf: teach speech models to recognise spoken drug names.

`import s2t_hf` loads inference only (the recogniser, the lexicon and the model classes);
training, evaluation and speech synthesis load when their modules are imported. The package is
layered, each layer importing only those before it:

    text, audio -> speech -> models -> decoding -> inference -> serving -> evaluation -> training -> cli
"""

from importlib import import_module

from .inference import S2T, Calibration, Candidate, Recognition
from .models import MelConformerConfig, MelConformerForCTC  # registers the from-scratch model with the Auto classes
from .text.lexicon import DrugName, LexiconError, load_lexicon, normalize_name

__version__ = "0.1.0"

# loaded on first use, so that `import s2t_hf` stays light
_LAZY = {
    "DRUG_ACCURACY_METRIC": "s2t_hf.evaluation.metrics",
    "TTSError": "s2t_hf.speech.tts",
    "Voice": "s2t_hf.speech.tts",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's2t_hf' has no attribute {name!r}")


__all__ = [
    "Calibration",
    "Candidate",
    "DRUG_ACCURACY_METRIC",
    "DrugName",
    "LexiconError",
    "MelConformerConfig",
    "MelConformerForCTC",
    "Recognition",
    "S2T",
    "TTSError",
    "Voice",
    "load_lexicon",
    "normalize_name",
]
