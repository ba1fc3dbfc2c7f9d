"""What produced the numbers: the report's provenance sections, from the run records.

- Committed results come from committed code: a record whose git_commit ends in `+dirty` was made
  from a tree with uncommitted changes, so its code cannot be checked out again; the report counts
  those records and lists them in a section of their own.
- Paths are shown relative to the project root, or by the environment variable that named them
  (`$GLUE_DIR`), never as one machine's absolute path.
- A record with `reused_from` is a copy of another experiment's run with the same run_id (the same
  config, not trained again): runs are counted by run_id, and the copies apart.
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone

import pandas as pd

from analysis.tables.formats import markdown_table
from analysis.tables.ours import model_name, task_name
from lora_repro.data.glue import GLUE_DIR_ENV, GLUE_TASKS
from lora_repro.data.nlg import NLG_TASKS
from lora_repro.records import STATUSES, git_commit, load_records, portable_path

DIRTY = "+dirty"
# an absolute POSIX path in free text (not a URL's //, not the tail of a relative or shown path)
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~…$-])/(?:[\w.+@~-]+/)*[\w.+@~-]+")
NOT_DONE = tuple(status for status in STATUSES if status != "done")
LISTED = 20  # runs not done listed by name; the rest counted


shown_path = portable_path  # one rule for records and the report


def without_absolute_paths(text: str) -> str:
    """Every absolute path in the text (error messages, local model folders) as shown_path."""
    return ABSOLUTE_PATH.sub(lambda match: shown_path(match.group()), text)


def data_source(record: dict) -> str:
    """"hub", or the local data folder as shown_path (its variable: GLUE_DIR, E2E_DIR, ...)."""
    data_dir = ((record.get("config") or {}).get("task") or {}).get("data_dir")
    if not data_dir:
        return "hub"
    task = record.get("task")
    env_var = GLUE_DIR_ENV if task in GLUE_TASKS else getattr(NLG_TASKS.get(task), "env_var", None)
    return shown_path(data_dir, env_var)


def machine_label(device: dict) -> str:
    if device.get("device") == "cuda":
        return f"{device.get('gpu_count', 1)} x {device.get('gpu')}"
    threads = f", {device['torch_threads']} torch threads" if device.get("torch_threads") else ""
    return f"CPU {device.get('cpu') or '?'}, {device.get('cpu_count') or '?'} cores{threads}"


def is_copy(record: dict) -> bool:
    return bool(record.get("reused_from"))


def is_dirty(commit) -> bool:
    return str(commit or "").endswith(DIRTY)


def distinct_runs(records: list[dict]) -> list[dict]:
    """One record per run_id: the run itself where it is among the records, else a copy of it."""
    runs = {}
    for record in sorted(records, key=is_copy):
        runs.setdefault(record.get("run_id"), record)
    return list(runs.values())


def provenance(runs_dir) -> str:
    """The "What produced it" section: generator, records, runs and copies, machines, code, data."""
    records = load_records(runs_dir, status=None)
    statuses = Counter(r.get("status") for r in records)
    statuses = {s: statuses.pop(s) for s in ("done", *NOT_DONE) if s in statuses} | statuses
    commit = git_commit() or "unknown"
    lines = [f"- Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
             f"`python -m analysis.cli report` at commit `{commit}`"
             + (" (uncommitted changes)." if is_dirty(commit) else "."),
             f"- Records: {len(records)} under `{shown_path(runs_dir)}` "
             f"({', '.join(f'{n} {status}' for status, n in statuses.items()) or 'none'})."]
    if not records:
        return "\n".join(lines) + "\n- No runs yet: every claim below is 'not run'.\n"
    runs, copies = distinct_runs(records), sum(map(is_copy, records))
    dirty = sum(is_dirty(r.get("git_commit")) for r in records)
    machines = Counter(machine_label(r.get("device") or {}) for r in runs)
    commits = Counter(str(r.get("git_commit")) for r in runs)
    versions = Counter(", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items()
                                 if k in ("torch", "transformers", "peft")) or "not recorded"
                       for r in runs)
    lines += [f"- Runs: {len(runs)} distinct (by run_id); {copies} of the records are reused "
              "copies (`reused_from`: another experiment's run with the same run_id, copied, not "
              "trained again). The counts below are of runs.",
              f"- Uncommitted code: {dirty} of {len(records)} records were made from a tree with "
              f"uncommitted changes (`{DIRTY}`); they are listed under 'Records from uncommitted "
              "code'." if dirty else "- Uncommitted code: none; every record names a clean commit.",
              f"- Machines: {'; '.join(f'{m} ({n} runs)' for m, n in machines.items())}.",
              "- Code of the runs (git commit): "
              + "; ".join(f"`{c}` ({n})" for c, n in commits.items()) + ".",
              f"- Libraries: {'; '.join(f'{v} ({n})' for v, n in versions.items())}.",
              "", markdown_table(summary_table(records))]
    return "\n".join(lines + not_done_lines(records)) + "\n"


def summary_table(records: list[dict]) -> pd.DataFrame:
    """Records per experiment, tier, model, task, data size, epochs, precision and data source:
    how many of each status, how many are reused copies, and which seeds."""
    rows = []
    for r in records:
        hp = r.get("hyperparameters") or {}
        rows.append({"experiment": r.get("experiment"), "tier": r.get("tier"),
                     "model": model_name(r.get("model")), "task": task_name(r.get("task")),
                     "status": r.get("status"), "seed": r.get("seed"), "copy": is_copy(r),
                     "train rows": hp.get("train_limit") or "all",
                     "eval rows": hp.get("eval_limit") or "all", "epochs": hp.get("epochs"),
                     "precision": hp.get("precision"), "data": data_source(r)})
    frame = pd.DataFrame([{k: v if k == "copy" else str(v) for k, v in row.items()}
                          for row in rows])
    keys = ["experiment", "tier", "model", "task", "train rows", "eval rows", "epochs", "precision",
            "data"]
    counts = {status: ("status", lambda s, status=status: int((s == status).sum()))
              for status in ("done", *NOT_DONE)}
    return frame.groupby(keys, sort=True, dropna=False).agg(
        **counts, reused=("copy", "sum"), seeds=("seed", lambda s: " ".join(sorted(set(s)))),
    ).reset_index()


def not_done_lines(records: list[dict]) -> list[str]:
    """The runs without a number (failed, running, interrupted), each with its first error line."""
    not_done = [r for r in records if r.get("status") != "done"]
    if not not_done:
        return []
    lines = [f"Runs not done ({len(not_done)}; each counted beside its missing cell in the "
             "tables):\n"]
    lines += [f"- `{r.get('experiment')}/{r.get('run_id')}` {r.get('status')}: {r.get('model')} "
              f"{r.get('task')} targets={r.get('targets')} r={r.get('rank')} seed={r.get('seed')}"
              + (f": {str(r['error']).splitlines()[0][:200]}" if r.get("error") else "")
              for r in not_done[:LISTED]]
    if len(not_done) > LISTED:
        lines.append(f"- ... and {len(not_done) - LISTED} more")
    return lines


def uncommitted_section(runs_dir) -> str:
    """The records made from uncommitted code, by commit; their numbers cannot be traced to code."""
    records = [r for r in load_records(runs_dir, status=None) if is_dirty(r.get("git_commit"))]
    if not records:
        return "None: every record names a clean commit.\n"
    by_commit = {}
    for r in records:
        by_commit.setdefault(r.get("git_commit"), []).append(r)
    lines = [f"{len(records)} records were made from a tree with uncommitted changes (`{DIRTY}`): "
             "the code that produced them is not in the history, so their numbers cannot be "
             "traced to it.\n"]
    lines += [f"- `{commit}` ({len(group)}): "
              + ", ".join(f"`{r.get('experiment')}/{r.get('run_id')}`"
                          + (" (copy)" if is_copy(r) else "") for r in group)
              for commit, group in by_commit.items()]
    return "\n".join(lines) + "\n"
