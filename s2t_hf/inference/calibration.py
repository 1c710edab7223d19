"""Confidence a user can act on: probabilities, an `ambiguous` flag, and "not in lexicon".

A recogniser's candidate scores are log-likelihoods per letter. `Calibration` turns them into
probabilities over the lexicon (softmax at a temperature fitted on held-out voices), flags a
result as ambiguous when the best two names are too close in probability, and says "not in
lexicon" when even the best name fits the audio much worse than the model's own free
transcript. Everything is fitted on the validation split and saved beside the model as
`calibration.json`; for a model that spots names in sentences, also the spotting threshold
with the best F1 on validation sentences (`evaluation.spotting.fit_spot_threshold`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..decoding.ctc import length_term

CALIBRATION_FILE = "calibration.json"
# With (almost) every validation clip right, the likelihood of the true names keeps rising as the
# temperature falls: the fit runs to its bound (0.02) and every later answer, wrong ones too,
# reads as certain. Below this many top-1 errors the temperature stays 1 (the model's own
# probabilities), which held on unseen test voices (fitted values for fine-tuned Whisper: 1.1)
MIN_ERRORS_TO_FIT_TEMPERATURE = 5
LENGTH_EXPONENTS = tuple(step / 10 for step in range(16))  # 0 (raw log-likelihood) .. 1.5; 1 is per letter

logger = logging.getLogger(__name__)


@dataclass
class Calibration:
    temperature: float = 1.0
    ambiguity_margin: float = 0.0  # ambiguous when p(best) - p(second) is below this
    out_of_lexicon_gap: float | None = None  # not in lexicon when transcript score - best score exceeds this
    # `S2T.spot`'s default threshold (per letter, CTC; per token, Whisper), fitted on sentences (`s2t-hf calibrate --sentences`)
    spot_threshold: float | None = None
    # CTC: a name's log-likelihood is divided by its length ** this (1: per letter), fitted with the temperature
    length_exponent: float = 1.0
    fitted_on: str = "not fitted"
    clips: int = 0

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Calibration":
        """The calibration saved with a model, or an unfitted one (temperature 1, no flags)."""
        path = Path(folder) / CALIBRATION_FILE
        return cls.from_file(path) if path.is_file() else cls()

    @classmethod
    def from_file(cls, path: str | Path) -> "Calibration":
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})

    @property
    def is_fitted(self) -> bool:
        return self.clips > 0

    def log_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """log p(name | clip) over the lexicon, from (clips, names) scores."""
        return torch.log_softmax(scores.float() / self.temperature, dim=-1)

    def is_ambiguous(self, margin: float) -> bool:
        return margin < self.ambiguity_margin

    def is_out_of_lexicon(self, transcript_gap: float) -> bool:
        return self.out_of_lexicon_gap is not None and transcript_gap > self.out_of_lexicon_gap


@dataclass
class LengthTerms:
    """What CTC scores were divided by, so that a calibration can fit another length exponent:
    each name's label length, each calibration clip's transcript length, and the exponent the
    scores were computed with."""

    names: torch.Tensor
    transcripts: torch.Tensor
    scored_exponent: float = 1.0


def fit_temperature(scores: torch.Tensor, references: torch.Tensor, warn: bool = True) -> float:
    """The temperature minimising the negative log-likelihood of the true names (rows with a
    reference outside the lexicon, -1, are ignored); 1 when fewer than
    `MIN_ERRORS_TO_FIT_TEMPERATURE` clips are wrong at top 1, where no temperature can be fitted."""
    keep = references >= 0
    if not keep.any():
        raise ValueError("no clip with its name in the lexicon to fit a temperature on")
    scores, references = scores[keep].float(), references[keep]
    errors = int((scores.argmax(dim=1) != references).sum())
    if errors < MIN_ERRORS_TO_FIT_TEMPERATURE:
        if not warn:
            return 1.0
        logger.warning(
            "%d of %d calibration clips are wrong at top 1, too few to fit a temperature (it would run to its bound and make "
            "every answer look certain): keeping temperature 1. Calibrate on harder or more clips "
            "(s2t-hf calibrate MODEL --manifest ... --snr 10 0, or the recipe's calibration_conditions)",
            errors, len(references),
        )
        return 1.0
    # A pruned ranker (Whisper's) leaves names it proved far below the best at -inf. A true name
    # left there would make any temperature infinitely wrong: it stands at the row's lowest
    # scored value instead, about where the search proved it to be below (an optimistic stand-in).
    true = scores.gather(1, references[:, None])[:, 0]
    lowest = scores.masked_fill(torch.isneginf(scores), math.inf).min(dim=1).values
    scores = scores.scatter(1, references[:, None], torch.where(torch.isneginf(true), lowest, true)[:, None])
    scores = scores.masked_fill(torch.isneginf(scores), -1e4)  # unalignable or pruned names: probability 0 at any temperature

    def negative_log_likelihood(log_temperature: float) -> float:
        return float(torch.nn.functional.cross_entropy(scores / math.exp(log_temperature), references))

    from scipy.optimize import minimize_scalar  # fitting only: loading a recogniser does not need scipy

    # one bounded variable, a smooth objective: Brent's method (temperatures 0.02 .. 50)
    best = minimize_scalar(negative_log_likelihood, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))


def nll_at_fitted_temperature(scores: torch.Tensor, references: torch.Tensor) -> tuple[float, float]:
    """(temperature, mean negative log-likelihood of the true names there); names left at -inf
    are treated as in `fit_temperature`."""
    temperature = fit_temperature(scores, references, warn=False)
    scores = scores.float().masked_fill(torch.isneginf(scores), -1e4)
    return temperature, float(torch.nn.functional.cross_entropy(scores / temperature, references))


def fit_length_exponent(
    log_likelihoods: torch.Tensor, name_lengths: torch.Tensor, references: torch.Tensor, exponents: tuple[float, ...] = LENGTH_EXPONENTS
) -> tuple[float, list[dict[str, float]]]:
    """The power of a name's length that its log-likelihood is divided by, chosen with the
    temperature: of the exponents in `exponents`, the one ranking most true names first wins,
    ties going to the lowest negative log-likelihood of the true names at a temperature fitted
    for each (a likelihood alone would prefer a worse ranking whose errors let a temperature be
    fitted over a better one with too few, held at 1: `MIN_ERRORS_TO_FIT_TEMPERATURE`).
    Dividing by the length (1) keeps long names from losing for being long, but by how much is
    the model's: raw sums (0) favour short names, and a model whose per-frame scores are sharp
    may want more. Returns the exponent and, for each tried, its top-1 share, temperature and
    log-likelihood (the measured difference)."""
    keep = references >= 0
    log_likelihoods, references = log_likelihoods[keep].float(), references[keep]
    rows = []
    for exponent in exponents:
        scores = log_likelihoods / length_term(name_lengths, exponent)
        temperature, nll = nll_at_fitted_temperature(scores, references)
        top1 = float((scores.argmax(dim=1) == references).float().mean())
        rows.append({"length_exponent": exponent, "top1": top1, "temperature": temperature, "nll": nll})
    best = min(rows, key=lambda row: (-row["top1"], row["nll"], abs(row["length_exponent"] - 1.0)))
    return best["length_exponent"], rows


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[tuple[float, float, float]]:
    """(mean confidence, share correct, share of results) for each non-empty equal-width confidence bin."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [
        (float(confidence[members].mean()), float(correct[members].mean()), float(members.mean()))
        for members in (which == bin_index for bin_index in range(bins))
        if members.any()
    ]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    return float(sum(share * abs(accuracy - mean) for mean, accuracy, share in reliability_bins(confidence, correct, bins)))


def flag_tradeoff(margins: np.ndarray, correct: np.ndarray, thresholds: np.ndarray) -> list[dict[str, float]]:
    """For each margin threshold: share of results flagged, of errors caught, of correct answers flagged."""
    margins, correct = np.asarray(margins), np.asarray(correct, dtype=bool)
    rows = []
    for threshold in thresholds:
        flagged = margins < threshold
        rows.append({
            "threshold": float(threshold),
            "flagged": float(flagged.mean()),
            "errors_caught": float(flagged[~correct].mean()) if (~correct).any() else math.nan,
            "correct_flagged": float(flagged[correct].mean()) if correct.any() else math.nan,
        })
    return rows


def fit_ambiguity_margin(margins: np.ndarray, correct: np.ndarray) -> float:
    """The margin threshold that best separates errors from correct answers: the largest
    (share of errors caught - share of correct answers flagged)."""
    margins, correct = np.asarray(margins, dtype=float), np.asarray(correct, dtype=bool)
    if correct.all() or not correct.any():
        return 0.0  # nothing to separate: flag nothing
    candidates = np.unique(np.concatenate([margins, [0.0]]))
    candidates = np.nextafter(candidates, np.inf)  # "below threshold" includes the margin itself
    rows = flag_tradeoff(margins, correct, candidates)
    best = max(rows, key=lambda row: row["errors_caught"] - row["correct_flagged"])
    return best["threshold"]


def fit_out_of_lexicon_gap(transcript_gaps: np.ndarray, false_rejection_rate: float = 0.01) -> float:
    """The transcript gap above which a result is called "not in lexicon", chosen so that
    `false_rejection_rate` of in-lexicon validation clips would be rejected."""
    return float(np.quantile(np.asarray(transcript_gaps, dtype=float), 1.0 - false_rejection_rate))


def fit_calibration(
    scores: torch.Tensor, references: torch.Tensor, transcript_scores: torch.Tensor, fitted_on: str, plain: torch.Tensor | None = None,
    lengths: LengthTerms | None = None,
) -> Calibration:
    """Temperature, ambiguity margin and out-of-lexicon gap from full (clips, names) scores of
    held-out clips whose names are in the lexicon.

    `plain` (a boolean per clip; default all) marks the clips heard as recorded: the
    temperature and the out-of-lexicon gap are fitted on those alone, the ambiguity margin on
    every clip. Clips with noise added give the flag errors to learn from, where clean
    validation voices give a fine-tuned model almost none; one temperature fitted across
    conditions, though, has to cover the far-off misses of 0 dB noise and leaves clean answers
    underconfident (measured: 5.1 on clean, 10 dB and 0 dB validation clips, and an expected
    calibration error of 0.20 on clean real voices, against 0.02 at temperature 1).

    With `lengths` (CTC), the length exponent is fitted first on the clips heard as recorded
    (`fit_length_exponent`), and every score, the transcripts' too, re-divided by it."""
    keep = references >= 0
    plain = torch.ones(len(references), dtype=torch.bool) if plain is None else plain.bool()
    scores, references, transcript_scores, plain = scores[keep], references[keep], transcript_scores[keep], plain[keep]
    if not plain.any():
        raise ValueError("no clip heard as recorded among the calibration clips: the temperature is fitted on those")
    exponent = 1.0
    if lengths is not None:
        log_likelihoods = scores.float() * length_term(lengths.names, lengths.scored_exponent)
        exponent, tried = fit_length_exponent(log_likelihoods[plain], lengths.names, references[plain])
        for row in tried:
            logger.info("length exponent %.1f: top-1 %.4f, temperature %.3f, NLL %.4f", *row.values())
        scores = log_likelihoods / length_term(lengths.names, exponent)
        own_lengths = lengths.transcripts[keep]
        transcript_scores = transcript_scores * length_term(own_lengths, lengths.scored_exponent) / length_term(own_lengths, exponent)
    temperature = fit_temperature(scores[plain], references[plain])
    calibration = Calibration(temperature=temperature, length_exponent=exponent, fitted_on=fitted_on, clips=int(keep.sum()))
    probabilities = calibration.log_probabilities(scores).exp()
    top2 = probabilities.topk(min(2, probabilities.shape[1]), dim=-1)
    margins = (top2.values[:, 0] - (top2.values[:, 1] if probabilities.shape[1] > 1 else 0)).numpy()
    correct = (top2.indices[:, 0] == references).numpy()
    calibration.ambiguity_margin = fit_ambiguity_margin(margins, correct)
    gaps = (transcript_scores - scores.max(dim=-1).values)[plain].numpy()
    calibration.out_of_lexicon_gap = fit_out_of_lexicon_gap(gaps[np.isfinite(gaps)])
    return calibration
