"""Token ids to lower-case text, for CTC output and references alike."""

from __future__ import annotations

import numpy as np
from transformers import PreTrainedTokenizerBase, Wav2Vec2CTCTokenizer


def decode_ids(tokenizer: PreTrainedTokenizerBase, ids: np.ndarray, ctc_output: bool) -> list[str]:
    """Decode id rows padded with -100 into lower-case text.

    CTC output (`ctc_output=True`) merges repeated tokens; references are decoded without that
    merge, or the double letters of names such as 'penicillin' would be merged into one.
    Other tokenizers (Speech2Text's) decode with special tokens skipped.
    """
    ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
    if isinstance(tokenizer, Wav2Vec2CTCTokenizer):
        texts = tokenizer.batch_decode(ids, group_tokens=ctc_output)
    else:
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [text.strip().lower() for text in texts]
