"""SLURM multiruns through hydra-submitit-launcher, on a real one-node cluster (`pytest -m slurm`).

The cluster (scripts/slurm_cluster.py) runs on loopback with 2 CPUs: a sweep of 4 tiny training
runs goes through `hydra/launcher=slurm`, 2 at a time. A job in the higher-priority `urgent`
partition then preempts the running ones: SLURM sends them USR2, submitit requeues them, and
each run resumes from its checkpoint.safetensors. Every record ends `done`; a second invocation
submits nothing. A sweep with one bad job leaves a `failed` record while the other finishes, and
running it again re-runs only the failed one.

The Debian packages are installed when missing (needs root and apt); when that or the cluster
start fails the cluster tests skip with the reason, unless LORA_REPRO_SLURM_REQUIRED=1 (CI),
which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
LORA_REPRO = [sys.executable, "-m", "lora_repro.cli", "train"]
SWEEP_TIMEOUT_S = 300

BASE = ["experiment=demo_sweep", "logger=none", "train.num_threads=1", "train.progress=false",
        "train.batch_size=8"]
# A tiny job long enough (1000 optimizer steps: ~10 s on an idle core, more on a busy one) to be
# preempted well after its first checkpoint (every 5 steps) and well before its end.
LONG = [*BASE, "train.train_limit=4000", "train.epochs=2", "train.checkpoint_every=5"]
# The test cluster's resources; account/qos null so a developer's local/slurm.yaml cannot leak in.
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.partition=batch", "hydra.launcher.account=null",
            "hydra.launcher.qos=null", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
            "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=3"]


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("slurm_cluster", ROOT / "scripts" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slurm_cluster = _load_cluster_module()


# ---- the launcher config (fast, no cluster) ---------------------------------------------------
def _launcher_cfg(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.sweep.dir=/sweep", *overrides],
                      return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_launcher_config_and_site_override(tmp_path):
    launcher = _launcher_cfg()
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["submitit_folder"] == "/sweep/.submitit/%j"
    assert launcher["name"] == "lora-default"
    assert launcher["max_num_timeout"] >= 1  # requeue after a time-out (else the job just fails)
    assert launcher["additional_parameters"] == {"export": "ALL", "requeue": True}
    assert all(isinstance(line, str) for line in launcher["setup"]), launcher["setup"]  # YAML ': ' trap
    assert any("OMP_NUM_THREADS" in line for line in launcher["setup"])

    # A site file in hydra/launcher/local/slurm.yaml (git-ignored in conf/) wins over the defaults;
    # here it comes from an extra search path so the checkout's own conf/ stays untouched.
    site = tmp_path / "hydra" / "launcher" / "local"
    site.mkdir(parents=True)
    example = (CONF_DIR / "hydra" / "launcher" / "slurm_site.yaml.example").read_text()
    assert "account:" in example and "qos:" in example
    (site / "slurm.yaml").write_text("account: proj42\nqos: high\npartition: gpu\n"
                                     "additional_parameters: {reservation: lora}\n")
    launcher = _launcher_cfg(f"hydra.searchpath=[file://{tmp_path}]")
    assert (launcher["account"], launcher["qos"], launcher["partition"]) == ("proj42", "high", "gpu")
    assert launcher["additional_parameters"] == {"export": "ALL", "requeue": True, "reservation": "lora"}
    assert launcher["cpus_per_task"] == _launcher_cfg()["cpus_per_task"]
    # ... and the command line wins over the site file.
    launcher = _launcher_cfg(f"hydra.searchpath=[file://{tmp_path}]", "hydra.launcher.qos=low")
    assert launcher["qos"] == "low"
    # The committed example works as it is.
    (site / "slurm.yaml").write_text(example)
    launcher = _launcher_cfg(f"hydra.searchpath=[file://{tmp_path}]")
    assert (launcher["account"], launcher["qos"]) == ("my_project", "normal")


# ---- the real cluster -------------------------------------------------------------------------
def _unavailable(reason: str):
    if os.environ.get("LORA_REPRO_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM test cluster required (LORA_REPRO_SLURM_REQUIRED=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    try:
        slurm_cluster.install()
    except slurm_cluster.ClusterError as err:
        _unavailable(f"SLURM packages unavailable: {err}")
    # Not under pytest's tmp dirs: those are private (0700) and munged/mariadbd run as their users.
    folder = tempfile.mkdtemp(prefix="lora-repro-slurm-")
    local = slurm_cluster.LocalSlurm(folder, cpus=2)
    try:
        local.start()
    except slurm_cluster.ClusterError as err:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"SLURM test cluster did not start: {err}")
    print(f"\nSLURM cluster up in {local.startup_s:.1f}s ({folder})")
    try:
        yield local
    finally:
        local.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def job_env(cluster, shared_data):
    env = dict(cluster.env)
    env.update(GLUE_DIR=str(shared_data / "glue"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1")
    env.pop("LORA_REPRO_TRACEBACK", None)
    return env


def _sweep(env, tmp_path, name, *overrides, timeout=SWEEP_TIMEOUT_S):
    cmd = [*LORA_REPRO, "-m", *LAUNCHER, f"run_root={tmp_path}/runs",
           f"hydra.sweep.dir={tmp_path}/{name}", *overrides]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _records(tmp_path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((tmp_path / "runs" / "demo_sweep").glob("*/record.json"))}


def _job_logs(tmp_path, name) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted((tmp_path / name / ".submitit").glob("*/*_log.out")))


def _sacct(env, *args) -> list[list[str]]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", *args], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _running_jobs(env) -> int:
    out = subprocess.run(["squeue", "-h", "-p", "batch", "-t", "R", "-o", "%i"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return len(out.split())


def _jobs_submitted(env) -> int:
    return len(_sacct(env, "-o", "JobID"))


@pytest.mark.slurm
def test_sweep_on_slurm_survives_preemption_and_resubmits_nothing(cluster, job_env, tmp_path):
    started = time.time()
    cmd = [*LORA_REPRO, "-m", *LONG, *LAUNCHER, f"run_root={tmp_path}/runs",
           f"hydra.sweep.dir={tmp_path}/multirun"]
    log = open(tmp_path / "sweep.log", "w")
    sweep = subprocess.Popen(cmd, env=job_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        # Preempt once a run has a checkpoint and every running job is inside train() (its record
        # exists): a USR2 that lands while a job still unpickles its task, before submitit has
        # installed its handler, kills that job instead of requeueing it (see the README).
        # The preemptor: an `urgent` job asking for the whole node.
        runs = tmp_path / "runs" / "demo_sweep"
        deadline = time.time() + 180
        while True:
            assert sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            assert time.time() < deadline, "no run wrote a checkpoint in 180 s"
            checkpointed = {p.parent.name for p in runs.glob("*/checkpoint.safetensors")}
            in_train = sum(json.loads(p.read_text()).get("status") == "running"
                           for p in runs.glob("*/record.json"))
            if checkpointed and in_train >= _running_jobs(job_env):
                break
            time.sleep(0.2)
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", "2", "-J", "urgent",
                                 "-o", f"{tmp_path}/urgent-%j.out", "--wrap", "sleep 1"],
                                env=job_env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        sweep.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        log.close()
    out = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, out[-4000:]
    assert "sweep: 4 jobs, 0 already done, 4 to run" in out
    elapsed = time.time() - started

    # SLURM preempted and requeued the running jobs; the urgent one ran.
    states = _sacct(job_env, "-D", "-o", "JobID,Partition,State")
    assert any(part == "batch" and state in ("REQUEUED", "PREEMPTED") for _, part, state in states), states
    assert any(job == urgent and state == "COMPLETED" for job, _, state in states), states

    records = _records(tmp_path)
    assert len(records) == 4 and all(r["status"] == "done" for r in records.values()), records
    assert all(len(r["epochs"]) == 2 and r["error"] is None for r in records.values())
    assert not list(runs.glob("*/checkpoint.safetensors"))  # removed once done
    resumed = [run_id for run_id in checkpointed if records[run_id].get("resumed", 0) >= 1]
    assert resumed, f"no preempted run resumed: {checkpointed} {[r.get('resumed') for r in records.values()]}"
    logs = _job_logs(tmp_path, "multirun")
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    for run_id in resumed:
        assert f"[lora-repro] resuming {run_id}" in logs
    # The environment reached the jobs (setup lines + --export=ALL).
    assert "cpus=1 OMP_NUM_THREADS=1 " in logs and f"GLUE_DIR={job_env['GLUE_DIR']}" in logs

    # The resumed run ends exactly where an uninterrupted run of the same config ends.
    run_id = resumed[0]
    record = records[run_id]
    reference = subprocess.run(
        [*LORA_REPRO, *LONG, f"run_root={tmp_path}/reference", f"seed={record['seed']}",
         f"method.rank={record['rank']}", f"hydra.run.dir={tmp_path}/reference-hydra"],
        env=job_env, cwd=ROOT, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_record = json.loads((tmp_path / "reference" / "demo_sweep" / run_id / "record.json").read_text())
    assert len(record["epochs"]) == len(ref_record["epochs"])
    for epoch, ref_epoch in zip(record["epochs"], ref_record["epochs"]):
        assert epoch == pytest.approx(ref_epoch), (epoch, ref_epoch)
    assert record["best_epoch"] == ref_record["best_epoch"]
    from safetensors.torch import load_file

    ours, ref = (load_file(str(d / "demo_sweep" / run_id / "adapter.safetensors"))
                 for d in (tmp_path / "runs", tmp_path / "reference"))
    assert ours.keys() == ref.keys()
    for key in ours:
        assert (ours[key] - ref[key]).abs().max().item() <= 1e-6, key

    # A second invocation finds every run done and submits nothing.
    before = _jobs_submitted(job_env)
    again = _sweep(job_env, tmp_path, "multirun-again", *LONG)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep: 4 jobs, 4 already done, 0 to run" in again.stdout + again.stderr
    assert _jobs_submitted(job_env) == before
    assert not (tmp_path / "multirun-again" / ".submitit").exists()
    print(f"\npreemption sweep: {elapsed:.0f}s; resumed runs: {resumed}")


@pytest.mark.slurm
def test_failing_job_leaves_failed_record_and_only_it_reruns(cluster, job_env, tmp_path):
    # rank 999 is larger than tiny BERT's 32 x 32 projections: that job fails inside train().
    small = [*BASE, "train.train_limit=32", "train.epochs=1", "seed=7", "method.rank=1,999"]
    first = _sweep(job_env, tmp_path, "multirun", *small)
    out = first.stdout + first.stderr
    assert first.returncode != 0, out[-3000:]
    assert "sweep: 2 jobs, 0 already done, 2 to run" in out
    records = _records(tmp_path)
    by_rank = {r["rank"]: r for r in records.values()}
    assert by_rank[1]["status"] == "done", by_rank[1]
    assert by_rank[999]["status"] == "failed"
    assert "rank 999" in by_rank[999]["error"] and "ValueError" in by_rank[999]["error"]
    done_mtime = (Path(by_rank[1]["run_dir"]) / "record.json").stat().st_mtime
    # The error is caught in the job (Hydra's JobReturn): both array tasks end normally for SLURM,
    # so the launcher waits for all of them instead of giving up at the first failure.
    ids = [p.name for p in (tmp_path / "multirun" / ".submitit").iterdir() if p.is_dir() and "_" in p.name]
    deadline = time.time() + 60  # sacct may still say RUNNING while a finished task exits
    while True:
        states = _sacct(job_env, "-j", ",".join(ids), "-o", "JobID,State")
        if time.time() > deadline or not any(s in ("PENDING", "RUNNING", "COMPLETING") for _, s in states):
            break
        time.sleep(1)
    assert len(states) == 2 and all(state == "COMPLETED" for _, state in states), states
    before = _jobs_submitted(job_env)

    second = _sweep(job_env, tmp_path, "multirun-again", *small)
    out = second.stdout + second.stderr
    assert second.returncode != 0, out[-3000:]
    assert "sweep: 2 jobs, 1 already done, 1 to run" in out
    assert re.search(r"#0 : method\.rank=999 ", out), out[-3000:]
    assert _jobs_submitted(job_env) == before + 1
    assert (Path(by_rank[1]["run_dir"]) / "record.json").stat().st_mtime == done_mtime
    assert _records(tmp_path)[by_rank[999]["run_id"]]["status"] == "failed"
