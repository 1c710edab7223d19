"""Checks before long work starts: can we write where results go, and is there room?

A run that dies at the end because its output folder is read-only, or half-way because the
disk filled up, wastes hours; both are cheap to check at the start.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

BYTES_PER_CLIP = 48_000  # a 1.5 s 16-bit 16 kHz WAV, the size of a typical synthesised drug name
GIB = 1024**3


class PreflightError(OSError):
    """A folder that cannot hold what the run will write."""


def check_writable(folder: str | Path, what: str) -> Path:
    """Create `folder` if needed and prove a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PreflightError(f"{what} {str(folder)!r} is not writable ({error.strerror or error}); choose another folder or fix its permissions") from None
    return folder


def check_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """Fail now, not half-way, when the disk holding `folder` has less room than the run needs."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise PreflightError(
            f"{what} {str(folder)!r}: {free / GIB:.2f} GiB free, the run needs about {needed_bytes / GIB:.2f} GiB; "
            "free some space or point it to another disk"
        )


def corpus_bytes(names: int, voices: int) -> int:
    return names * voices * BYTES_PER_CLIP


def checkpoint_bytes(parameters: int, checkpoints_kept: int | None) -> int:
    """Weights plus Adam's two moments (float32) per checkpoint, and the final model."""
    return parameters * 4 * 3 * ((checkpoints_kept or 3) + 1)
