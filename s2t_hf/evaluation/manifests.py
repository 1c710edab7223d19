"""Manifests of recordings to evaluate on.

A manifest is a tab-separated file with a header row holding at least `path` (relative to the
manifest's folder) and `text`; any other column (`voice`, `engine`, ...) gives a breakdown.
"""

from __future__ import annotations

import csv
from pathlib import Path

REQUIRED_COLUMNS = ("path", "text")
NOT_GROUPS = {"path", "text", "label", "duration"}


class ManifestError(ValueError):
    """A manifest that cannot be evaluated."""


def read_evaluation_manifest(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ManifestError(f"manifest {str(path)!r} has no rows under its header")
    missing = [column for column in REQUIRED_COLUMNS if column not in rows[0]]
    if missing:
        raise ManifestError(f"manifest {str(path)!r} lacks column(s) {missing}; its header is {list(rows[0])}")
    for row in rows:
        row["path"] = str((path.parent / row["path"]).resolve())
    return rows
