"""Top-k drug-name accuracy: is the spoken drug among the first k names a recogniser ranked?

    import evaluate
    from s2t_hf import DRUG_ACCURACY_METRIC  # this folder's path
    metric = evaluate.load(DRUG_ACCURACY_METRIC)
    metric.compute(predictions=[["hydralazine", "hydroxyzine"]], references=["hydroxyzine"])
    # {'top1': 0.0, 'top2': 1.0, 'top3': 1.0, 'top4': 1.0, 'top5': 1.0}

Self-contained (evaluate loads it as a script), so it needs nothing from s2t_hf.
"""

import datasets
import evaluate

_DESCRIPTION = """Share of examples whose reference drug name is among the first k ranked candidates,
for k = 1..max_k. Names are compared case-insensitively with runs of whitespace collapsed. A
reference with no candidates, or one that is not in the lexicon at all, counts as a miss."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: for each example, the candidate drug names best first (any length, may be empty).
    references: for each example, the drug name actually spoken.
    max_k: report top1 .. top{max_k} (default 5).
Returns:
    top1 .. top{max_k}: accuracy in [0, 1].
"""

_CITATION = ""


def _canonical(name: str) -> str:
    return " ".join(name.casefold().split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DrugAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, max_k: int = 5):
        if max_k < 1:
            raise ValueError(f"max_k must be at least 1, got {max_k}")
        if not references:
            raise ValueError("no predictions to score")
        ranks = []  # 1-based rank of the reference among the candidates, or 0 when absent
        for candidates, reference in zip(predictions, references):
            canonical = [_canonical(candidate) for candidate in candidates]
            target = _canonical(reference)
            ranks.append(canonical.index(target) + 1 if target and target in canonical else 0)
        return {f"top{k}": sum(1 for rank in ranks if 0 < rank <= k) / len(ranks) for k in range(1, max_k + 1)}
