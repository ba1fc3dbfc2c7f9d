"""The hyperparameter tables (conf/hparams/*.yaml) and their resolver (lora_repro/hparams.py)."""

from __future__ import annotations

import textwrap

import pytest

from lora_repro import hparams
from lora_repro.models import known_models

GLUE = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
NLG = ("e2e", "webnlg", "dart")
METHODS = ("lora", "full_ft")  # the methods with tier-table rows checked below
from lora_repro import methods as _methods  # noqa: E402

# (tier, model, task, method, preset, field, expected): the numbers the paper / scripts print
NAMED_VALUES = [
    # Table 9, RoBERTa base LoRA
    ("paper", "roberta_base", "sst2", "lora", None, "lr", 5.0e-4),
    ("paper", "roberta_base", "sst2", "lora", None, "batch_size", 16),
    ("paper", "roberta_base", "sst2", "lora", None, "epochs", 60),
    ("paper", "roberta_base", "sst2", "lora", None, "alpha", 8),
    ("paper", "roberta_base", "sst2", "lora", None, "rank", 8),
    ("paper", "roberta_base", "sst2", "lora", None, "targets", ["q", "v"]),
    ("paper", "roberta_base", "sst2", "lora", None, "warmup_ratio", 0.06),
    ("paper", "roberta_base", "sst2", "lora", None, "max_seq_length", 512),
    ("paper", "roberta_base", "sst2", "lora", None, "weight_decay", 0.0),
    ("paper", "roberta_base", "cola", "lora", None, "batch_size", 32),
    ("paper", "roberta_base", "cola", "lora", None, "epochs", 80),
    ("paper", "roberta_base", "mrpc", "lora", None, "lr", 4.0e-4),
    ("paper", "roberta_base", "mrpc", "lora", None, "init_from", "mnli"),
    ("paper", "roberta_base", "rte", "lora", None, "init_from", "mnli"),
    ("paper", "roberta_base", "stsb", "lora", None, "init_from", "mnli"),
    ("paper", "roberta_base", "stsb", "lora", None, "epochs", 40),
    # the scripts: alpha 16 and weight decay 0.1
    ("paper", "roberta_base", "sst2", "lora", "authors_scripts", "alpha", 16),
    ("paper", "roberta_base", "sst2", "lora", "authors_scripts", "weight_decay", 0.1),
    ("paper", "roberta_base", "sst2", "lora", "authors_scripts", "lr", 5.0e-4),  # unchanged
    # Table 9, RoBERTa large LoRA and its dagger rows
    ("paper", "roberta_large", "mnli", "lora", None, "batch_size", 4),
    ("paper", "roberta_large", "mnli", "lora", None, "max_seq_length", 128),
    ("paper", "roberta_large", "mnli", "lora", None, "alpha", 16),
    ("paper", "roberta_large", "stsb", "lora", None, "epochs", 30),
    ("paper", "roberta_large", "stsb", "lora", None, "batch_size", 8),
    ("paper", "roberta_large", "rte", "lora", None, "lr", 4.0e-4),
    ("paper", "roberta_large", "stsb", "lora", "houlsby_setup", "epochs", 10),
    ("paper", "roberta_large", "stsb", "lora", "houlsby_setup", "batch_size", 4),
    ("paper", "roberta_large", "qnli", "lora", "houlsby_setup", "max_seq_length", 128),
    ("paper", "roberta_large", "sst2", "lora", "authors_scripts", "batch_size", 8),
    ("paper", "roberta_large", "sst2", "lora", "authors_scripts", "weight_decay", 0.1),
    # Table 10, DeBERTa XXL LoRA: r = alpha = 8 as printed, 16 / 32 in the scripts
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", None, "rank", 8),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", None, "alpha", 8),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", "authors_scripts", "rank", 16),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", "authors_scripts", "alpha", 32),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", None, "classifier_dropout", 0.15),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", None, "max_seq_length", 256),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", None, "warmup_ratio", 0.1),
    ("paper", "deberta_v2_xxlarge", "mnli", "lora", "authors_scripts", "warmup_steps", 1000),
    ("paper", "deberta_v2_xxlarge", "sst2", "lora", None, "lr", 6.0e-5),
    ("paper", "deberta_v2_xxlarge", "qnli", "lora", None, "batch_size", 6),
    ("paper", "deberta_v2_xxlarge", "stsb", "lora", None, "weight_decay", 0.1),
    ("paper", "deberta_v2_xxlarge", "cola", "lora", "authors_scripts", "lr", 1.3e-4),
    ("paper", "deberta_v2_xxlarge", "rte", "lora", "authors_scripts", "lr", 2.6e-4),
    ("paper", "deberta_v2_xxlarge", "mrpc", "lora", None, "init_from", "mnli"),
    # Table 11, GPT-2 LoRA
    ("paper", "gpt2_medium", "e2e", "lora", None, "length_penalty", 0.9),
    ("paper", "gpt2_medium", "e2e", "lora", "authors_scripts", "length_penalty", 0.8),
    ("paper", "gpt2_large", "e2e", "lora", "authors_scripts", "length_penalty", 0.8),
    ("paper", "gpt2_medium", "e2e", "lora", None, "label_smoothing", 0.1),
    ("paper", "gpt2_medium", "e2e", "lora", None, "beam_size", 10),
    ("paper", "gpt2_medium", "e2e", "lora", None, "no_repeat_ngram_size", 4),
    ("paper", "gpt2_medium", "e2e", "lora", None, "rank", 4),
    ("paper", "gpt2_medium", "e2e", "lora", None, "alpha", 32),
    ("paper", "gpt2_medium", "e2e", "lora", None, "lr", 2.0e-4),
    ("paper", "gpt2_medium", "e2e", "lora", None, "batch_size", 8),
    ("paper", "gpt2_medium", "e2e", "lora", None, "epochs", 5),
    ("paper", "gpt2_medium", "e2e", "lora", None, "warmup_steps", 500),
    ("paper", "gpt2_medium", "e2e", "lora", None, "dropout", 0.1),
    ("paper", "gpt2_medium", "webnlg", "lora", None, "length_penalty", 0.8),
    ("paper", "gpt2_medium", "webnlg", "lora", "authors_scripts", "length_penalty", 0.8),
    ("paper", "gpt2_large", "dart", "lora", None, "label_smoothing", 0.0),
    ("paper", "gpt2_large", "dart", "lora", None, "weight_decay", 0.0),
    ("paper", "gpt2_large", "dart", "lora", None, "dropout", 0.0),
    # full fine-tuning settings (from the RoBERTa paper / fairseq README and Li & Liang)
    ("paper", "roberta_base", "mnli", "full_ft", None, "weight_decay", 0.1),
    ("paper", "roberta_large", "rte", "full_ft", None, "lr", 2.0e-5),
    ("paper", "gpt2_medium", "e2e", "full_ft", None, "lr", 5.0e-5),
    ("paper", "gpt2_medium", "webnlg", "full_ft", None, "batch_size", 6),
    ("paper", "gpt2_medium", "dart", "full_ft", None, "beam_size", 5),
    # the quick tier, measured on this CPU (MiniLM, SST-2)
    ("quick", "minilm_l6", "sst2", "lora", None, "lr", 1.0e-3),
    ("quick", "minilm_l6", "sst2", "lora", None, "rank", 8),
    ("quick", "minilm_l6", "sst2", "lora", None, "alpha", 8),
    ("quick", "minilm_l6", "sst2", "lora", None, "targets", ["q", "v"]),
    ("quick", "minilm_l6", "sst2", "lora", None, "train_limit", 8000),
    ("quick", "minilm_l6", "sst2", "lora", None, "epochs", 3),
    ("quick", "minilm_l6", "sst2", "lora", None, "batch_size", 32),
    ("quick", "minilm_l6", "sst2", "lora", None, "max_seq_length", 128),
    ("quick", "minilm_l6", "sst2", "lora", None, "warmup_ratio", 0.06),
    ("quick", "minilm_l6", "sst2", "lora", None, "lr_schedule", "linear"),
    ("quick", "minilm_l6", "sst2", "lora", None, "optimizer", "adamw"),
    ("quick", "minilm_l6", "sst2", "lora", None, "precision", "bf16"),
    ("quick", "minilm_l6", "sst2", "full_ft", None, "lr", 5.0e-5),
    ("quick", "minilm_l6", "sst2", "full_ft", None, "train_limit", 8000),
    ("quick", "tiny_gpt2", "e2e", "lora", None, "beam_size", 2),
    ("quick", "tiny_gpt2", "e2e", "lora", None, "max_new_tokens", 16),
    ("quick", "tiny_gpt2", "webnlg", "full_ft", None, "train_limit", 32),
]


@pytest.mark.parametrize("tier,model,task,method,preset,field,expected", NAMED_VALUES)
def test_named_values(tier, model, task, method, preset, field, expected):
    values = hparams.resolve(tier, model, task, method, preset)
    assert values[field] == expected
    assert type(values[field]) is type(expected)  # 5e-4 in YAML would be a string


# every (model, task) of the paper's Tables 9, 10, 11
PAPER_LORA = ([("roberta_base", t) for t in GLUE] + [("roberta_large", t) for t in GLUE]
              + [("deberta_v2_xxlarge", t) for t in GLUE]
              + [(m, t) for m in ("gpt2_medium", "gpt2_large") for t in NLG])
PAPER_FULL_FT = ([(m, t) for m in ("roberta_base", "roberta_large") for t in GLUE]
                 + [(m, t) for m in ("gpt2_medium", "gpt2_large") for t in NLG])


@pytest.mark.parametrize("preset", [None, "authors_scripts"])
@pytest.mark.parametrize("model,task", PAPER_LORA)
def test_every_paper_lora_entry_resolves(model, task, preset):
    values = hparams.resolve("paper", model, task, "lora", preset)
    for field in ("lr", "batch_size", "epochs", "rank", "alpha", "targets", "max_seq_length"):
        assert field in values, field
    assert values["targets"] == ["q", "v"]  # the paper adapts W_q and W_v throughout
    assert values["optimizer"] == "adamw" and values["lr_schedule"] == "linear"
    if task in NLG:
        for field in ("beam_size", "length_penalty", "no_repeat_ngram_size", "label_smoothing"):
            assert field in values, field


@pytest.mark.parametrize("model,task", PAPER_FULL_FT)
def test_every_paper_full_ft_entry_resolves(model, task):
    values = hparams.resolve("paper", model, task, "full_ft")
    for field in ("lr", "batch_size", "epochs"):
        assert field in values, field
    assert "rank" not in values and "alpha" not in values


@pytest.mark.parametrize("task", GLUE)
def test_houlsby_setup_is_the_dagger_rows(task):
    """Sequence length 128, batch 4 for every task, and no MNLI start (Table 9, Sec. 5.2)."""
    values = hparams.resolve("paper", "roberta_large", task, "lora", "houlsby_setup")
    assert values["max_seq_length"] == 128 and values["batch_size"] == 4
    assert "init_from" not in values
    plain = hparams.resolve("paper", "roberta_large", task, "lora")
    assert values["lr"] == plain["lr"] and values["alpha"] == plain["alpha"] == 16


def test_init_from_mnli_only_for_mrpc_rte_stsb():
    for model in ("roberta_base", "roberta_large", "deberta_v2_xxlarge"):
        for task in GLUE:
            init = hparams.resolve("paper", model, task, "lora").get("init_from")
            assert init == ("mnli" if task in ("mrpc", "rte", "stsb") else None), (model, task)


def test_authors_scripts_lists_only_differences():
    """Every value the preset sets differs from the paper's (or removes it)."""
    changed = 0
    for model, method, task in hparams.entries("paper"):
        paper = hparams.resolve("paper", model, task, method)
        described = hparams.describe("paper", model, task, method, "authors_scripts")
        for field, source in described["sources"].items():
            if source.startswith("authors_scripts.yaml"):
                changed += 1
                assert described["values"].get(field) != paper.get(field), (model, task, field)
    assert changed > 0


def _lora_params(model: str, rank: int) -> int:
    """2 x layers x (q, v) x d_model x r, the paper's count for W_q and W_v."""
    config = known_models()[model]["config"]
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    width = config.get("hidden_size", config.get("n_embd"))
    return 2 * layers * 2 * width * rank


@pytest.mark.parametrize("model,preset,millions", [
    ("roberta_base", None, 0.3), ("roberta_large", None, 0.8),
    ("deberta_v2_xxlarge", "authors_scripts", 4.7),  # Table 2 prints 4.7M: the scripts' r = 16
])
def test_rank_matches_table2_parameter_counts(model, preset, millions):
    rank = hparams.resolve("paper", model, "mnli", "lora", preset)["rank"]
    assert round(_lora_params(model, rank) / 1e6, 1) == millions


def test_deberta_printed_rank_gives_half_of_table2():
    rank = hparams.resolve("paper", "deberta_v2_xxlarge", "mnli", "lora")["rank"]
    assert round(_lora_params("deberta_v2_xxlarge", rank) / 1e6, 1) == 2.4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", GLUE)
def test_quick_minilm_covers_glue(task, method):
    values = hparams.resolve("quick", "minilm_l6", task, method)
    assert values["precision"] == "bf16"
    for field in ("lr", "batch_size", "epochs"):
        assert field in values
    big = task in ("mnli", "sst2", "qnli", "qqp")
    assert values.get("train_limit") == (8000 if big else None)
    assert values["epochs"] <= 10  # the grids' budget; each task's own count is its grid's choice


@pytest.mark.parametrize("task", GLUE)
def test_quick_methods_share_task_data(task):
    """The same data for every method; learning rate, epochs and batch are each method's own
    (issue 13's protocol: chosen per method and task by the grid)."""
    lora = hparams.resolve("quick", "minilm_l6", task, "lora")
    full = hparams.resolve("quick", "minilm_l6", task, "full_ft")
    for field in ("train_limit", "eval_limit", "max_seq_length"):
        assert lora.get(field) == full.get(field), field


def test_quick_rte_lora_takes_its_grids_choice():
    lora = hparams.resolve("quick", "minilm_l6", "rte", "lora")
    assert "train_limit" not in lora  # all 2,490 rows
    assert (lora["lr"], lora["batch_size"], lora["epochs"]) == (2e-3, 32, 10)


@pytest.mark.parametrize("method, start", [("lora", "stsb"), ("full_ft", None), ("head_only", None)])
def test_quick_rte_starts_each_method_where_its_measurements_chose(method, start):
    """The paper's MNLI stage has no offline data here: STS-B stands in for LoRA (measured better
    than MRPC or the pretrained model); full FT measured best from the pretrained model."""
    assert hparams.resolve("quick", "minilm_l6", "rte", method).get("init_from") == start


def test_quick_mrpc_uses_all_rows_and_the_measured_settings():
    lora = hparams.resolve("quick", "minilm_l6", "mrpc", "lora")
    full = hparams.resolve("quick", "minilm_l6", "mrpc", "full_ft")
    assert "train_limit" not in lora and "train_limit" not in full  # all 3,668 rows
    assert (lora["lr"], lora["batch_size"], lora["epochs"]) == (2e-3, 16, 5)
    assert (full["lr"], full["batch_size"], full["epochs"]) == (5e-5, 32, 6)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta", "tiny_deberta_v2"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", GLUE)
def test_quick_tiny_glue_is_tiny(model, task, method):
    values = hparams.resolve("quick", model, task, method)
    assert values["train_limit"] <= 64 and values["epochs"] == 1 and values["batch_size"] <= 8


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", ["e2e", "webnlg"])
def test_quick_tiny_gpt2(task, method):
    values = hparams.resolve("quick", "tiny_gpt2", task, method)
    assert values["train_limit"] <= 32 and values["beam_size"] == 2
    assert values["max_new_tokens"] == 16


@pytest.mark.parametrize("tier", hparams.TIERS)
def test_table_names_are_the_projects(tier):
    from lora_repro.data.glue import GLUE_TASKS
    from lora_repro.data.nlg import NLG_TASKS

    for model, method, task in hparams.entries(tier):
        assert model in known_models(), model
        assert method in _methods.names(), method
        assert task in GLUE_TASKS or task in NLG_TASKS, task


def test_results_are_independent_copies():
    first = hparams.resolve("paper", "gpt2_medium", "e2e", "lora")
    first["targets"].append("k")
    first["lr"] = 1.0
    again = hparams.resolve("paper", "gpt2_large", "e2e", "lora")  # shares a YAML anchor
    assert again["targets"] == ["q", "v"] and again["lr"] == 2.0e-4


def test_describe_names_the_level_of_each_value():
    d = hparams.describe("paper", "deberta_v2_xxlarge", "mnli", "lora", "authors_scripts")
    assert d["sources"]["rank"] == "authors_scripts.yaml:deberta_v2_xxlarge/lora/_all"
    assert d["sources"]["lr"] == "paper.yaml:deberta_v2_xxlarge/lora/mnli"
    assert d["sources"]["optimizer"] == "paper.yaml:_all"
    # removed by the preset's null: gone from values, its remover named
    assert "warmup_ratio" not in d["values"]
    assert d["sources"]["warmup_ratio"] == "authors_scripts.yaml:deberta_v2_xxlarge/lora/mnli"
    assert d["values"] == hparams.resolve("paper", "deberta_v2_xxlarge", "mnli", "lora",
                                          "authors_scripts")


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (("fast", "roberta_base", "sst2", "lora"), ["'fast'", "paper", "quick"]),
    (("paper", "roberta_base", "sst2", "lora", "nope"), ["'nope'", "authors_scripts", "houlsby_setup"]),
    (("quick", "minilm_l6", "sst2", "lora", "houlsby_setup"), ["'houlsby_setup'", "authors_scripts"]),
    (("paper", "roberta_base", "e2e", "lora"), ["task='e2e'", "lora/sst2", "full_ft/mnli"]),
    (("paper", "gpt2_medium", "sst2", "full_ft"), ["task='sst2'", "full_ft/e2e", "lora/dart"]),
    (("paper", "minilm_l6", "sst2", "lora"), ["'minilm_l6'", "roberta_base", "gpt2_large"]),
    (("paper", "roberta_base", "sst2", "prefix"), ["method='prefix'", "lora/sst2"]),
    (("quick", "tiny_gpt2", "dart", "lora"), ["task='dart'", "lora/e2e", "lora/webnlg"]),
])
def test_errors_name_the_bad_value_and_the_choices(args, needles):
    with pytest.raises(ValueError) as err:
        hparams.resolve(*args)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def _write_conf(root, paper: str, quick: str = "{}", scripts: str = "{}"):
    folder = root / "hparams"
    folder.mkdir(parents=True)
    (folder / "paper.yaml").write_text(textwrap.dedent(paper))
    (folder / "quick.yaml").write_text(textwrap.dedent(quick))
    (folder / "authors_scripts.yaml").write_text(textwrap.dedent(scripts))
    return root


def test_conf_override_and_merge_order(tmp_path, monkeypatch):
    conf = _write_conf(tmp_path / "conf", """
        _all: {lr: 1.0, batch_size: 1, epochs: 1, weight_decay: 0.5}
        m:
          _all: {lr: 2.0, batch_size: 2}
          lora:
            _all: {lr: 3.0}
            t: {lr: 4.0}
            u: {}
        """, scripts="""
        m:
          _all: {epochs: 9}
          lora:
            t: {weight_decay: null}
        """)
    monkeypatch.setenv("LORA_REPRO_CONF", str(conf))
    assert hparams.conf_dir() == conf
    assert hparams.resolve("paper", "m", "t", "lora") == {
        "lr": 4.0, "batch_size": 2, "epochs": 1, "weight_decay": 0.5}
    assert hparams.resolve("paper", "m", "u", "lora")["lr"] == 3.0
    assert hparams.resolve("paper", "m", "t", "lora", "authors_scripts") == {
        "lr": 4.0, "batch_size": 2, "epochs": 9}  # the null removed weight_decay
    assert hparams.resolve("paper", "m", "u", "lora", "authors_scripts")["weight_decay"] == 0.5


@pytest.mark.parametrize("body,needles", [
    ("m: {lora: {t: {lerning_rate: 1.0}}}", ["'lerning_rate'", "lr"]),
    ("m: {lora: {t: {lr: 5e-4}}}", ["lr='5e-4'", "5.0e-4"]),
    ("m: {lora: {t: {targets: [q, x]}}}", ["targets", "q, k, v, o"]),
    ("m: {lora: {t: {precision: fp8}}}", ["precision='fp8'", "bf16"]),
    ("m: {lora: {t: {batch_size: 0}}}", ["batch_size=0", "positive integer"]),
    ("m: {lora: {t: {warmup_ratio: 6}}}", ["warmup_ratio=6", "[0, 1)"]),
])
def test_bad_table_values_are_refused(tmp_path, monkeypatch, body, needles):
    monkeypatch.setenv("LORA_REPRO_CONF", str(_write_conf(tmp_path / "conf", body)))
    with pytest.raises(ValueError) as err:
        hparams.resolve("paper", "m", "t", "lora")
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_missing_conf_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_CONF", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="LORA_REPRO_CONF"):
        hparams.resolve("paper", "roberta_base", "sst2", "lora")


def test_authors_scripts_leaves_the_quick_tier_alone():
    assert hparams.presets("quick") == ("authors_scripts",)
    for model, method, task in hparams.entries("quick"):
        assert (hparams.resolve("quick", model, task, method, "authors_scripts")
                == hparams.resolve("quick", model, task, method))


def test_quick_smollm2_e2e_takes_its_grids_choices():
    lora = hparams.resolve("quick", "smollm2_135m", "e2e", "lora")
    full = hparams.resolve("quick", "smollm2_135m", "e2e", "full_ft")
    assert (lora["lr"], lora["epochs"], full["lr"], full["epochs"]) == (2e-3, 3, 2e-4, 2)
    for field in ("train_limit", "eval_limit", "max_seq_length", "batch_size", "beam_size"):
        assert lora[field] == full[field], field  # the same data and decoding for both
