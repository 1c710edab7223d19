"""The comparison table and the `--report` folder: Markdown plus PNG plots.

Plots: top-k accuracy (k = 1..10) per model; top-1 per voice and per engine; top-1 versus
added-noise SNR; calibration (reliability diagram); what the `ambiguous` flag catches at what
cost; the most frequent confusions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..decoding.ranking import RANKED_FOR_METRICS
from ..inference.calibration import flag_tradeoff, reliability_bins
from .summary import margin_of


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def comparison_table(results: dict[str, dict]) -> str:
    """One Markdown table: each model's clean accuracy, sound-alike subset, calibration, flags, speed, noise."""
    noisy = [condition for condition in next(iter(results.values())) if condition != "clean"]
    header = ["model", "clips", "top-1", "top-5", "sound-alike top-1 (clips)", "CER", "ECE", "ambiguous: errors caught / correct flagged",
              "not in lexicon: detected / false", "s/clip", *(f"top-1 @ {condition}" for condition in noisy)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for model, conditions in results.items():
        clean = conditions["clean"]
        sound_alike = clean.get("sound_alike")
        flag, rejection = clean["ambiguous"], clean["out_of_lexicon"]
        cells = [
            model, str(clean["n"]), percent(clean["top1"]), percent(clean["top5"]),
            f"{percent(sound_alike['top1'])} ({sound_alike['n']})" if sound_alike else "n/a",
            percent(clean["cer"]), f"{clean['ece']:.3f}" + ("" if clean["calibrated"] else " (uncalibrated)"),
            f"{percent(flag['errors_caught'])} / {percent(flag['correct_flagged'])}",
            f"{percent(rejection['detected'])} / {percent(rejection['false_rejections'])}" if rejection else "n/a",
            f"{clean['seconds_per_clip']:.3f}", *(percent(conditions[condition]["top1"]) for condition in noisy),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_top_k(results: dict[str, dict], path: Path) -> None:
    plt = _figure()
    figure, axes = plt.subplots(figsize=(6, 4))
    ks = list(range(1, RANKED_FOR_METRICS + 1))
    for model, conditions in results.items():
        axes.plot(ks, [100 * conditions["clean"][f"top{k}"] for k in ks], marker="o", label=model)
    axes.set(xlabel="k (names shown)", ylabel="spoken name in top k (%)", title="Top-k accuracy, unseen voices", xticks=ks)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_groups(results: dict[str, dict], column: str, path: Path) -> None:
    plt = _figure()
    values = sorted({value for conditions in results.values() for value in conditions["clean"]["groups"].get(column, {})})
    figure, axes = plt.subplots(figsize=(7, 0.5 * len(values) * len(results) + 1.5))
    height = 0.8 / len(results)
    for offset, (model, conditions) in enumerate(results.items()):
        groups = conditions["clean"]["groups"].get(column, {})
        axes.barh(np.arange(len(values)) + offset * height, [100 * groups[value]["top1"] if value in groups else 0 for value in values], height, label=model)
    axes.set_yticks(np.arange(len(values)) + height * (len(results) - 1) / 2, values, fontsize=8)
    axes.set(xlabel="top-1 (%)", xlim=(0, 100), title=f"Top-1 by {column}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def snr_of(condition: str) -> float | None:
    """The SNR of a white-noise condition ("10 dB"), None for clean or a telephone channel."""
    return float(condition.split()[0]) if condition.endswith(" dB") else None


def plot_snr(results: dict[str, dict], path: Path) -> None:
    plt = _figure()
    figure, axes = plt.subplots(figsize=(6, 4))
    for model, conditions in results.items():
        noisy = sorted((snr_of(condition), summary["top1"]) for condition, summary in conditions.items() if snr_of(condition) is not None)
        labels = [f"{snr:g}" for snr, _ in noisy] + ["clean"]
        axes.plot(labels, [100 * top1 for _, top1 in noisy] + [100 * conditions["clean"]["top1"]], marker="o", label=model)
    axes.set(xlabel="added white noise, SNR (dB)", ylabel="top-1 (%)", ylim=(0, 100), title="Robustness to noise")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_calibration(results: dict[str, dict], path: Path, bins: int = 10) -> None:
    plt = _figure()
    figure, (reliability, tradeoff) = plt.subplots(1, 2, figsize=(11, 4))
    reliability.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    for model, conditions in results.items():
        records = conditions["clean"]["records"]
        confidence = np.array([record["probabilities"][0] for record in records])
        correct = np.array([record["candidates"][:1] == [record["reference"]] for record in records])
        centres, accuracies, _ = zip(*reliability_bins(confidence, correct, bins))
        reliability.plot(centres, accuracies, marker="o", label=f"{model} (ECE {conditions['clean']['ece']:.3f})")
        margins = np.array([margin_of(record) for record in records])
        rows = flag_tradeoff(margins, correct, np.linspace(0, 1, 101))
        tradeoff.plot([100 * row["correct_flagged"] for row in rows], [100 * row["errors_caught"] for row in rows], label=model)
        flag = conditions["clean"]["ambiguous"]
        if flag["correct_flagged"] is not None and flag["errors_caught"] is not None:
            tradeoff.scatter([100 * flag["correct_flagged"]], [100 * flag["errors_caught"]], zorder=3)
    reliability.set(xlabel="probability of the best name", ylabel="share correct", title="Calibration (reliability)")
    reliability.legend(fontsize=8)
    tradeoff.set(xlabel="correct answers flagged ambiguous (%)", ylabel="errors flagged ambiguous (%)",
                 title="Ambiguity flag: margin threshold swept (dot: fitted)")
    tradeoff.grid(alpha=0.3)
    tradeoff.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_confusions(model: str, summary: dict, path: Path) -> None:
    plt = _figure()
    confusions = summary["confusions"][::-1]
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(confusions) + 1.5))
    axes.barh([f"{row['spoken']} -> {row['heard_as']}" for row in confusions], [row["count"] for row in confusions])
    axes.set(xlabel="clips", title=f"Most frequent confusions: {model}")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_comparison_report(results: dict[str, dict], folder: str | Path, manifest: str, command: str) -> Path:
    """report.md with the table, per-group and per-noise tables, confusions, and the plots beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(results.values()))["clean"]
    lines = [
        "# Drug-name recognition: model comparison",
        "",
        f"Clips: `{manifest}` ({first['n']} readable, {len(first['errors'])} unreadable). Produced by:",
        "",
        f"    {command}",
        "",
        comparison_table(results),
        "",
        "Sound-alike: clips whose name has a known look-alike/sound-alike partner (FDA / ISMP lists) also in the lexicon. "
        "ECE: expected calibration error of the best name's probability. Ambiguous: margin between the best two "
        "probabilities under the threshold fitted on validation. Not in lexicon: measured by removing each clip's own "
        "name from the lexicon (detected) and on the full lexicon (false rejections).",
        "",
        "![top-k](top_k.png)",
        "",
    ]
    plot_top_k(results, folder / "top_k.png")
    if any(snr_of(condition) is not None for condition in next(iter(results.values()))):
        plot_snr(results, folder / "snr.png")
        lines += ["![noise](snr.png)", ""]
    plot_calibration(results, folder / "calibration.png")
    lines += ["![calibration](calibration.png)", ""]
    for column in first["groups"]:
        if len(first["groups"][column]) <= 40:
            plot_groups(results, column, folder / f"by_{column}.png")
            lines += [f"![by {column}](by_{column}.png)", ""]
    for index, (model, conditions) in enumerate(results.items()):
        summary = conditions["clean"]
        lines += [f"## {model}", ""]
        sound_alike = summary.get("sound_alike")
        if sound_alike:
            lines += [
                f"Sound-alike subset: {sound_alike['n']} clips of {sound_alike['pairs_names']} names; top-1 {percent(sound_alike['top1'])} "
                f"(overall {percent(summary['top1'])}); {sound_alike['confused_with_partner']} clips heard as the known partner.",
                "",
            ]
        if summary["confusions"]:
            plot_confusions(model, summary, folder / f"confusions_{index}.png")
            lines += ["| spoken | heard as | clips |", "|---|---|---:|"]
            lines += [f"| {row['spoken']} | {row['heard_as']} | {row['count']} |" for row in summary["confusions"]]
            lines += ["", f"![confusions]({f'confusions_{index}.png'})", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
