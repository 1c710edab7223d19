"""Two CPU processes (gloo) through `accelerate launch`, as a multi-GPU run starts: one process
synthesises and writes, every clip is counted once, the metrics equal one process's on the
same checkpoint, and a run killed mid-way resumes with two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEST_NAMES, require_program
from .families import whisper_tiny_en
from .test_faults import kill_when
from .test_run_ctc import ROOT, write_recipe

WRITE_AUDIT = Path(__file__).parent / "write_audit"  # its sitecustomize logs each process's writes
RANKING_METRICS = [f"{split}_{metric}" for split in ("eval", "test") for metric in
                   ("top1", "top2", "top3", "top4", "top5", "fuzzy_top1", "fuzzy_top5", "cer", "clips")]
HELD_OUT = 5  # of the 6 validation / test clips: 2 processes get 3 each, one of them a repeat of another's


def free_port() -> int:
    from s2t_hf.serving.server import free_port as loopback_port

    return loopback_port()


def launch(script: str, recipe: Path, audit: Path | None = None, popen: bool = False):
    """`accelerate launch --config_file accelerate_configs/cpu-2-processes.yaml SCRIPT RECIPE`, as
    the README documents: two processes that form a gloo group (the recipe has use_cpu)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu-2-processes.yaml"),
               "--main_process_port", str(free_port()), str(ROOT / script), str(recipe)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if audit is not None:
        audit.mkdir(parents=True)
        environment.update(PYTHONPATH=os.pathsep.join([str(WRITE_AUDIT), environment.get("PYTHONPATH", "")]), S2T_HF_WRITE_AUDIT=str(audit))
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)


def one_process(script: str, recipe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), str(recipe)], cwd=ROOT, capture_output=True, text=True, timeout=900)


def audited(audit: Path, rank: int) -> list[tuple[str, str]]:
    """(kind, path) lines the process of this rank logged: 'write' for a file written, 'run' for a program started."""
    logs = list(audit.glob(f"rank-{rank}-*.log"))
    assert len(logs) == 1, f"expected one log of rank {rank}, found {logs}"
    return [tuple(line.split("\t", 1)) for line in logs[0].read_text().splitlines()]


def results(model: Path) -> dict:
    return json.loads((model / "all_results.json").read_text())


@pytest.fixture(scope="module")
def ctc_runs(tmp_path_factory):
    """A two-process run killed after its first checkpoint, the rerun that resumes it (both with
    their writes logged), and a one-process run of the same recipe, which finds the final
    checkpoint and only evaluates it."""
    require_program("espeak-ng")
    require_program("flite")
    tmp_path = tmp_path_factory.mktemp("distributed")
    recipe = write_recipe(
        tmp_path, max_steps=150, save_strategy="steps", save_steps=50, augmentation=None,
        per_device_eval_batch_size=1, max_eval_samples=HELD_OUT, max_test_samples=HELD_OUT,
    )
    model = tmp_path / "model"
    killed = launch("run_ctc.py", recipe, audit=tmp_path / "audit-killed", popen=True)
    kill_when(killed, lambda: (model / "checkpoint-50" / "trainer_state.json").is_file())
    assert not (model / "all_results.json").exists()
    resumed = launch("run_ctc.py", recipe, audit=tmp_path / "audit")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = {"results": results(model), "calibration": json.loads((model / "calibration.json").read_text()),
           "state": json.loads((model / "trainer_state.json").read_text()), "stderr": resumed.stderr}
    files = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if "audit" not in path.parts[len(tmp_path.parts)])
    single = one_process("run_ctc.py", recipe)
    assert single.returncode == 0, single.stderr[-3000:]
    one = {"results": results(model), "calibration": json.loads((model / "calibration.json").read_text()), "stderr": single.stderr}
    return {"folder": tmp_path, "two": two, "one": one, "files_after_two": files}


def test_two_processes_count_each_clip_once_and_report_what_one_process_reports(ctc_runs):
    two, one = ctc_runs["two"]["results"], ctc_runs["one"]["results"]
    assert "resuming from" in ctc_runs["one"]["stderr"] and "checkpoint-150" in ctc_runs["one"]["stderr"]  # the same weights
    assert two["eval_clips"] == two["test_clips"] == HELD_OUT  # the sampler's repeated clip is not counted
    assert {key: two[key] for key in RANKING_METRICS} == {key: one[key] for key in RANKING_METRICS}
    # the loss is a mean per clip: two processes must not double it (Trainer's num_items_in_batch scaling)
    for key in ("eval_loss", "test_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    for key in ("temperature", "ambiguity_margin", "out_of_lexicon_gap"):
        assert ctc_runs["two"]["calibration"][key] == pytest.approx(ctc_runs["one"]["calibration"][key], rel=1e-4, abs=1e-6), key
    assert ctc_runs["two"]["calibration"]["clips"] == HELD_OUT


def test_a_killed_two_process_run_resumes_from_its_checkpoint(ctc_runs):
    assert "resuming from" in ctc_runs["two"]["stderr"] and "checkpoint-50" in ctc_runs["two"]["stderr"]
    state = ctc_runs["two"]["state"]
    assert state["global_step"] == 150
    assert ctc_runs["two"]["results"]["train_runtime"] > 0  # it trained the remaining steps itself


def test_one_process_synthesises_and_writes_the_other_only_trains(ctc_runs):
    folder = ctc_runs["folder"]
    for audit in ("audit-killed", "audit"):
        first = audited(folder / audit, 0)
        second = audited(folder / audit, 1)
        assert not [path for kind, path in second if kind == "write" and path.startswith(str(folder))], second
        assert not [path for kind, path in second if kind == "run" and Path(path).name in ("espeak-ng", "flite")]
        if audit == "audit-killed":  # the first launch synthesised the corpus: in process 0 alone
            assert any(kind == "run" and Path(path).name == "espeak-ng" for kind, path in first)
            assert any(path == str(folder / "data" / "manifest-test.tsv") for kind, path in first)
    written = {path for kind, path in audited(folder / "audit", 0) if kind == "write"}
    model = folder / "model"
    for name in ("report.md", "calibration.json", "README.md", "lexicon.txt", "all_results.json"):
        assert str(model / name) in written, name  # the log sees the writes: the second process's empty log means something
    files = ctc_runs["files_after_two"]
    assert not [name for name in files if "rank" in Path(name).name or name.endswith((".partial", ".partial.wav"))], files


def test_a_whisper_run_with_two_processes_reports_what_one_process_reports(tmp_path, corpus):
    """run_seq2seq.py: generated transcripts differ in length between processes and are padded
    before they are gathered; the metrics still equal one process's on the same checkpoint."""
    require_program("espeak-ng")
    corpus_dir = shutil.copytree(corpus[0], tmp_path / "data")
    checkpoint = whisper_tiny_en(tmp_path / "tiny")
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("\n".join(TEST_NAMES) + "\n")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "model_name_or_path": str(checkpoint), "max_source_seconds": 3, "max_new_tokens": 8,
        "lexicon": str(lexicon), "voices": ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "espeak-ng:en-us+m3@r1.2", "flite:slt", "flite:kal16"],
        "validation_voices": ["flite:kal16"], "test_voices": ["flite:slt"], "data_dir": str(corpus_dir), "output_dir": str(tmp_path / "model"),
        "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "learning_rate": 1e-3, "max_steps": 4,
        "eval_strategy": "no", "save_strategy": "steps", "save_steps": 4, "report_to": "none", "use_cpu": True, "seed": 0,
        "max_eval_samples": HELD_OUT, "max_test_samples": HELD_OUT,
    }))
    two = launch("run_seq2seq.py", recipe)
    assert two.returncode == 0, two.stderr[-3000:]
    first = results(tmp_path / "model")
    single = one_process("run_seq2seq.py", recipe)
    assert single.returncode == 0 and "checkpoint-4" in single.stderr, single.stderr[-3000:]
    second = results(tmp_path / "model")
    assert first["test_clips"] == HELD_OUT
    assert {key: first[key] for key in RANKING_METRICS} == {key: second[key] for key in RANKING_METRICS}
    # a mean over each batch's label tokens: batches differ between one and two processes (by 0.06% measured);
    # a loss scaled by the number of processes would be twice
    assert first["test_loss"] == pytest.approx(second["test_loss"], rel=1e-2)


def test_processes_that_never_joined_one_group_stop_with_the_fix(tmp_path):
    """On a machine without GPUs a recipe without use_cpu would give two processes that each
    train alone and write the same files: the run refuses, naming the setting."""
    recipe = write_recipe(tmp_path, use_cpu=False, max_steps=1)
    result = launch("run_ctc.py", recipe)
    assert result.returncode != 0
    assert "the launcher started 2 processes" in result.stderr and '"use_cpu": true' in result.stderr
    assert not (tmp_path / "data").exists()  # refused before synthesising anything


@pytest.mark.parametrize("config", sorted(path.name for path in (ROOT / "accelerate_configs").glob("*.yaml")))
def test_every_shipped_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(ROOT / "accelerate_configs" / config))
    assert loaded.num_processes >= loaded.num_machines >= 1
    if loaded.deepspeed_config:
        assert (ROOT / loaded.deepspeed_config["deepspeed_config_file"]).is_file()
