import re

import datasets
import pytest

from lora_repro.data.nlg import (
    IGNORE_INDEX,
    WEBNLG_SEEN_CATEGORIES,
    e2e_source,
    encode_pair,
    encode_prompt,
    group_references,
    linearize_triples,
    load_gpt2_tokenizer,
    load_nlg,
    take,
    tokenize_nlg,
)

# --- linearization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mr, source",
    [
        ("name[Alimentum], area[city centre], familyFriendly[no]",
         "name : Alimentum | area : city centre | family friendly : no"),
        ("name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5]",
         "name : The Vaults | Type : pub | price : more than £30 | customer rating : 5 out of 5"),
        ("name[Cotto], food[Chinese], near[The Portland Arms]",
         "name : Cotto | food : Chinese | near : The Portland Arms"),
    ],
)  # fmt: skip
def test_e2e_source(mr, source):
    assert e2e_source(mr) == source


@pytest.mark.parametrize(
    "mr, pattern",
    [
        ("name[Cotto], food Chinese", r"not a list of slot\[value\]"),
        ("", r"not a list of slot\[value\]"),
        (
            "name[Cotto], cuisine[Chinese]",
            r"unknown slot\(s\) \['cuisine'\]: known are \['name', 'eatType'",
        ),
    ],
)
def test_e2e_source_rejects(mr, pattern):
    with pytest.raises(ValueError, match=pattern):
        e2e_source(mr)


@pytest.mark.parametrize(
    "lowercase, expected",
    [
        (False, "Aarhus_Airport : cityServed : Aarhus | Aarhus : leaderName : Jacob_Bundsgaard"),
        (True, "Aarhus_Airport : cityserved : Aarhus | Aarhus : leadername : Jacob_Bundsgaard"),
    ],
)
def test_linearize_triples(lowercase, expected):
    triples = [
        ("Aarhus_Airport", "cityServed", "Aarhus"),
        ("Aarhus", "leaderName", "Jacob_Bundsgaard"),
    ]
    assert linearize_triples(triples, lowercase_relations=lowercase) == expected


# --- the real shared files ----------------------------------------------------------------


@pytest.mark.parametrize(
    "split, pairs, sources",
    [("train", 42_061, 4_862), ("validation", 4_672, 547), ("test", 4_693, 630)],
)
def test_real_e2e_counts(shared_data, split, pairs, sources):
    dataset = load_nlg("e2e", split, shared_data / "e2e")
    assert len(dataset) == pairs
    assert len(group_references(dataset)) == sources


def test_e2e_sources_match_the_authors_files(shared_data):
    """The authors' MR text differs from ours only in the spaces of their tokenized values."""
    authors = [
        line.split("||")[0]
        for line in (shared_data / "e2e/lora_format/valid.txt").read_text().splitlines()
    ]
    ours = load_nlg("e2e", "validation", shared_data / "e2e")["source"]
    assert ours[0] == authors[0] == "name : Alimentum | area : city centre | family friendly : no"
    without_spaces = (
        [re.sub(r"\s", "", text) for text in ours],
        [re.sub(r"\s", "", text) for text in authors],
    )
    assert without_spaces[0] == without_spaces[1]


def test_e2e_evaluation_items_keep_first_seen_order(shared_data):
    items = group_references(load_nlg("e2e", "validation", shared_data / "e2e"))
    assert items[0]["source"] == "name : Alimentum | area : city centre | family friendly : no"
    assert (
        items[0]["references"][0]
        == "There is a place in the city centre, Alimentum, that is not family-friendly."
    )
    assert sum(len(refs) for refs in items["references"]) == 4_672


@pytest.mark.parametrize(
    "split, pairs, entries, sources",
    [
        # 6,940 / 872 entries in the release; 5 / 1 of them have only lexicalizations marked toFix
        ("train", 18_025, 6_935, 6_888),
        ("validation", 2_258, 871, 870),
        ("test", 4_928, 1_862, 1_862),
        ("test_seen", 2_495, 971, 971),
        ("test_unseen", 2_433, 891, 891),
    ],
)
def test_real_webnlg_counts(shared_data, split, pairs, entries, sources):
    dataset = load_nlg("webnlg", split, shared_data / "webnlg_2017")
    assert (len(dataset), len(set(dataset["entry"])), len(group_references(dataset))) == (
        pairs,
        entries,
        sources,
    )


def test_webnlg_unseen_split_matches_the_release_file(shared_data):
    unseen_file = (shared_data / "webnlg_2017/test/testdata_unseen_with_lex.xml").read_text()
    unseen = load_nlg("webnlg", "test_unseen", shared_data / "webnlg_2017")
    assert len(set(unseen["entry"])) == unseen_file.count("<entry ")
    assert not any(unseen["seen"])


def test_webnlg_first_pair_is_the_authors_first(shared_data):
    """microsoft/LoRA's webnlg_challenge_2017/dev.json starts with this entry."""
    first = load_nlg("webnlg", "validation", shared_data / "webnlg_2017", limit=1)[0]
    assert (first["source"], first["reference"]) == (
        "Aarhus : leaderName : Jacob_Bundsgaard",
        "The leader of Aarhus is Jacob Bundsgaard.",
    )
    assert (first["category"], first["seen"]) == ("Airport", True)


# --- fixture files: formats and errors ----------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _webnlg_entry(category, triples, lexes):
    mtriples = "".join(f"<mtriple>{t}</mtriple>" for t in triples)
    lex = "".join(
        f'<lex comment="{comment}" lid="Id{i}">{text}</lex>'
        for i, (comment, text) in enumerate(lexes)
    )
    head = f'<entry category="{category}" eid="Id1" size="{len(triples)}">'
    return f"{head}<modifiedtripleset>{mtriples}</modifiedtripleset>{lex}</entry>"


@pytest.fixture
def webnlg_dir(tmp_path):
    airport = _webnlg_entry(
        "Airport",
        ["Agra_Airport | location | India"],
        [("good", "Agra Airport is in India."), ("toFix", "Agra is airport India.")],
    )
    two = _webnlg_entry("Airport", ["A | b | C", "C | d | E"], [("good", "A b C, which d E.")])
    athlete = _webnlg_entry("Athlete", ["Ace | club | Team"], [("good", "Ace plays for Team.")])
    files = {
        "train/2triples/2triples_Airport_train_challenge.xml": [two],
        "train/1triples/1triple_allSolutions_Airport_train_challenge.xml": [airport],
        "test/testdata_with_lex.xml": [airport, athlete],
    }
    for path, entries in files.items():
        _write(tmp_path / path, f"<benchmark><entries>{''.join(entries)}</entries></benchmark>")
    return tmp_path


@pytest.mark.parametrize(
    "split, sources, references, seen",
    [
        ("train", ["Agra_Airport : location : India", "A : b : C | C : d : E"],
         ["Agra Airport is in India.", "A b C, which d E."], [True, True]),
        ("test_seen", ["Agra_Airport : location : India"], ["Agra Airport is in India."], [True]),
        ("test_unseen", ["Ace : club : Team"], ["Ace plays for Team."], [False]),
    ],
)  # fmt: skip
def test_webnlg_xml(webnlg_dir, split, sources, references, seen):
    """1triples before 2triples, toFix lexicalizations dropped, unseen categories split off."""
    dataset = load_nlg("webnlg", split, webnlg_dir)
    assert (dataset["source"], dataset["reference"], dataset["seen"]) == (sources, references, seen)


def test_webnlg_dir_env_is_the_default(webnlg_dir, monkeypatch):
    monkeypatch.setenv("WEBNLG_DIR", str(webnlg_dir))
    assert len(load_nlg("webnlg", "test")) == 2


def test_webnlg_malformed_triple(tmp_path):
    entry = _webnlg_entry("Airport", ["Agra_Airport | location"], [("good", "Agra.")])
    _write(
        tmp_path / "test/testdata_with_lex.xml",
        f"<benchmark><entries>{entry}</entries></benchmark>",
    )
    with pytest.raises(
        ValueError, match=r"testdata_with_lex\.xml, entry Id1: triple 'Agra_Airport \| location'"
    ):
        load_nlg("webnlg", "test", tmp_path)


def test_webnlg_broken_xml(tmp_path):
    _write(tmp_path / "test/testdata_with_lex.xml", "<benchmark><entries>")
    with pytest.raises(ValueError, match=r"testdata_with_lex\.xml: not well-formed XML"):
        load_nlg("webnlg", "test", tmp_path)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("mr,text\n\"name[A]\",A.\n", r"trainset\.csv: expected the columns \['mr', 'ref'\], found \['mr', 'text'\]"),
        ("mr,ref\n\"name[A], food[B]\",A.\nname A,B.\n", r"trainset\.csv, data row 2: meaning representation 'name A'"),
        ("mr,ref\n\"name[A]\",A.\n\"name[B]\",\n", r"trainset\.csv, data row 2: the reference is empty"),
    ],
)  # fmt: skip
def test_e2e_malformed(tmp_path, content, pattern):
    _write(tmp_path / "trainset.csv", content)
    with pytest.raises(ValueError, match=pattern):
        load_nlg("e2e", "train", tmp_path)


def test_e2e_limit_and_env_default(tmp_path, monkeypatch):
    _write(
        tmp_path / "devset.csv",
        'mr,ref\n"name[A], near[B]",A is near B.\n"name[A], near[B]","Near B, A."\n',
    )
    monkeypatch.setenv("E2E_DIR", str(tmp_path))
    assert load_nlg("e2e", "validation", limit=1)[:] == {
        "source": ["name : A | near : B"],
        "reference": ["A is near B."],
    }


@pytest.mark.parametrize(
    "task, split, data_dir, error, pattern",
    [
        ("e3e", "train", None, ValueError, r"unknown NLG task 'e3e': choose one of e2e, webnlg, dart"),
        ("e2e", "dev", None, ValueError, r"unknown split 'dev' for e2e: choose one of train, validation, test"),
        ("e2e", "test", "{tmp}", FileNotFoundError, r"E2E file not found: .*testset_w_refs\.csv.*E2E_DIR"),
        ("webnlg", "train", "{tmp}", FileNotFoundError, r"WebNLG 2017 file\(s\) not found: .*train.*WEBNLG_DIR"),
        ("webnlg", "test", None, FileNotFoundError, r"webnlg loads from local files only.*set WEBNLG_DIR"),
        ("dart", "train", "{tmp}", ValueError, r"dart has no local-folder loader.*Yale-LILY/dart"),
        ("e2e", "train", None, ConnectionError, r"e2e from the hub .*offline.*set E2E_DIR or pass data_dir"),
        ("dart", "validation", None, ConnectionError,
         r"dart from the hub \(Yale-LILY/dart\).*offline.*no local loader"),
    ],
)  # fmt: skip
def test_errors(tmp_path, monkeypatch, task, split, data_dir, error, pattern):
    for variable in ("E2E_DIR", "WEBNLG_DIR"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(error, match=pattern):
        load_nlg(task, split, data_dir and data_dir.format(tmp=tmp_path))


def test_group_references_in_first_seen_order():
    from datasets import Dataset

    pairs = Dataset.from_dict(
        {"source": ["b", "a", "b"], "reference": ["b1", "a1", "b2"], "seen": [True, False, True]}
    )
    assert group_references(pairs)[:] == {
        "source": ["b", "a"],
        "references": [["b1", "b2"], ["a1"]],
        "seen": [True, False],
    }


# --- encoding for GPT-2 -------------------------------------------------------------------


@pytest.fixture
def gpt2_tokenizer(shared_data):
    return load_gpt2_tokenizer(shared_data / "tokenizers/gpt2")


SOURCE = "name : Alimentum | area : city centre | family friendly : no"
REFERENCE = "Alimentum is not a family-friendly place in the city centre."


def test_the_tokenizer_is_real_gpt2(gpt2_tokenizer):
    assert len(gpt2_tokenizer) == 50_257 and gpt2_tokenizer.eos_token_id == 50_256
    assert gpt2_tokenizer.encode("Hello world") == [15496, 995]


def test_label_mask_covers_exactly_the_reference_and_eos(gpt2_tokenizer):
    encoded = encode_pair(SOURCE, REFERENCE, gpt2_tokenizer)
    source_ids = gpt2_tokenizer.encode(SOURCE)
    reference_ids = gpt2_tokenizer.encode(" " + REFERENCE)  # the authors' leading space
    eos = gpt2_tokenizer.eos_token_id
    assert encoded["input_ids"] == source_ids + [eos] + reference_ids + [eos]
    assert encoded["labels"] == [IGNORE_INDEX] * (len(source_ids) + 1) + reference_ids + [eos]
    assert encoded["attention_mask"] == [1] * len(encoded["input_ids"])
    scored = [
        t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE_INDEX
    ]
    assert gpt2_tokenizer.decode(scored) == " " + REFERENCE + "<|endoftext|>"
    assert encode_prompt(SOURCE, gpt2_tokenizer) == source_ids + [eos]


def test_max_length_keeps_the_head(gpt2_tokenizer):
    full = encode_pair(SOURCE, REFERENCE, gpt2_tokenizer)
    cut = encode_pair(SOURCE, REFERENCE, gpt2_tokenizer, max_length=20)
    assert cut == {key: values[:20] for key, values in full.items()}


def test_tokenize_nlg_matches_encode_pair(shared_data, gpt2_tokenizer):
    pairs = load_nlg("e2e", "train", shared_data / "e2e", limit=32)
    encoded = tokenize_nlg(pairs, gpt2_tokenizer, max_length=40)
    assert encoded.column_names == ["input_ids", "attention_mask", "labels"]
    for row in (0, 17, 31):
        assert encoded[row] == encode_pair(
            pairs[row]["source"], pairs[row]["reference"], gpt2_tokenizer, 40
        )


def test_tokenizer_folder_must_hold_both_files(tmp_path):
    _write(tmp_path / "vocab.json", "{}")
    with pytest.raises(FileNotFoundError, match=r"lacks \['merges\.txt'\]"):
        load_gpt2_tokenizer(tmp_path)


# --- subsets: first rows or rows spread through the release ---------------------------------


@pytest.mark.parametrize(
    "limit, spread, kept",
    [
        (None, False, list(range(10))),
        (3, False, [0, 1, 2]),
        (3, True, [0, 3, 6]),
        (5, True, [0, 2, 4, 6, 8]),
        (20, True, list(range(10))),
    ],
)  # fmt: skip
def test_take_first_or_spread(limit, spread, kept):
    rows = datasets.Dataset.from_dict({"i": list(range(10))})
    assert take(rows, limit, spread)["i"] == kept


def test_real_webnlg_limit_spreads_over_sizes_and_categories(shared_data):
    """The release is sorted by size and category: the first 200 pairs are all 1-triple Airport
    entries, 200 spread pairs cover every size and category."""
    pairs = load_nlg("webnlg", "train", shared_data / "webnlg_2017", limit=200)
    sizes = {source.count(" | ") + 1 for source in pairs["source"]}
    assert sizes == set(range(1, 8))
    assert set(pairs["category"]) == set(WEBNLG_SEEN_CATEGORIES)


def test_real_webnlg_spread_test_subset_has_seen_and_unseen(shared_data):
    items = group_references(load_nlg("webnlg", "test", shared_data / "webnlg_2017"))
    assert set(take(items, 128, spread=True)["seen"]) == {True, False}
    assert set(take(items, 128)["seen"]) == {True}  # why the first rows would not do
