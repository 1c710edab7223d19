"""Top-k drug accuracy and character error rate, from ranked lexicon indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jiwer
import numpy as np
from transformers import EvalPrediction, PreTrainedTokenizerBase, Wav2Vec2CTCTokenizer

from .lexicon import DrugName
from .ranking import fuzzy_rank

TOP_KS = (1, 2, 3, 4, 5)


def top_k_accuracy(ranked: np.ndarray, references: Sequence[int], ks: Sequence[int] = TOP_KS) -> dict[str, float]:
    """Share of rows whose reference index is among the first k ranked indices, for each k.

    A reference of -1 (not in the lexicon) never counts as found.
    """
    ranked = np.asarray(ranked)
    references = np.asarray(references)
    if len(ranked) != len(references):
        raise ValueError(f"{len(ranked)} rankings for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no predictions to score")
    hits = ranked == references[:, None]
    return {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


def character_error_rate(references: list[str], transcripts: list[str]) -> float:
    return float(jiwer.cer(references, transcripts))


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


def build_compute_metrics(lexicon: list[DrugName], tokenizer: PreTrainedTokenizerBase) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for `CTCTrainer` and `Seq2SeqRankingTrainer`, whose predictions are
    (top-k lexicon indices by model likelihood, greedy output ids).

    Reports top1..top5 by likelihood, fuzzy_top1..5 (greedy transcript + rapidfuzz, the
    baseline) and cer of the greedy transcript.
    """
    index_of = {entry.label: index for index, entry in enumerate(lexicon)}

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ranked, greedy_ids = prediction.predictions
        references = decode_ids(tokenizer, prediction.label_ids, ctc_output=False)
        transcripts = decode_ids(tokenizer, greedy_ids, ctc_output=True)
        reference_indices = [index_of.get(reference, -1) for reference in references]
        metrics = top_k_accuracy(ranked, reference_indices)
        fuzzy = top_k_accuracy(fuzzy_rank(transcripts, lexicon, top_k=max(TOP_KS)), reference_indices)
        metrics.update({f"fuzzy_{key}": value for key, value in fuzzy.items()})
        metrics["cer"] = character_error_rate(references, transcripts)
        return metrics

    return compute_metrics
