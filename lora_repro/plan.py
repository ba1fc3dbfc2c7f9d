"""`lora-repro plan`: every job of a sweep resolved, checked and listed, without training.

    lora-repro plan experiment=table_glue tier=paper            # one row per job, then totals
    lora-repro plan --csv experiment=table_rank > jobs.csv       # the same rows as CSV

It expands the overrides exactly as `lora-repro train -m` does (the experiment's sweep for the
tier, the command line winning), resolves each job with the tier's hyperparameters, builds each
distinct (model, method) on the meta device to check that targets exist and ranks fit, and reads
each run's record for its status. The same checks run before `lora-repro train` starts anything.
"""

from __future__ import annotations

import csv
import re
import sys
from functools import cache
from pathlib import Path

from lora_repro import settings
from lora_repro.config import resolve

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
COLUMNS = ("run_id", "model", "task", "method", "targets", "rank", "alpha", "lr", "batch_size", "epochs",
           "max_seq_length", "init_from", "seed", "status")
TRAIN_COLUMNS = ("lr", "batch_size", "epochs", "max_seq_length")
METHOD_COLUMNS = ("targets", "rank", "alpha")


def _field_words(key: str, schema) -> str:
    """What a dotted key (train.lr, method.rank, seed) accepts, from its schema."""
    from dataclasses import is_dataclass

    name = key.rpartition(".")[2]
    if not is_dataclass(schema):
        return ""
    found = settings.fields_of(schema).get(name)
    return f": {found.metadata['valid'].words} ({found.metadata['help']})" if found else ""


def explain(err: Exception) -> str:
    """One line for a Hydra/OmegaConf composition error: the field, the value, what is valid."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = err.__cause__ or err
    if isinstance(err, MissingConfigException) and err.options:
        match = re.search(r"Could not find '([^']+)/([^'/]+)'", str(err))
        if match:
            options = [o for o in err.options if not o.endswith("_schema")]
            return f"{match[1]}={match[2]!r} is not valid: one of {', '.join(options)}"
    if isinstance(cause, ValidationError) and cause.full_key:
        value = re.search(r"Value '([^']*)'", str(cause))
        shown = value[1] if value else "?"
        words = _field_words(cause.full_key, cause.object_type) or ": " + cause.msg.splitlines()[0]
        return f"{cause.full_key}={shown!r} is not valid{words}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        key = re.search(r"override '([^']+)'", str(err)) or re.search(r"Key '([^']+)'", str(err))
        return f"{key[1] if key else cause.full_key} is not a setting of this config ({str(err).splitlines()[0]})"
    return str(err).splitlines()[0]


def _compose(overrides: list[str], hydra_config: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        try:
            return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)
        except Exception as err:  # Hydra's and OmegaConf's own errors: say them in one line
            raise ValueError(explain(err)) from err


def expand(overrides: list[str], multirun: bool = True) -> list[list[str]]:
    """The jobs of `train -m <overrides>`: the experiment's sweep for its tier, the command line
    winning key by key (as the resume sweeper does); a single run without -m."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "+hydra."))]
    if not multirun:
        return [overrides]
    try:
        fixed = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    except Exception as err:  # Hydra's parse errors: one line
        raise ValueError(explain(err)) from err
    cfg = _compose([o.input_line for o in fixed], hydra_config=True)
    sweeper = cfg.hydra.sweeper
    params = dict(sweeper.get("params") or {})
    tiers = sweeper.get("tiers") or {}
    if tiers and cfg.tier not in tiers:
        raise ValueError(f"tier={cfg.tier!r} is not valid for this experiment: it has {', '.join(tiers)}")
    params.update(tiers.get(cfg.tier, {}))
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    swept = [f"{k}={v}" for k, v in params.items() if k.lstrip("+") not in given]
    parsed = OverridesParser.create().parse_overrides(swept + overrides)
    found = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    if sweeper.get("skip_without_hparams"):
        found = drop_jobs_without_hparams(found, _compose)
    found = keep_first_seed(found, list(sweeper.get("one_seed") or []))
    return add_controls(found, list(sweeper.get("controls") or []), _compose)


def keep_first_seed(jobs: list[list[str]], selectors: list[str]) -> list[list[str]]:
    """The jobs, with those a selector matches kept on the sweep's first seed only. A selector is a
    method name (e.g. Table 2's baselines, which no verdict uses) or an override `key=value` (e.g.
    `task=webnlg`: a task whose further seeds no verdict needs)."""
    def value(job: list[str], key: str) -> str | None:
        found = [o.split("=", 1)[1] for o in job if o.lstrip("+~").split("=", 1)[0] == key]
        return found[-1] if found else None

    def selected(job: list[str]) -> bool:
        for selector in selectors:
            key, _, wanted = selector.partition("=") if "=" in selector else ("method", "", selector)
            if value(job, key.lstrip("+~")) == wanted:
                return True
        return False

    seeds = [value(job, "seed") for job in jobs]
    first = next((seed for seed in seeds if seed is not None), None)
    return [job for job, seed in zip(jobs, seeds) if not selected(job) or seed == first]


def add_controls(jobs: list[list[str]], controls: list[str], compose) -> list[list[str]]:
    """The sweep's jobs, then one job per control method (e.g. head_only: what the adapters must
    beat) for each distinct setting of the other overrides: the method's own fields are dropped.
    Controls the tier has no hyperparameters for are left out and named."""
    extra = []
    for job in jobs:
        setting = [o for o in job if not o.lstrip("+~").startswith(("method", "target_set"))]
        for control in controls:
            candidate = setting + [f"method={control}"]
            if candidate not in extra:
                extra.append(candidate)
    return jobs + (drop_jobs_without_hparams(extra, compose) if extra else [])


def drop_jobs_without_hparams(jobs: list[list[str]], compose) -> list[list[str]]:
    """The jobs whose (model, method, task) the tier's table has an entry for; the others are
    named on stderr (an experiment opts in with hydra.sweeper.skip_without_hparams)."""
    from lora_repro.hparams import has_entry

    kept, skipped = [], set()
    for job in jobs:
        cfg = compose(job)
        key = (cfg.model.name, cfg.method.name, cfg.task.name)
        if has_entry(cfg.tier, *key):
            kept.append(job)
        else:
            skipped.add("/".join(key[:2]))
    if skipped:
        print(f"[lora-repro] skipped {len(jobs) - len(kept)} jobs the tier has no hyperparameters for: "
              f"{', '.join(sorted(skipped))}", file=sys.stderr, flush=True)
    return kept


def jobs(overrides: list[str], multirun: bool = True) -> list[dict]:
    """Every job resolved and validated (a one-line ValueError for the first bad one)."""
    return [resolve(_compose(job)) for job in expand(overrides, multirun)]


@cache
def _meta_count(model: str, task_kind: str, method: str, method_items: tuple) -> int:
    """Apply the method to a full-size model built on the meta device: targets exist, ranks fit."""
    from lora_repro import methods
    from lora_repro.models import build_random
    from lora_repro.tasks import HEADS

    head = "sequence_classification" if task_kind == "glue" else "causal_lm"
    built = build_random(model, head=head, meta=True)
    chosen = methods.get(method)
    cfg = chosen.config(**dict((k, _thaw(v)) for k, v in method_items))
    heads = HEADS.get(built.config.model_type, ["classifier"]) if task_kind == "glue" else []
    built = chosen.apply(built, cfg, head_modules=heads, seed=0)
    return chosen.count(built, cfg)


def _freeze(value):
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("__list__", tuple(_freeze(v) for v in value))
    return value


def _thaw(value):
    if isinstance(value, tuple) and value and value[0] == "__dict__":
        return {k: _thaw(v) for k, v in value[1]}
    if isinstance(value, tuple) and value and value[0] == "__list__":
        return [_thaw(v) for v in value[1]]
    return value


def meta_check(run: dict) -> int:
    """The method's trainable parameters for this job, counted on a meta-device model."""
    items = tuple(sorted((k, _freeze(v)) for k, v in run["method"].items()))
    try:
        return _meta_count(run["model"], run["task_kind"], run["method"]["name"], items)
    except ValueError as err:
        raise ValueError(f"job {run['run_id']} ({run['model']}/{run['task']}/{run['method']['name']}): {err}") from err


def status_of(run: dict) -> str:
    from lora_repro.records import finished_twin, read_record

    record = read_record(run["run_dir"])
    if record is None:  # the same run finished in another experiment counts (it is reused)
        twin = finished_twin(run["run_dir"])
        record = read_record(twin) if twin else None
    if record is None:
        return "missing"
    return {"done": "done", "failed": "failed"}.get(record.get("status"), "missing")


def _preset_changes(run: dict) -> set[str]:
    """The fields whose value the run's preset changed (marked with * in the table)."""
    if not run["preset"]:
        return set()
    from lora_repro import hparams

    base = hparams.resolve(run["tier"], run["model"], run["task"], run["method"]["name"])
    with_preset = hparams.resolve(run["tier"], run["model"], run["task"], run["method"]["name"], run["preset"])
    return {k for k in set(base) | set(with_preset) if base.get(k) != with_preset.get(k)}


def row(run: dict) -> dict:
    init = run["init_from"]
    values = {
        "run_id": run["run_id"], "model": run["model"], "task": run["task"], "method": run["method"]["name"],
        "targets": ",".join(run["method"].get("targets") or []),
        "rank": run["method"].get("rank"), "alpha": run["method"].get("alpha"),
        **{k: run["train"][k] for k in TRAIN_COLUMNS},
        "init_from": (f"{init['task']}:{init['run_id']}" if init and init["task"] else init["run_dir"] if init else ""),
        "seed": run["seed"], "status": status_of(run),
    }
    return {k: ("" if v is None else v) for k, v in values.items()}


def render(rows: list[dict], marks: list[set[str]], preset: str | None) -> str:
    cells = [[f"{r[c]}*" if c in m else str(r[c]) for c in COLUMNS] for r, m in zip(rows, marks)]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    if any(marks):
        lines.append(f"* set by preset {preset} (differs from the tier's table)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    as_csv = "--csv" in argv
    overrides = [a for a in argv if a not in ("--csv", "-m", "--multirun")]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    runs = jobs(overrides)
    counts = {run["run_id"]: meta_check(run) for run in runs}
    rows = [row(run) for run in runs]
    to_run = sum(r["status"] != "done" for r in rows)
    totals = (f"jobs: {len(rows)}, done: {len(rows) - to_run}, to run: {to_run}; trainable parameters "
              f"per job (meta-device check): {min(counts.values()):,} to {max(counts.values()):,}")
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        print(totals, file=sys.stderr)
    else:
        print(render(rows, [_preset_changes(run) for run in runs], runs[0]["preset"] if runs else None))
        print(totals)
    return 0
