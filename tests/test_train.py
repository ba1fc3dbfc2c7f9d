"""Training end to end on tiny random-init models and real data: records, resume, skip, W&B, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from lora_repro import lora
from lora_repro.config import resolve
from lora_repro.records import read_record
from lora_repro.train import CONF_DIR, train

ROOT = Path(__file__).resolve().parents[1]


def compose_run(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"run_root={tmp_path}/runs", "logger=none",
                                           "train.progress=false", *overrides])
    return resolve(cfg)


@pytest.fixture
def glue_dir(shared_data, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))
    return shared_data / "glue"


TINY = ["model=tiny_bert", "task=sst2", "train.train_limit=48", "train.eval_limit=32",
        "train.batch_size=8", "train.epochs=2", "train.max_seq_length=32", "train.lr=1e-3"]


def test_configs_compose_for_every_model_task_and_method(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", "/nonexistent")
    for model in ("roberta_base", "roberta_large", "deberta_v2_xxlarge"):
        for task in ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"):
            run = compose_run(tmp_path, f"model={model}", f"task={task}", "tier=paper")
            assert run["train"]["lr"] and run["train"]["batch_size"] and run["method"]["rank"]
    for model in ("gpt2_medium", "gpt2_large"):
        for task in ("e2e", "webnlg", "dart"):
            run = compose_run(tmp_path, f"model={model}", f"task={task}", "tier=paper")
            assert run["train"]["beam_size"] == 10 and run["method"]["targets"] == ["q", "v"]
    run = compose_run(tmp_path, "model=minilm_l6", "task=sst2", "method=full_ft")
    assert run["method"] == {"name": "full_ft"} and run["train"]["lr"]


def test_run_id_depends_on_result_fields_only(tmp_path):
    base = compose_run(tmp_path, *TINY)
    assert compose_run(tmp_path, *TINY)["run_id"] == base["run_id"]
    assert compose_run(tmp_path, *TINY, "train.num_threads=1")["run_id"] == base["run_id"]
    assert compose_run(tmp_path, *TINY, "seed=1")["run_id"] != base["run_id"]
    assert compose_run(tmp_path, *TINY, "method.rank=2")["run_id"] != base["run_id"]
    assert compose_run(tmp_path, *TINY, "train.lr=2e-3")["run_id"] != base["run_id"]


def test_glue_run_writes_record_and_adapter(tmp_path, glue_dir):
    run = compose_run(tmp_path, *TINY)
    record = train(run)
    run_dir = Path(run["run_dir"])
    assert record["status"] == "done" and read_record(run_dir)["status"] == "done"
    for key in ("run_id", "experiment", "config", "model", "task", "method", "targets", "rank",
                "alpha", "seed", "tier", "parameters", "epochs", "best_epoch", "best", "wall_time_s",
                "throughput", "peak_memory_mb", "device", "versions", "git_commit"):
        assert key in record, key
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["best"]["primary"] == max(e["primary"] for e in record["epochs"])
    assert 0.0 <= record["best"]["accuracy"] <= 1.0
    assert record["parameters"]["lora"] == 2 * 2 * record["rank"] * (32 + 32)  # layers x {q,v} x r(in+out)
    assert record["parameters"]["trainable"] > record["parameters"]["lora"]  # + head
    assert not (run_dir / "checkpoint.safetensors").exists()
    factors = lora.read_factors(run_dir)
    assert set(factors) == {(i, t) for i in (0, 1) for t in ("q", "v")}
    assert any(torch.count_nonzero(B) > 0 for _, B, _ in factors.values())  # B moved off zero


def test_finished_run_is_skipped(tmp_path, glue_dir, capsys):
    run = compose_run(tmp_path, *TINY)
    train(run)
    record_path = Path(run["run_dir"]) / "record.json"
    stamp = record_path.stat().st_mtime_ns
    again = train(compose_run(tmp_path, *TINY))
    assert "already done" in capsys.readouterr().out
    assert record_path.stat().st_mtime_ns == stamp and again["status"] == "done"


def _train_command(tmp_path, *overrides):
    return [sys.executable, "-m", "lora_repro.train", f"run_root={tmp_path}/runs", "logger=none",
            "train.progress=false", *overrides]


def test_sigkilled_run_resumes_to_the_same_result(tmp_path, glue_dir):
    """Kill -9 mid-epoch; the same command resumes from the checkpoint and ends exactly where an
    uninterrupted run ends (CPU, same seed)."""
    args = [*TINY, "train.train_limit=96", "train.epochs=2", "train.checkpoint_every=2",
            "method.dropout=0.1", "train.num_threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference_run = compose_run(tmp_path / "reference", *args)
    reference = train(reference_run)

    run = compose_run(tmp_path, *args)
    run_dir = Path(run["run_dir"])
    process = subprocess.Popen(_train_command(tmp_path, *args), env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoint = run_dir / "checkpoint.safetensors"
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert checkpoint.exists(), "no checkpoint appeared before the run ended"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_record(run_dir)["status"] == "running"  # killed: nothing claims success

    resumed = subprocess.run(_train_command(tmp_path, *args), env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    record = read_record(run_dir)
    assert record["status"] == "done" and record["resumed"] >= 1
    assert [e["primary"] for e in record["epochs"]] == [e["primary"] for e in reference["epochs"]]
    assert [e["train_loss"] for e in record["epochs"]] == pytest.approx(
        [e["train_loss"] for e in reference["epochs"]], rel=1e-6)
    ours = load_file(str(run_dir / "adapter.safetensors"))
    theirs = load_file(str(Path(reference_run["run_dir"]) / "adapter.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_wandb_offline_logs_and_a_broken_wandb_never_fails_a_run(tmp_path, glue_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    run = compose_run(tmp_path, *TINY, "logger=wandb", "logger.mode=offline", "train.epochs=1")
    record = train(run)
    assert record["status"] == "done"
    offline_runs = list(Path(run["run_dir"]).glob("wandb/offline-run-*"))
    assert offline_runs, "no offline W&B run written"

    import wandb

    def unreachable(*args, **kwargs):
        raise ConnectionError("W&B unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    record = train(compose_run(tmp_path, *TINY, "logger=wandb", "train.epochs=1", "seed=5"))
    assert record["status"] == "done"


# Bad values on the command line: tests/test_settings.py (one line, no traceback, no record).


def test_missing_data_folder_fails_the_record_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "no_glue_here"))
    run = compose_run(tmp_path, *TINY)
    with pytest.raises(FileNotFoundError, match="no_glue_here"):
        train(run)
    record = read_record(Path(run["run_dir"]))
    assert record["status"] == "failed" and "no_glue_here" in record["error"]


def test_malformed_row_fails_the_record(tmp_path, glue_dir, monkeypatch):
    bad = tmp_path / "glue" / "SST-2"
    bad.mkdir(parents=True)
    (bad / "train.tsv").write_text("sentence\tlabel\na fine film\t1\na broken row\tmaybe\n")
    (bad / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "glue"))
    run = compose_run(tmp_path, *TINY)
    with pytest.raises(ValueError, match="maybe"):
        train(run)
    record = read_record(Path(run["run_dir"]))
    assert record["status"] == "failed" and "train.tsv" in record["error"]


def test_nan_loss_stops_the_run(tmp_path, glue_dir):
    run = compose_run(tmp_path, *TINY, "train.lr=1e30", "train.warmup_ratio=0")
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train(run)
    record = read_record(Path(run["run_dir"]))
    assert record["status"] == "failed" and "NaNLossError" in record["error"]


def test_init_from_starts_from_another_runs_factors(tmp_path, glue_dir):
    source = train(compose_run(tmp_path, *TINY, "train.epochs=1"))
    run = compose_run(tmp_path, *TINY, "task=mrpc", "train.epochs=1", f"init_from={source['run_dir']}",
                      "train.lr=1e-12", "train.warmup_ratio=0")
    record = train(run)
    assert record["status"] == "done"
    started, target = lora.read_factors(source["run_dir"]), lora.read_factors(run["run_dir"])
    for key, (A, _, _) in started.items():  # lr ~ 0: the factors are the source's
        torch.testing.assert_close(target[key][0], A, atol=1e-6, rtol=0)


def test_full_fine_tuning_trains_every_weight(tmp_path, glue_dir):
    record = train(compose_run(tmp_path, *TINY, "method=full_ft", "train.epochs=1"))
    assert record["status"] == "done" and record["method"] == "full_ft"
    assert record["parameters"]["trainable"] == record["parameters"]["total"]


def test_stsb_regression_reports_pearson_and_spearman(tmp_path, glue_dir):
    record = train(compose_run(tmp_path, *TINY, "task=stsb", "train.epochs=1"))
    assert {"pearson", "spearman"} <= set(record["best"])


def test_gpt2_e2e_trains_decodes_and_scores(tmp_path, shared_data, monkeypatch):
    """Tiny random-init GPT-2, the real GPT-2 tokenizer, real E2E data: train, beam search, 5 scores."""
    monkeypatch.setenv("E2E_DIR", str(shared_data / "e2e"))
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(shared_data / "tokenizers" / "gpt2"))
    run = compose_run(tmp_path, "model=tiny_gpt2", "task=e2e", "train.train_limit=16",
                      "train.eval_limit=4", "train.epochs=1", "train.batch_size=4",
                      "train.beam_size=2", "train.max_new_tokens=6")
    record = train(run)
    assert record["status"] == "done"
    assert set(record["generation"]) >= {"bleu", "nist", "meteor", "rouge_l", "cider", "samples"}
    assert len(record["generation"]["samples"]) == 4
    assert record["hyperparameters"]["label_smoothing"] == 0.1
    generations = json.loads((Path(record["run_dir"]) / "generations.json").read_text())
    assert generations["split"] == "validation" and len(generations["items"]) == 4
    first = generations["items"][0]
    assert first["output"] == record["generation"]["samples"][0]["output"] and first["references"]


def test_torchrun_ddp_splits_the_batches_and_writes_one_record(tmp_path, glue_dir):
    """Two CPU processes (gloo): each takes half of the epoch's batches; the main one records."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "lora_repro.train",
               f"run_root={tmp_path}/runs", "logger=none", "train.progress=false", *TINY, "train.epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list((tmp_path / "runs").glob("*/*/record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "done"
    assert record["optimizer_steps"] == 48 // 8 // 2  # 48 rows, batch 8, two processes
    assert result.stdout.count("[lora-repro] done") == 1  # only the main process reports


def test_a_glue_run_keeps_its_best_epochs_dev_predictions(tmp_path, glue_dir):
    from lora_repro.records import read_predictions

    record = train(compose_run(tmp_path, *TINY))
    saved = read_predictions(record["run_dir"])
    assert saved["epoch"] == record["best_epoch"]
    split = saved["splits"]["validation"]
    assert len(split["prediction"]) == len(split["label"]) == 32  # eval_limit
    accuracy = sum(p == y for p, y in zip(split["prediction"], split["label"])) / 32
    assert accuracy == pytest.approx(record["best"]["accuracy"])


def test_head_only_control_trains_the_head_alone(tmp_path, glue_dir):
    record = train(compose_run(tmp_path, *TINY, "method=head_only", "train.epochs=1"))
    assert record["status"] == "done" and record["parameters"]["method"] == 0
    assert 0 < record["parameters"]["trainable"] < record["parameters"]["total"] / 10


def test_a_record_holds_no_absolute_machine_path(tmp_path, glue_dir):
    record = train(compose_run(tmp_path, *TINY, "train.epochs=1"))
    assert record["config"]["task"]["data_dir"] == "../shared/data/glue"  # GLUE_DIR, as the project sees it
    saved = (Path(record["run_dir"]) / "record.json").read_text()
    assert str(ROOT.parent) not in saved.replace(str(tmp_path), "")
