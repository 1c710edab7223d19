"""Unwritable folders and a full disk are reported before any work starts."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from s2t_hf.training.preflight import PreflightError, check_free_space, check_writable, corpus_bytes

from .test_run_ctc import run, write_recipe


def test_a_folder_under_a_file_is_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match="output_dir .*a-file/out.* is not writable"):
        check_writable(blocker / "out", "output_dir")
    assert check_writable(tmp_path / "fresh" / "out", "output_dir").is_dir()


def test_a_full_disk_is_reported_with_what_is_needed(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(PreflightError, match=r"data_dir .*: 0\.00 GiB free, the run needs about 0\.20 GiB"):
        check_free_space(tmp_path, corpus_bytes(names=1128, voices=4), "data_dir")


@pytest.mark.parametrize("key", ["output_dir", "data_dir"])
def test_run_ctc_stops_before_work_when_a_folder_is_unwritable(tmp_path, key):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run(write_recipe(tmp_path, **{key: str(blocker / "sub")}))
    assert result.returncode == 2 and f"{key} " in result.stderr and "is not writable" in result.stderr
    assert "Traceback" not in result.stderr
    if key == "data_dir":
        assert not (tmp_path / "model" / "config.json").exists()  # stopped before the model was built
