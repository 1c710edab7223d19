"""The character-level `Wav2Vec2Processor` a model trained on a lexicon uses: the lexicon's
vocabulary as a CTC tokenizer, and a per-clip normalising feature extractor.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import (
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

from ..audio.reading import SAMPLING_RATE
from ..text.lexicon import DrugName
from ..text.vocabulary import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, build_vocabulary


def build_processor(lexicon: list[DrugName], return_attention_mask: bool = True) -> Wav2Vec2Processor:
    """A processor whose tokenizer spells the lexicon's labels letter by letter.

    Audio is normalised to zero mean and unit variance per clip; padding value 0.
    """
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(build_vocabulary(lexicon)))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=return_attention_mask,
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
