"""Security: no shell, no pickle, no remote code unless a recipe asks for it."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys

import pytest

from .test_run_ctc import ROOT

SOURCES = sorted([*(ROOT / "s2t_hf").rglob("*.py"), ROOT / "run_ctc.py", ROOT / "run_seq2seq.py"])


@pytest.mark.parametrize("pattern", [r"shell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r"\bimport pickle\b", r"\bpickle\.", r"torch\.load\(", r"(?<![.\w])eval\("])
def test_no_shell_and_no_pickle_in_the_product(pattern):
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in SOURCES
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if re.search(pattern, line)]
    assert not offenders, f"{pattern} found in {offenders}"


@pytest.mark.parametrize("script", ["run_ctc", "run_seq2seq"])
def test_remote_code_is_off_unless_the_recipe_turns_it_on(script):
    spec = importlib.util.spec_from_file_location(script, ROOT / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[script] = module
    spec.loader.exec_module(module)
    defaults = {field.name: field.default for field in dataclasses.fields(module.ModelArguments)}
    assert defaults["trust_remote_code"] is False


def test_tts_engines_get_argument_lists_so_names_never_reach_a_shell(tmp_path):
    from s2t_hf.speech import tts

    hostile = "metformin; rm -rf / $(reboot) `id` 'x\""
    for engine_name in ["espeak-ng", "flite"]:
        engine = tts.get_engine(engine_name)
        command = engine.command(hostile, tmp_path / "out.wav", tts.Voice(engine_name, "en-us" if engine_name == "espeak-ng" else "slt"))
        assert isinstance(command, list) and hostile in command  # one argument, passed verbatim
