"""Top-k drug accuracy (through the `drug_accuracy` evaluate module), character error rate,
and the trainers' `compute_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import evaluate
import jiwer
import numpy as np
from transformers import EvalPrediction, PreTrainedTokenizerBase

from ..decoding.fuzzy import fuzzy_rank
from ..decoding.transcripts import decode_ids
from ..text.lexicon import DrugName

TOP_KS = (1, 2, 3, 4, 5)


# An `evaluate` metric module shipped inside the package: evaluate.load(DRUG_ACCURACY_METRIC) works offline.
DRUG_ACCURACY_METRIC = str(Path(__file__).parent / "drug_accuracy")


@lru_cache(maxsize=1)
def drug_accuracy_metric() -> evaluate.EvaluationModule:
    return evaluate.load(DRUG_ACCURACY_METRIC)


def top_k_accuracy(ranked_names: Sequence[Sequence[str]], references: Sequence[str], max_k: int = max(TOP_KS)) -> dict[str, float]:
    """top1..top{max_k}: share of clips whose spoken name is among the first k ranked names."""
    if len(ranked_names) != len(references):
        raise ValueError(f"{len(ranked_names)} rankings for {len(references)} references")
    return drug_accuracy_metric().compute(predictions=[list(names) for names in ranked_names], references=list(references), max_k=max_k)


def names_of(ranked: np.ndarray, lexicon: list[DrugName]) -> list[list[str]]:
    """Lexicon labels for rows of ranked lexicon indices."""
    return [[lexicon[index].label for index in row] for row in np.asarray(ranked).tolist()]


def character_error_rate(references: list[str], transcripts: list[str]) -> float:
    return float(jiwer.cer(references, transcripts))


def build_compute_metrics(lexicon: list[DrugName], tokenizer: PreTrainedTokenizerBase) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` for `CTCTrainer` and `Seq2SeqRankingTrainer`, whose predictions are
    (top-k lexicon indices by model likelihood, greedy output ids).

    Reports top1..top5 by likelihood, fuzzy_top1..5 (greedy transcript + rapidfuzz, the
    baseline), cer of the greedy transcript, and how many clips were counted.
    """
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ranked, greedy_ids = prediction.predictions
        references = decode_ids(tokenizer, prediction.label_ids, ctc_output=False)
        transcripts = decode_ids(tokenizer, greedy_ids, ctc_output=True)
        metrics = top_k_accuracy(names_of(ranked, lexicon), references)
        fuzzy = top_k_accuracy(names_of(fuzzy_rank(transcripts, lexicon, top_k=max(TOP_KS)), lexicon), references)
        metrics.update({f"fuzzy_{key}": value for key, value in fuzzy.items()})
        metrics["cer"] = character_error_rate(references, transcripts)
        metrics["clips"] = len(references)  # with several processes: each clip once, not the sampler's repeats
        return metrics

    return compute_metrics
