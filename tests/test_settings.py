"""One typed home per setting: bad values stop in one line, before any record; `plan` lists jobs."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from lora_repro import cli, settings
from lora_repro.methods import lora as lora_method

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_bert", "task=sst2", "logger=none", "train.train_limit=16", "train.eval_limit=8",
        "train.epochs=1", "train.batch_size=8", "train.max_seq_length=16"]


@pytest.fixture(autouse=True)
def glue_dir(shared_data, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))


@pytest.mark.parametrize("override,needles", [
    ("train.lr=abc", ["train.lr='abc'", "a number > 0"]),
    ("train.lr=-1", ["train.lr=-1", "a number > 0"]),
    ("train.batch_size=0", ["train.batch_size=0", "positive integer"]),
    ("train.epochs=0", ["train.epochs=0", "positive integer"]),
    ("train.warmup_ratio=1.5", ["train.warmup_ratio=1.5", "[0, 1)"]),
    ("train.precision=fp8", ["train.precision='fp8'", "bf16"]),
    ("train.max_seq_length=0", ["train.max_seq_length=0", "positive integer"]),
    ("method.rank=0", ["method.rank=0", "positive integer"]),
    ("method.rank=abc", ["method.rank='abc'", "positive integer"]),
    ("method.targets=[q,x]", ["method.targets", "q, k, v, o"]),
    ("method.alpha=0", ["method.alpha=0", "a number > 0"]),
    ("method.scaling=huge", ["method.scaling='huge'", "rslora"]),
    ("method.rank=64", ["rank 64", "1..32"]),  # fits no matrix of tiny BERT: the meta-device check
    ("seed=-1", ["seed=-1", "integer >= 0"]),
    ("seed=abc", ["seed='abc'", "integer"]),
    ("task=nope", ["task='nope'", "sst2"]),
    ("method=nope", ["method='nope'", "lora"]),
    ("train.lerning_rate=1", ["train.lerning_rate", "not a setting"]),
])
def test_a_bad_value_gives_one_line_and_no_record(tmp_path, capsys, override, needles):
    code = cli.main(["train", f"run_root={tmp_path}/runs", *TINY, override])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not list(tmp_path.glob("runs/**/record.json"))


def test_the_command_line_exits_non_zero_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lora_repro.cli", "train", f"run_root={tmp_path}/runs",
                             *TINY, "train.batch_size=0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "[lora-repro] error: train.batch_size=0 is not valid: a positive integer "
        "(training examples per optimizer step)"]
    assert not list(tmp_path.glob("runs/**/record.json"))


def test_every_field_is_documented_and_checked_once():
    for schema in (settings.TrainConfig, settings.ModelConfig, settings.TaskConfig, settings.RunConfig,
                   lora_method.LoRAConfig):
        for name, help_text in settings.field_help(schema).items():
            assert help_text or name in ("model", "task", "method", "train", "logger", "name"), (schema, name)
    from lora_repro import hparams
    assert {"lr", "rank", "targets", "dropout", "init_from", "scaling"} <= set(hparams.known_fields())
    assert "num_threads" not in hparams.known_fields()  # how a run executes is not a table field


def test_plan_lists_table_2_with_table_9_values_and_the_mnli_stage(capsys):
    assert cli.main(["plan", "--csv", "experiment=table_glue", "tier=paper", "model=roberta_base",
                     "method=lora"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["run_id", "model", "task", "method", "targets", "rank", "alpha", "lr", "batch_size",
                             "epochs", "max_seq_length", "init_from", "seed", "status"]
    assert len(rows) == 8 * 5 and "jobs: 40" in err
    by = {(r["task"], r["seed"]): r for r in rows}
    assert (by["mnli", "0"]["lr"], by["mnli", "0"]["batch_size"], by["mnli", "0"]["epochs"]) == ("0.0005", "16", "30")
    assert (by["cola", "0"]["lr"], by["cola", "0"]["batch_size"], by["cola", "0"]["epochs"]) == ("0.0004", "32", "80")
    for task in ("mrpc", "rte", "stsb"):
        for seed in "01234":
            assert by[task, seed]["init_from"] == f"mnli:{by['mnli', seed]['run_id']}"
    for task in ("mnli", "sst2", "cola", "qnli", "qqp"):
        assert by[task, "0"]["init_from"] == ""
    assert {r["status"] for r in rows} == {"missing"}


def test_plan_marks_what_a_preset_changes(capsys):
    assert cli.main(["plan", "model=roberta_base", "task=mnli", "tier=paper", "preset=authors_scripts"]) == 0
    out = capsys.readouterr().out
    assert "16.0*" in out or "16*" in out  # alpha 8 -> 16 in the official scripts
    assert "* set by preset authors_scripts" in out


def test_houlsby_rows_start_from_the_pretrained_model(capsys):
    assert cli.main(["plan", "--csv", "model=roberta_large", "task=mrpc", "tier=paper",
                     "preset=houlsby_setup"]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["init_from"] == ""
