"""Character vocabularies and the tokenizer policy: how a CTC tokenizer spells lexicon names.

One policy for training and inference: a fine-tuned Hub checkpoint whose vocabulary is upper
case (the LibriSpeech `-960h` ones) spells names upper-cased, with `|` between words; the same
rule applies whether `run_ctc.py` loads it for training or `S2T` loads it as it is.
"""

from __future__ import annotations

import string
from typing import Any

from transformers import Wav2Vec2CTCTokenizer

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


def model_text(label: str, tokenizer: Any) -> str:
    """The text a tokenizer spells a lexicon label as, in training labels and in ranking alike.
    Whisper's byte-level BPE sees a word after a space, as in its own transcripts
    (" metformin"); character and SentencePiece tokenizers get the label as it is."""
    return " " + label if type(tokenizer).__name__.startswith("Whisper") else label


def lexicon_characters(lexicon: list[DrugName]) -> set[str]:
    """The characters of the lexicon's labels, spaces excluded (they become the word delimiter)."""
    return {char for entry in lexicon for char in entry.label.replace(" ", "")}


def tokenizer_spelling(tokenizer: Any, lexicon: list[DrugName]) -> str | None:
    """'as-is' or 'upper' if the tokenizer's vocabulary spells every lexicon label, else None."""
    if not isinstance(tokenizer, Wav2Vec2CTCTokenizer):
        return None
    vocabulary = set(tokenizer.get_vocab())
    characters = lexicon_characters(lexicon)
    if tokenizer.word_delimiter_token not in vocabulary and any(" " in entry.label for entry in lexicon):
        return None
    if characters <= vocabulary:
        return "as-is"
    if {char.upper() for char in characters} <= vocabulary:
        return "upper"
    return None


def apply_spelling_policy(tokenizer: Any, lexicon: list[DrugName], model: str = "the model") -> str:
    """Set a CTC tokenizer to spell lexicon names as its vocabulary needs ('upper' for the
    upper-case LibriSpeech vocabularies, 'as-is' otherwise) and return that policy. Training
    (`load_ctc_model`) and inference (`S2T`) both call this, so a raw Hub checkpoint ranks names
    exactly as it would after fine-tuning. Raises ValueError when the vocabulary cannot spell
    the lexicon."""
    spelling = tokenizer_spelling(tokenizer, lexicon)
    if spelling is None:
        raise ValueError(
            f"{model}: its CTC vocabulary cannot spell every lexicon name (needs {sorted(lexicon_characters(lexicon))}); "
            "fine-tune it on this lexicon first (run_ctc.py builds a vocabulary and head for it)"
        )
    tokenizer.do_lower_case = spelling == "upper"  # Wav2Vec2CTCTokenizer upper-cases its input when set
    return spelling
