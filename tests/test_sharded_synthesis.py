"""`s2t-hf generate-data --shard I/N` on N machines, then `--merge`: the same corpus as one machine makes."""

from __future__ import annotations

import json

from datasets import load_from_disk

from s2t_hf.cli import main
from s2t_hf.speech.synthesis import read_manifest

from .conftest import TEST_NAMES, require_program

VOICES = ["espeak-ng:en-us", "espeak-ng:en-gb+f2", "flite:slt", "flite:kal16"]


def generate(tmp_path, output, *extra: str) -> int:
    lexicon = tmp_path / "drugs.txt"
    lexicon.write_text("\n".join([*TEST_NAMES, "heparin"]) + "\n")
    return main(["generate-data", "--lexicon", str(lexicon), "--voices", *VOICES, "--validation-voices", "flite:kal16",
                 "--test-voices", "flite:slt", "--workers", "2", "-o", str(output), *extra])


def clips_on_disk(folder) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.glob("clips/*/*.wav"))}


def test_three_shards_merged_equal_one_unsharded_run(tmp_path, capsys):
    require_program("espeak-ng")
    require_program("flite")
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert generate(tmp_path, one) == 0

    assert generate(tmp_path, sharded, "--shard", "1/3") == 0
    first = clips_on_disk(sharded)
    assert len(first) == 10  # every third of the 4 x 7 = 28 (voice, name) pairs, from the first
    assert not (sharded / "manifest.tsv").exists()  # a shard writes clips and its receipt only
    assert generate(tmp_path, sharded, "--shard", "2/3") == 0
    capsys.readouterr()
    assert generate(tmp_path, sharded, "--merge") == 2  # shard 3/3 is not done: refused, naming it
    assert "shards 3/3" in capsys.readouterr().err and not (sharded / "manifest.tsv").exists()
    assert generate(tmp_path, sharded, "--shard", "3/3") == 0
    assert generate(tmp_path, sharded, "--merge") == 0

    assert clips_on_disk(sharded) == clips_on_disk(one)  # the same clips, byte for byte
    assert len(clips_on_disk(one)) == 28 and set(first) < set(clips_on_disk(one))
    receipts = [json.loads(path.read_text()) for path in sorted((sharded / "shards").glob("*.json"))]
    assert sorted(receipt["clips"] for receipt in receipts) == [9, 9, 10]  # disjoint parts: 28 clips, each made once
    for name in ("manifest.tsv", "manifest-train.tsv", "manifest-validation.tsv", "manifest-test.tsv"):
        assert read_manifest(sharded / name) == read_manifest(one / name), name
    for split in ("train", "validation", "test"):
        merged, unsharded = (load_from_disk(str(folder / "dataset"))[split].remove_columns("audio").to_list() for folder in (sharded, one))
        assert merged == unsharded, split


def test_a_merge_refuses_shards_of_another_corpus(tmp_path, capsys):
    require_program("espeak-ng")
    require_program("flite")
    folder = tmp_path / "data"
    assert generate(tmp_path, folder, "--shard", "1/1", "--max-names", "3") == 0
    capsys.readouterr()
    assert generate(tmp_path, folder, "--merge") == 2
    assert "other names or voices" in capsys.readouterr().err
    assert generate(tmp_path, folder, "--shard", "2/1") == 2
    assert "1 <= I <= N" in capsys.readouterr().err
