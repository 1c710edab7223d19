"""Character vocabulary and the `Wav2Vec2Processor` (feature extractor + CTC tokenizer)."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

from .audio import SAMPLING_RATE
from .lexicon import DrugName

PAD_TOKEN = "<pad>"  # also the CTC blank
UNK_TOKEN = "<unk>"
WORD_DELIMITER = "|"


def build_vocabulary(lexicon: list[DrugName]) -> dict[str, int]:
    """All letters a-z plus any other character of the lexicon's labels, space written as '|'.

    Every letter is kept even when the lexicon lacks it ('j' is in no common generic name),
    so a model trained on one lexicon can rank the names of another.
    """
    characters = sorted(set(string.ascii_lowercase) | {char for entry in lexicon for char in entry.label} - {" "})
    tokens = [PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER] + characters
    return {token: index for index, token in enumerate(tokens)}


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


def encode_labels(tokenizer: Wav2Vec2CTCTokenizer, lexicon: list[DrugName]) -> list[list[int]]:
    """Token ids of each lexicon label as the tokenizer spells it ('|' between words, upper
    case for tokenizers that upper-case). Fails if the vocabulary lacks a letter."""
    ids = tokenizer([entry.label for entry in lexicon]).input_ids
    missing = sorted({entry.label for entry, row in zip(lexicon, ids) if tokenizer.unk_token_id in row})
    if missing:
        raise ValueError(
            f"the model's vocabulary cannot spell {len(missing)} lexicon names, e.g. {missing[:3]}; fine-tune it on this lexicon first"
        )
    return ids
