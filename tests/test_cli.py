"""The `s2t-hf` command line, as a user runs it."""

import json
import subprocess
import sys

import pytest
import soundfile

from .conftest import require_program


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "s2t_hf.cli", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.parametrize("command", [[], ["synthesize"], ["generate-data"], ["recognize"], ["evaluate"], ["compare"], ["calibrate"], ["import-whisper"], ["serve"]])
def test_every_subcommand_has_help(command):
    output = cli(*command, "--help").stdout
    assert output.startswith("usage: s2t-hf")


def test_synthesize_writes_a_16k_wav(tmp_path):
    require_program("flite")
    out = tmp_path / "sub" / "metformin.wav"
    printed = cli("synthesize", "metformin", "-o", out, "--engine", "flite", "--voice", "slt", "--rate", "0.9").stdout
    audio, rate = soundfile.read(out)
    assert rate == 16000 and len(audio) > 0.3 * rate
    assert "flite:slt@r0.9" in printed


def test_synthesize_unknown_voice_is_one_clear_error(tmp_path):
    require_program("espeak-ng")
    result = cli("synthesize", "metformin", "-o", tmp_path / "x.wav", "--voice", "klingon", check=False)
    assert result.returncode == 2
    assert "no English voice 'klingon'" in result.stderr and "Traceback" not in result.stderr


def test_generate_data_writes_dataset_and_manifests(tmp_path):
    require_program("espeak-ng")
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("metformin\nwarfarin\n")
    printed = cli(
        "generate-data", "--lexicon", lexicon, "--voices", "espeak-ng:en-us", "espeak-ng:en-gb", "espeak-ng:en-gb-scotland",
        "--validation-voices", "espeak-ng:en-gb", "--test-voices", "espeak-ng:en-gb-scotland", "-o", tmp_path / "data",
    ).stdout
    assert "train: 2 clips" in printed and "test: 2 clips" in printed
    assert (tmp_path / "data" / "dataset" / "dataset_dict.json").is_file()
    assert (tmp_path / "data" / "manifest-test.tsv").is_file()


def test_evaluate_json_with_groups_formats_and_bad_rows(tmp_path, corpus, untrained_model):
    corpus_dir, _ = corpus
    clips = sorted((corpus_dir / "clips" / "flite_slt").glob("*.wav"))[:3]
    audio, rate = soundfile.read(clips[1])
    soundfile.write(tmp_path / "second.flac", audio, rate)
    soundfile.write(tmp_path / "third.mp3", soundfile.read(clips[2])[0], rate, format="MP3")
    rows = [
        ("path", "text", "voice"),
        (str(clips[0]), clips[0].stem.replace("_", " "), "a"),
        ("second.flac", clips[1].stem.replace("_", " "), "a"),
        ("third.mp3", clips[2].stem.replace("_", " "), "b"),
        ("missing.wav", "metformin", "b"),
    ]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("".join("\t".join(row) + "\n" for row in rows))
    report = json.loads(cli("evaluate", untrained_model, "--manifest", manifest, "--json").stdout)
    assert report["n"] == 3
    # the numbers are those of the same model run here on the three readable clips
    from s2t_hf import S2T
    from s2t_hf.evaluation.metrics import character_error_rate

    references = [row[1] for row in rows[1:4]]
    paths = [str(clips[0]), str(tmp_path / "second.flac"), str(tmp_path / "third.mp3")]
    recognised = S2T.from_pretrained(untrained_model).recognize(paths, top_k=5)
    for k in range(1, 6):
        hits = [reference in [candidate.name for candidate in result.candidates[:k]] for reference, result in zip(references, recognised)]
        assert report[f"top{k}"] == pytest.approx(sum(hits) / 3), k
        assert report["groups"]["voice"]["a"][f"top{k}"] == pytest.approx(sum(hits[:2]) / 2), k
    assert report["cer"] == pytest.approx(character_error_rate(references, [result.transcript for result in recognised]))
    assert set(report["groups"]["voice"]) == {"a", "b"}
    assert report["groups"]["voice"]["a"]["n"] == 2 and report["groups"]["voice"]["b"]["n"] == 1
    assert len(report["errors"]) == 1 and "missing.wav" in report["errors"][0]["path"]
    table = cli("evaluate", untrained_model, "--manifest", manifest).stdout
    assert "| all | 3 |" in table and "voice=b" in table


def test_evaluate_manifest_without_text_column_is_a_clear_error(tmp_path, untrained_model):
    manifest = tmp_path / "bad.tsv"
    manifest.write_text("file\tname\nx.wav\tmetformin\n")
    result = cli("evaluate", untrained_model, "--manifest", manifest, check=False)
    assert result.returncode == 2 and "lacks column(s) ['path', 'text']" in result.stderr
