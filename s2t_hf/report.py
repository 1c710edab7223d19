"""The short Markdown report written beside a trained model."""

from __future__ import annotations

from pathlib import Path

from .metrics import TOP_KS


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
) -> Path:
    """Top-1..5 on the unseen-voice test split, CTC ranking beside the fuzzy baseline."""
    rows = [
        "| ranking | " + " | ".join(f"top-{k}" for k in TOP_KS) + " |",
        "|---|" + "---:|" * len(TOP_KS),
        "| CTC likelihood (used by `S2T.recognize`) | " + " | ".join(format_percent(metrics[f"test_top{k}"]) for k in TOP_KS) + " |",
        "| greedy transcript + rapidfuzz (baseline) | " + " | ".join(format_percent(metrics[f"test_fuzzy_top{k}"]) for k in TOP_KS) + " |",
    ]
    lines = [
        "# Drug-name recognition report",
        "",
        f"Model: {model_description}. Lexicon: {lexicon_size} names.",
        "",
        f"## Test split: {split_sizes['test']} clips of voices never heard in training",
        "",
        *rows,
        "",
        f"Character error rate of the greedy transcript: {format_percent(metrics['test_cer'])}.",
        "",
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
