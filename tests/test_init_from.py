"""The paper's MNLI stage end to end on tiny models: MRPC starts from the MNLI run of its seed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_repro import cli, lora
from lora_repro.records import read_record

ROOT = Path(__file__).resolve().parents[1]
STAGED = """
tiny_bert:
  lora:
    _all: {lr: 1.0e-3, batch_size: 8, epochs: 1, train_limit: 24, eval_limit: 16, max_seq_length: 24,
           targets: [q, v], rank: 2, alpha: 4}
    mnli: {}
    mrpc: {init_from: mnli, lr: 1.0e-12, warmup_ratio: 0.0}  # lr ~ 0: what it started from stays
  full_ft:
    _all: {lr: 1.0e-4, batch_size: 8, epochs: 1, train_limit: 24, eval_limit: 16, max_seq_length: 24}
    mnli: {}
    mrpc: {init_from: mnli}
"""


@pytest.fixture
def staged(tmp_path, shared_data, monkeypatch):
    """A GLUE folder with an MNLI-shaped task (RTE's pairs relabelled into three classes) and a
    hyperparameter table whose tiny BERT MRPC starts from MNLI, as the paper tier's does."""
    glue = tmp_path / "glue"
    (glue / "MNLI").mkdir(parents=True)
    shutil.copytree(shared_data / "glue" / "MRPC", glue / "MRPC")
    labels = ("entailment", "neutral", "contradiction")
    rows = (shared_data / "glue" / "RTE" / "train.tsv").read_text().splitlines()[1:61]
    lines = ["index\tsentence1\tsentence2\tgold_label"]
    lines += [f"{i}\t{r.split(chr(9))[1]}\t{r.split(chr(9))[2]}\t{labels[i % 3]}" for i, r in enumerate(rows)]
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (glue / "MNLI" / name).write_text("\n".join(lines) + "\n")
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf" / "hparams", conf / "hparams")
    with open(conf / "hparams" / "paper.yaml", "a") as f:
        f.write(STAGED)
    monkeypatch.setenv("GLUE_DIR", str(glue))
    monkeypatch.setenv("LORA_REPRO_CONF", str(conf))
    return tmp_path


def records(root):
    return {r["task"]: r for r in (json.loads(p.read_text()) for p in root.glob("runs/*/*/record.json"))}


def test_a_missing_mnli_run_is_an_error_not_a_pretrained_start(staged, capsys):
    code = cli.main(["train", "model=tiny_bert", "task=mrpc", "tier=paper", "logger=none",
                     "train.progress=false", f"run_root={staged}/runs"])
    err = capsys.readouterr().err
    assert code != 0 and "init_from=mnli" in err and "missing" in err and "task=mnli" in err
    assert not list(staged.glob("runs/**/record.json"))


@pytest.mark.parametrize("method", ["lora", "full_ft"])
def test_a_sweep_runs_mnli_first_then_mrpc_from_it(staged, method):
    command = [sys.executable, "-m", "lora_repro.train", "-m", "model=tiny_bert", "task=mrpc,mnli",
               "tier=paper", f"method={method}", "logger=none", "train.progress=false", "train.num_threads=1",
               f"run_root={staged}/runs", f"hydra.sweep.dir={staged}/multirun"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 to run (1 in a second stage" in first.stdout
    found = records(staged)
    mnli, mrpc = found["mnli"], found["mrpc"]
    assert mnli["status"] == mrpc["status"] == "done"
    assert mrpc["init_from"]["task"] == "mnli" and mrpc["init_from"]["run_id"] == mnli["run_id"]
    assert "fresh task head" in mrpc["init_from"]["loaded"]
    assert mnli["init_from"] is None
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 jobs, 2 already done, 0 to run" in again.stdout


def test_lora_starts_from_the_mnli_factors_with_a_fresh_head(staged):
    """With lr ~ 0 (the table above) the MRPC run's factors are the trained MNLI run's."""
    base = ["model=tiny_bert", "tier=paper", "logger=none", "train.progress=false", f"run_root={staged}/runs"]
    assert cli.main(["train", *base, "task=mnli"]) == 0
    assert cli.main(["train", *base, "task=mrpc"]) == 0
    found = records(staged)
    source, target = lora.read_factors(found["mnli"]["run_dir"]), lora.read_factors(found["mrpc"]["run_dir"])
    assert set(source) == set(target)
    for key, (A, B, _) in source.items():
        torch.testing.assert_close(target[key][0], A, atol=1e-6, rtol=0)
        torch.testing.assert_close(target[key][1], B, atol=1e-6, rtol=0)
        assert B.abs().max() > 0  # MNLI trained them
    assert read_record(found["mrpc"]["run_dir"])["init_from"]["run_dir"] == found["mnli"]["run_dir"]
