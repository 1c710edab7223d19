"""s2t-hf: teach speech models to recognise spoken drug names."""

from . import modeling_mel_conformer  # registers the from-scratch model with the Auto classes
from .inference import S2T, Candidate, Recognition
from .lexicon import DrugName, LexiconError, load_lexicon, normalize_name
from .metrics import DRUG_ACCURACY_METRIC
from .modeling_mel_conformer import MelConformerConfig, MelConformerForCTC
from .tts import TTSError, Voice

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "DRUG_ACCURACY_METRIC",
    "Recognition",
    "S2T",
    "DrugName",
    "LexiconError",
    "MelConformerConfig",
    "MelConformerForCTC",
    "TTSError",
    "Voice",
    "load_lexicon",
    "normalize_name",
]
