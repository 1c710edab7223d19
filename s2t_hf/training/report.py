"""The end of a training run: test-split metrics, the Markdown report, the model card."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path

from accelerate.utils import gather_object
from datasets import Audio, Dataset, DatasetDict
from transformers import Trainer

from ..audio.channels import parse_condition
from ..decoding.ctc import CTCRanker
from ..evaluation.metrics import TOP_KS
from ..inference.calibration import Calibration
from ..text.lexicon import DrugName

logger = logging.getLogger(__name__)


def format_percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def write_report(
    path: str | Path,
    metrics: dict[str, float],
    *,
    model_description: str,
    lexicon_size: int,
    split_speakers: dict[str, list[str]],
    split_sizes: dict[str, int],
    wall_time_s: float,
    command: str,
    calibration: Calibration | None = None,
    test_clips: int | None = None,
) -> Path:
    """Top-1..5 on the unseen-voice test split (the `test_clips` evaluated of it), the ranking of
    every name by the model's likelihood beside the fuzzy baseline."""
    rows = [
        "| ranking | " + " | ".join(f"top-{k}" for k in TOP_KS) + " |",
        "|---|" + "---:|" * len(TOP_KS),
        "| every name's likelihood under the model (what `S2T.recognize` ranks by) | " + " | ".join(format_percent(metrics[f"test_top{k}"]) for k in TOP_KS) + " |",
        "| greedy transcript + rapidfuzz (baseline) | " + " | ".join(format_percent(metrics[f"test_fuzzy_top{k}"]) for k in TOP_KS) + " |",
    ]
    lines = [
        "# Drug-name recognition report",
        "",
        f"Model: {model_description}. Lexicon: {lexicon_size} names.",
        "",
        f"## Test split: {split_sizes['test']} clips of voices never heard in training"
        + ("" if test_clips in (None, split_sizes["test"]) else f" (a random {test_clips} of them evaluated)"),
        "",
        *rows,
        "",
        f"Character error rate of the greedy transcript: {format_percent(metrics['test_cer'])}.",
        "",
        *([
            f"Calibration (fitted on {calibration.clips} validation clips, saved as `calibration.json`): temperature "
            f"{calibration.temperature:.3f}; a result is marked ambiguous when its best two names differ by less than "
            f"{calibration.ambiguity_margin:.3f} in probability. `s2t-hf compare MODEL --manifest ... --report DIR` "
            "reports calibration error, the flag's trade-off, sound-alike drugs and noise robustness.",
            "",
        ] if calibration else []),
        "## Voices",
        "",
        "| split | clips | speakers |",
        "|---|---:|---|",
        *(f"| {split} | {split_sizes[split]} | {', '.join(sorted(speakers))} |" for split, speakers in split_speakers.items()),
        "",
        f"Wall time (synthesis, training, evaluation): {wall_time_s / 60:.1f} min.",
        "",
        "Produced by:",
        "",
        f"    {command}",
        "",
    ]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class ReportInModelCard:
    """Trainer mixin: the model card (README.md, also what `push_to_hub` uploads) carries the
    run's report: lexicon size, held-out voices and the top-1..5 table."""

    def create_model_card(self, *args, **kwargs):
        super().create_model_card(*args, **kwargs)
        report = Path(self.args.output_dir) / "report.md"
        card = Path(self.args.output_dir) / "README.md"
        if self.is_world_process_zero() and report.is_file() and card.is_file():
            text = card.read_text(encoding="utf-8")
            section = report.read_text(encoding="utf-8").replace("# Drug-name recognition report", "## Drug-name recognition (s2t-hf)")
            if section not in text:
                card.write_text(text.rstrip() + "\n\n" + section, encoding="utf-8")


def calibrate_on_split(
    trainer: Trainer, processor, lexicon: list[DrugName], split: Dataset, max_samples: int | None = None, conditions: list | None = None
) -> Calibration:
    """Fit probabilities and flags on a held-out split (its audio files and labels; a random
    `max_samples` of them), each clip heard under every one of `conditions` (None, the
    default: clean only; see `calibration_scores`), and save `calibration.json` beside the
    model, where `S2T.from_pretrained` finds it.

    With several processes each scores an equal share of the clips (the last shares padded
    with repeats, as the Trainer's evaluation does, so that every process runs as many batches:
    ZeRO-3 needs all of them in every forward pass); the scores are gathered, repeats dropped,
    and every process fits the same calibration on all of them."""
    from ..evaluation.predictions import (  # evaluation -> inference -> seq2seq -> this module
        calibration_scores,
        conditions_note,
        fit_on_scores,
    )
    from ..inference.recognizer import S2T

    if max_samples is not None and max_samples < len(split):
        split = split.shuffle(seed=trainer.args.seed).select(range(max_samples))

    sources = [audio["bytes"] or audio["path"] for audio in split.cast_column("audio", Audio(decode=False))["audio"]]
    rows = [{"path": source, "text": label} for source, label in zip(sources, split["label"])]
    processes, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    share = -(-len(rows) // processes)
    positions = [(rank + processes * step) % len(rows) for step in range(share)]  # this process's rows, wrapping round at the end
    recogniser = S2T(trainer.accelerator.unwrap_model(trainer.model), processor, lexicon)
    conditions = conditions or [None]
    scored = calibration_scores(
        recogniser, [rows[position] for position in positions], batch_size=trainer.args.per_device_eval_batch_size,
        progress=trainer.is_local_process_zero(), conditions=conditions,
    )
    # positions in the whole split (times the condition's index), whatever share this process scored
    scored = [(positions[index % share] + len(rows) * (index // share), *rest) for index, *rest in scored]
    if processes > 1:
        scored = list({entry[0]: entry for entry in gather_object(scored)}.values())  # repeats dropped
    calibration = fit_on_scores(scored, "validation split" + conditions_note(conditions), plain_rows=len(rows), recogniser=recogniser)
    trainer.model.train()
    if trainer.args.should_save:
        calibration.save(trainer.args.output_dir)
    logger.info("calibration: %s", calibration)
    return calibration


def evaluate_and_report(
    trainer: Trainer,
    test_dataset: Dataset,
    splits: DatasetDict,
    processor,
    lexicon: list[DrugName],
    model_description: str,
    finetuned_from: str | None,
    started: float,
    tags: list[str],
    max_calibration_samples: int | None = None,
    calibration_conditions: list[str] | None = None,
) -> dict[str, float]:
    """Evaluate on validation and on the unseen-voice test split, save `*_results.json`, fit
    the calibration on validation (`max_calibration_samples` of its clips, each heard under
    every one of `calibration_conditions`: "clean", "10" dB of white noise, "telephone"), write `report.md`
    and the model card, and push to the Hub when the run asks for it."""
    trainer.save_metrics("eval", trainer.evaluate())
    conditions = [parse_condition(condition) for condition in calibration_conditions] if calibration_conditions else None
    calibration = calibrate_on_split(trainer, processor, lexicon, splits["validation"], max_calibration_samples, conditions)
    if isinstance(getattr(trainer, "ranker", None), CTCRanker):  # the test split ranked as S2T will rank with this calibration
        trainer.ranker.length_exponent = calibration.length_exponent
    test_metrics = trainer.evaluate(test_dataset, metric_key_prefix="test")
    test_metrics["wall_time_s"] = round(time.time() - started, 1)
    trainer.log_metrics("test", test_metrics)
    trainer.save_metrics("test", test_metrics)
    if trainer.is_world_process_zero():
        report = write_report(
            Path(trainer.args.output_dir) / "report.md",
            test_metrics,
            model_description=model_description,
            lexicon_size=len(lexicon),
            split_speakers={name: sorted(set(split["speaker"])) for name, split in splits.items()},
            split_sizes={name: len(split) for name, split in splits.items()},
            wall_time_s=test_metrics["wall_time_s"],
            command=shlex.join(["python", *sys.argv]),
            calibration=calibration,
            test_clips=len(test_dataset),
        )
        logger.info("report written to %s", report)
    card = {"tasks": "automatic-speech-recognition", "tags": ["drug-names", "s2t-hf", *tags], "finetuned_from": finetuned_from}
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.create_model_card(**card)
    return test_metrics
