"""Run records: one JSON per run, written atomically, that tables and the analysis read.

    python -c "from lora_repro.records import load_records; print(len(load_records('results/runs')))"

A record holds at least: run_id, experiment, status (running | done | failed with the error |
interrupted),
the resolved config, model/task/method/targets/rank/alpha/seed/tier, trainable and total
parameter counts, per-epoch metrics, the best epoch and its metrics, wall time, throughput,
peak memory, device, library versions and the git commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

# What a run folder holds (weights stay local, out of git; everything else is committed)
RECORD_FILE = "record.json"
ADAPTER_FILE = "adapter.safetensors"  # what a parameter-efficient method trained (LoRA, adapters, ...)
WEIGHTS_FILE = "model.safetensors"  # a full fine-tuning run's whole model
PREDICTIONS_FILE = "predictions.json"  # the best epoch's per-example dev predictions (GLUE)
GENERATIONS_FILE = "generations.json"  # every decoded output of an NLG run, beside its input
STATUSES = ("running", "done", "failed", "interrupted")  # interrupted: preempted/stopped, resumes
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def atomic_write(path, write) -> Path:
    """Call write(temp_path) beside `path`, then rename over it: never half a file on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def run_id_of(fields: dict) -> str:
    """A short stable hash of the fields that change a run's result."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:  # never expected (atomic writes), but say where
        raise ValueError(f"corrupt record {path}: {err}") from err


def write_record(run_dir: Path, record: dict) -> None:
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
    atomic_write_json(Path(run_dir) / RECORD_FILE, record)


def load_records(root, experiment: str | None = None, status: str | None = "done") -> list[dict]:
    """Every record under root (results/runs), optionally of one experiment and status."""
    pattern = f"{experiment}/*/{RECORD_FILE}" if experiment else f"*/*/{RECORD_FILE}"
    return _records_at(sorted(Path(root).glob(pattern)), status)


def find_records(root, status: str | None = "done") -> list[dict]:
    """Records at any depth under root: a runs folder, one experiment's folder, or one run."""
    return _records_at(sorted(Path(root).rglob(RECORD_FILE)), status)


def _records_at(paths, status: str | None) -> list[dict]:
    """The records at these record.json paths, of one status (None: any); run_dir: where it is."""
    records = []
    for path in paths:
        record = read_record(path.parent)
        record["run_dir"] = str(path.parent)
        if status is None or record.get("status") == status:
            records.append(record)
    return records


def git_commit() -> str | None:
    """HEAD, with `+dirty` when tracked files outside results/ differ from it: results/ holds what
    the runs and `make table-*` write (records, tables, figures), not code, so a sweep started
    while the tables of the previous one are being rewritten still names a clean commit."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        commit = out.stdout.strip() if out.returncode == 0 else None
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no",
             "--", ".", ":(exclude)results"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return f"{commit}+dirty" if commit and dirty else commit
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "hydra-core", "wandb"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def device_info() -> dict:
    import torch

    info = {"host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    else:
        info["device"] = "cpu"
        info["cpu"] = platform.processor() or platform.machine()
    return info


def has_weights(run_dir, record: dict) -> bool:
    """Whether a finished run still holds what it trained (weights stay local, out of git): the
    file its method saves; a run that trained nothing (the zero-shot control) always does."""
    if (record.get("parameters") or {}).get("trainable") == 0:
        return True
    return any((Path(run_dir) / name).is_file() for name in (ADAPTER_FILE, WEIGHTS_FILE))


def finished_twin(run_dir) -> Path | None:
    """A finished run of another experiment with the same run_id (the same config, so the same
    result) that still has its weights: a copy without them would lose the Section 7 analysis."""
    run_dir = Path(run_dir)
    for path in sorted(run_dir.parent.parent.glob(f"*/{run_dir.name}/{RECORD_FILE}")):
        if path.parent == run_dir:
            continue
        record = json.loads(path.read_text())
        if record.get("status") == "done" and has_weights(path.parent, record):
            return path.parent
    return None


def adopt_twin(run_dir) -> dict | None:
    """Reuse a finished run of another experiment with the same run_id (finished_twin): copy its
    files here with `reused_from` set. Returns the new record, or None."""
    import shutil

    run_dir = Path(run_dir)
    experiment = run_dir.parent.name
    twin = finished_twin(run_dir)
    if twin is not None:
        record = json.loads((twin / RECORD_FILE).read_text())
        run_dir.mkdir(parents=True, exist_ok=True)
        for item in twin.iterdir():
            if item.is_file() and item.name != RECORD_FILE and not item.name.startswith("."):
                shutil.copy2(item, run_dir / item.name)
        record.update(experiment=experiment, run_dir=str(run_dir), reused_from=str(twin))
        write_record(run_dir, record)
        return record
    return None


def portable_path(path, env_var: str | None = None) -> str:
    """A path as a record or report keeps it: relative as given; inside the project or a folder
    beside it (../shared/data) relative to the project root; any other absolute one as $env_var
    when one named it, else only its last part. Records never hold one machine's absolute path."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    relative = os.path.relpath(text, PROJECT_ROOT)
    if not relative.startswith(os.path.join(os.pardir, os.pardir)):
        return Path(relative).as_posix()
    return f"${env_var}" if env_var else f"…/{Path(text).name}"


def portable_config(config: dict) -> dict:
    """The run's config with its local folders (data, tokenizer, weights, run root) made portable."""
    config = json.loads(json.dumps(config, default=str))
    for group, key in (("task", "data_dir"), ("task", "tokenizer_dir"), ("model", "path")):
        node = config.get(group) or {}
        if node.get(key):
            node[key] = portable_path(node[key])
    if config.get("run_root"):
        config["run_root"] = portable_path(config["run_root"])
    return config


def new_record(run: dict) -> dict:
    """The record of a run that starts now: its layout, defined here once (status `running`)."""
    method = run["method"]
    return {
        "run_id": run["run_id"],
        "experiment": run["experiment"],
        "run_dir": run["run_dir"],
        "status": "running",
        "error": None,
        "model": run["model"],
        "task": run["task"],
        "method": method["name"],
        "targets": method.get("targets"),
        "rank": method.get("rank"),
        "ranks": method.get("ranks"),
        "alpha": method.get("alpha"),
        "seed": run["seed"],
        "tier": run["tier"],
        "preset": run["preset"],
        "init_from": run.get("init_from"),  # {task, run_id, run_dir, loaded}: what the run started from
        "hyperparameters": run["train"],
        "method_config": method,
        "config": portable_config(run["config"]),
        "parameters": None,  # {trainable, total, method}: set once the model is built
        "epochs": [],
        "best_epoch": None,
        "best": None,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "device": device_info(),
    }


def read_predictions(run_dir) -> dict | None:
    """The best epoch's per-example dev predictions of a GLUE run: {epoch, splits: {split:
    {prediction: [...], label: [...]}}}, or None for a run that has none (NLG, older runs)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_generations(run_dir) -> dict | None:
    """An NLG run's decoded outputs: {split, items: [{source, output, references}]}, or None for
    a run that has none (GLUE, older runs)."""
    path = Path(run_dir) / GENERATIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
