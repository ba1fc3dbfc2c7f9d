"""Sweeps through Hydra multirun with our resuming sweeper: only missing or failed runs launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from lora_repro.config import resolve
from lora_repro.train import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path, *overrides):
    command = [sys.executable, "-m", "lora_repro.train", "-m", "experiment=demo_sweep",
               f"run_root={tmp_path}/runs", f"hydra.sweep.dir={tmp_path}/multirun",
               "train.num_threads=1", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def statuses(tmp_path, experiment="demo_sweep"):
    return sorted(json.loads(p.read_text())["status"]
                  for p in (tmp_path / "runs" / experiment).glob("*/record.json"))


@pytest.fixture(autouse=True)
def glue_dir(shared_data, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))


def test_second_invocation_launches_nothing(tmp_path):
    first = sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "sweep: 4 jobs, 0 already done, 4 to run" in first.stdout
    assert statuses(tmp_path) == ["done"] * 4
    second = sweep(tmp_path)
    assert second.returncode == 0
    assert "sweep: 4 jobs, 4 already done, 0 to run" in second.stdout
    assert "Launching" not in second.stdout + second.stderr


@pytest.mark.parametrize("launcher", [
    [],  # Hydra's basic launcher: one job at a time, in process
    ["hydra/launcher=local", "hydra.launcher.n_jobs=2"],  # make's default: 1-thread jobs side by side
])
def test_a_failing_job_leaves_a_failed_record_and_is_the_only_one_rerun(tmp_path, launcher):
    # rank 64 exceeds tiny BERT's hidden size 32: those two jobs fail, the other two finish
    result = sweep(tmp_path, "method.rank=1,64", *launcher)
    assert result.returncode != 0
    assert statuses(tmp_path) == ["done", "done", "failed", "failed"]
    failed = [json.loads(p.read_text()) for p in (tmp_path / "runs/demo_sweep").glob("*/record.json")]
    assert all("rank 64" in r["error"] for r in failed if r["status"] == "failed")
    again = sweep(tmp_path, "method.rank=1,64", *launcher)
    assert "sweep: 4 jobs, 2 already done, 2 to run" in again.stdout


def test_tier_picks_the_experiments_sweep_and_the_command_line_wins(tmp_path):
    result = sweep(tmp_path, "seed=7")
    assert "sweep: 2 jobs" in result.stdout  # ranks 1,2 x the one seed given
    assert result.returncode == 0


def test_an_identical_run_of_another_experiment_is_reused(tmp_path):
    assert sweep(tmp_path).returncode == 0
    other = sweep(tmp_path, "experiment_name=other")
    assert "sweep: 4 jobs, 4 already done, 0 to run" in other.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs/other").glob("*/record.json")]
    assert len(records) == 4 and all(r["reused_from"] and r["experiment"] == "other" for r in records)
    assert all((Path(r["run_dir"]) / "adapter.safetensors").is_file() for r in records)


def test_a_twin_without_its_weights_is_not_reused(tmp_path):
    """A clone holds records without the weights (out of git): copying such a twin would give a
    run the Section 7 analysis cannot read, so it trains again (and plan says missing)."""
    from lora_repro import plan, records

    assert sweep(tmp_path).returncode == 0
    runs = sorted((tmp_path / "runs").glob("*/*/record.json"))
    (runs[0].parent / "adapter.safetensors").unlink()
    def twin_of(path):
        return tmp_path / "runs" / "other" / path.parent.name

    assert records.finished_twin(twin_of(runs[0])) is None
    assert records.finished_twin(twin_of(runs[1])) == runs[1].parent
    assert plan.status_of({"run_dir": str(twin_of(runs[0])), "run_id": runs[0].parent.name}) == "missing"
    other = sweep(tmp_path, "experiment_name=other")
    assert "sweep: 4 jobs, 3 already done, 1 to run" in other.stdout
    assert (twin_of(runs[0]) / "adapter.safetensors").is_file()  # trained again


def first_of_each(params: dict) -> list[str]:
    """One job of a sweep: the first value of every swept key."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [f"{o.get_key_element()}="
            + (next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str())
            for o in parsed]


def test_every_experiment_composes_for_both_tiers(tmp_path):
    """The experiment files compose, and a job of each sweep resolves, for each tier (no training)."""
    experiments = sorted(p.stem for p in (ROOT / "conf/experiment").glob("*.yaml"))
    assert {"table_rank", "table_targets", "table_glue", "table_e2e", "subspace"} <= set(experiments)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for name in experiments:
            for tier in ("quick", "paper"):
                cfg = compose("config", overrides=[f"experiment={name}", f"tier={tier}"],
                              return_hydra_config=True)
                if tier not in cfg.hydra.sweeper.tiers:  # tiny demos, the quick tier's grid
                    assert name in ("demo_sweep", "lr_grid"), (name, tier)
                    continue
                params = {**(cfg.hydra.sweeper.params or {}), **cfg.hydra.sweeper.tiers.get(tier, {})}
                assert params, (name, tier)
                job = [f"experiment={name}", f"tier={tier}", *first_of_each(params)]
                run = resolve(compose("config", overrides=job))
                assert run["experiment"] == cfg.experiment_name and run["tier"] == tier


@pytest.mark.parametrize("experiment, lora_jobs", [("table_rank", 15), ("table_targets", 7)])
def test_the_head_only_control_runs_once_per_setting(experiment, lora_jobs):
    """Tables 5 and 6 sweep LoRA settings; the control (the task head alone) runs once per model,
    task and seed, without the sweep's method fields; the paper tier has no control values."""
    from lora_repro.plan import expand

    jobs = expand([f"experiment={experiment}", "tier=quick", "seed=0,1"])
    controls = [job for job in jobs if "method=head_only" in job]
    assert len(jobs) == 2 * lora_jobs + 2 and len(controls) == 2
    assert sorted(o for job in controls for o in job if o.startswith("seed=")) == ["seed=0", "seed=1"]
    assert not [o for job in controls for o in job if o.lstrip("+").startswith(("method.", "target_set"))]
    assert not [job for job in expand([f"experiment={experiment}", "tier=paper"]) if "method=head_only" in job]


def test_table_glue_runs_its_baselines_on_the_first_seed_and_the_control_on_each():
    """Table 2's quick tier: LoRA and full FT on every seed (claim 6 uses them), the baselines on
    the first seed and only where the tier has settings (SST-2, MRPC), head-only on every seed."""
    from collections import Counter

    from lora_repro.plan import expand

    jobs = expand(["experiment=table_glue", "tier=quick"])
    def pick(job, key):
        return next(o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key)

    seeds = Counter((pick(job, "method"), pick(job, "seed")) for job in jobs)
    tasks = {(pick(job, "method"), pick(job, "task")) for job in jobs}
    for method in ("lora", "full_ft", "head_only"):
        assert [seeds[(method, s)] for s in "012"] == [4, 4, 4], method  # SST-2, MRPC, RTE, STS-B
    for method in ("bitfit", "adapter_h", "prefix_layer", "ft_top2"):
        assert [seeds[(method, s)] for s in "012"] == [2, 0, 0], method
        assert (method, "rte") not in tasks and (method, "stsb") not in tasks
    assert len(jobs) == 3 * 12 + 8 * 2


@pytest.mark.parametrize("jobs, kept", [
    ([["method=lora", "seed=1"], ["method=bitfit", "seed=1"], ["method=bitfit", "seed=2"]], [0, 1]),
    ([["method=bitfit", "seed=5"], ["method=lora", "seed=0"], ["method=bitfit", "seed=0"]], [0, 1]),
    ([["method=bitfit"], ["method=lora"]], [0, 1]),  # no seed swept: nothing to thin
    ([["method=lora", "task=e2e", "seed=0"], ["method=lora", "task=webnlg", "seed=0"],
      ["method=lora", "task=e2e", "seed=1"], ["method=lora", "task=webnlg", "seed=1"]], [0, 1, 2]),
])
def test_keep_first_seed(jobs, kept):
    from lora_repro.plan import keep_first_seed

    assert keep_first_seed(jobs, ["bitfit", "task=webnlg"]) == [jobs[i] for i in kept]
    assert keep_first_seed(jobs, []) == jobs


def test_table_e2e_runs_webnlg_and_the_zero_shot_control_once_and_the_baselines_once_on_e2e():
    from lora_repro.plan import expand

    jobs = expand(["experiment=table_e2e", "tier=quick"])
    zero = [job for job in jobs if "method=zero_shot" in job]
    assert len(zero) == 2 and all("seed=0" in job for job in zero)  # E2E and WebNLG
    baselines = [job for job in jobs if any(f"method={m}" in job for m in
                                            ("ft_top2", "adapter_l", "adapter_h", "prefix_layer"))]
    assert len(baselines) == 4 and all("seed=0" in job and "task=e2e" in job for job in baselines)
    webnlg = [job for job in jobs if "task=webnlg" in job]
    assert len(webnlg) == 3 and all("seed=0" in job for job in webnlg)  # LoRA, full FT, zero-shot
    assert len(jobs) == 2 * 3 + 2 + 2 + 4   # E2E: LoRA, full FT x 3 seeds; WebNLG: once; controls; baselines


@pytest.mark.parametrize("files, parameters, expected", [
    (["adapter.safetensors"], {"trainable": 10}, True),
    (["model.safetensors"], {"trainable": 10}, True),
    ([], {"trainable": 10}, False),        # a clone: the record without its weights
    ([], {"trainable": 0}, True),          # the zero-shot control trains nothing
    (["record.json"], None, False),
])
def test_has_weights(tmp_path, files, parameters, expected):
    from lora_repro.records import has_weights

    for name in files:
        (tmp_path / name).write_text("x")
    assert has_weights(tmp_path, {"parameters": parameters}) is expected
