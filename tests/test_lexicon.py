import pytest

from s2t_hf.text.lexicon import LexiconError, build_lexicon, load_lexicon, normalize_name


@pytest.mark.parametrize(
    "written, label",
    [
        ("Metformin", "metformin"),
        ("St. John's Wort", "st johns wort"),
        ("co-trimoxazole", "co trimoxazole"),
        ("  Insulin   Glargine ", "insulin glargine"),
        ("Émla", "emla"),
        ("Straße", "strasse"),
        ("naproxen—sodium", "naproxen sodium"),
    ],
)
def test_normalize_name(written, label):
    assert normalize_name(written) == label


@pytest.mark.parametrize("bad", ["5-fluorouracil", "β-carotene", "vitamin B12", "...", "  "])
def test_normalize_name_rejects_unspeakable(bad):
    with pytest.raises(LexiconError, match="drug name"):
        normalize_name(bad)


def test_build_lexicon_drops_blanks_and_duplicates_after_normalisation():
    entries = build_lexicon(["\ufeffMetformin", "", "metformin", "  ", "Co-Trimoxazole", "co trimoxazole"])
    assert [(entry.name, entry.label) for entry in entries] == [("Metformin", "metformin"), ("Co-Trimoxazole", "co trimoxazole")]


def test_build_lexicon_names_the_bad_line():
    with pytest.raises(LexiconError, match="line 2.*5-fluorouracil"):
        build_lexicon(["metformin", "5-fluorouracil"])
    assert [entry.label for entry in build_lexicon(["metformin", "5-fluorouracil"], skip_invalid=True)] == ["metformin"]


def test_empty_lexicon_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LexiconError, match="no usable drug name"):
        load_lexicon(empty)


def test_missing_lexicon_file_is_an_error(tmp_path):
    with pytest.raises(LexiconError, match="neither a file nor one of the built-in"):
        load_lexicon(tmp_path / "nope.txt")


def test_user_file_with_crlf_and_bom(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_bytes("\ufeffWarfarin\r\nHeparin\r\n".encode("utf-8"))
    assert [entry.label for entry in load_lexicon(path)] == ["warfarin", "heparin"]


def test_builtin_lexicons_load():
    common = load_lexicon("common")
    assert len(common) == 1128
    assert len({entry.label for entry in common}) == len(common)
    assert len(load_lexicon("generic")) > len(common)
    assert load_lexicon("common", limit=5) == common[:5]


def test_a_brand_name_carries_its_generic_from_the_fda_pairs_and_a_line_can_give_its_own(tmp_path):
    from s2t_hf.text.lexicon import save_lexicon

    entries = build_lexicon(["Lipitor", "atorvastatin", "Glucophage", "Mybrand\tmygeneric", "Zocor\tsimvastatin sodium"])
    generics = {entry.name: entry.generic for entry in entries}
    assert generics == {"Lipitor": "atorvastatin", "atorvastatin": None, "Glucophage": "metformin", "Mybrand": "mygeneric",
                        "Zocor": "simvastatin sodium"}
    saved = save_lexicon(entries, tmp_path)  # what a model folder keeps: the generics survive a reload
    assert [(entry.name, entry.generic) for entry in load_lexicon(saved)] == [(entry.name, entry.generic) for entry in entries]


def test_lists_joined_by_plus_are_ranked_together_without_repeats():
    brand, common = load_lexicon("brand"), load_lexicon("common")
    both = load_lexicon("brand+common")
    assert both[: len(brand)] == brand
    assert len({entry.label for entry in both}) == len(both) == len({entry.label for entry in brand} | {entry.label for entry in common})
    assert [entry.generic for entry in both if entry.name == "Lipitor"] == ["atorvastatin"]
    assert load_lexicon("brand+common", limit=10)[:10] == brand[:10]
