"""The paper's hyperparameters as data, and the resolver that picks them for one run.

    from lora_repro.hparams import resolve, describe
    resolve("paper", "roberta_base", "sst2", "lora")            # Table 9 as printed
    resolve("paper", "roberta_base", "sst2", "lora", "authors_scripts")  # the official scripts
    print(describe("quick", "minilm_l6", "mrpc", "lora")["sources"])     # where each value came from

Tables live in conf/hparams/ (or $LORA_REPRO_CONF/hparams/):

- one file per tier: ``paper.yaml`` (Tables 9, 10, 11 of Hu et al. 2021, plus documented full
  fine-tuning settings) and ``quick.yaml`` (the CPU tier);
- one file per preset that overlays a tier with differences only: ``authors_scripts.yaml`` (the
  official microsoft/LoRA scripts where they disagree with the paper's text);
- a tier file may also define presets of its own under a top-level ``_presets`` key
  (``paper.yaml`` defines ``houlsby_setup``, the paper's dagger rows).

Every table has the same shape: ``model -> method -> task -> fields``, with an ``_all`` entry at
each level (the top level too) holding fields shared below it. For one run the layers are merged
in this order, later ones winning field by field:

    tier: _all, model/_all, model/method/_all, model/method/task   (the task entry must exist)
    preset: the same four levels, where present

A ``null`` in a later layer removes the field set by an earlier one (the trainer's default
applies then). Fields are flat: the train fields (lora_repro/settings.py), the method's own fields
(lora_repro/methods/) and ``init_from``. Other top-level
keys starting with ``_`` are ignored: they hold YAML anchors shared by several entries.
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path

import yaml

TIERS = ("paper", "quick")
# presets kept in a file of their own under conf/hparams/ (name -> file)
PRESET_FILES = {"authors_scripts": "authors_scripts.yaml"}
ALL = "_all"
PRESETS_KEY = "_presets"



def known_fields() -> dict[str, str]:
    """Every field a table may hold: the train fields, every method's fields and init_from (their
    meaning and valid values are written once, in lora_repro/settings.py and lora_repro/methods/)."""
    from lora_repro import methods, settings

    found = {}
    for method in methods.names():
        found.update(settings.table_fields(method))
    return found


def conf_dir() -> Path:
    """The conf/ folder: $LORA_REPRO_CONF if set, else conf/ at the project root."""
    env = os.environ.get("LORA_REPRO_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "conf"


def hparams_dir() -> Path:
    return conf_dir() / "hparams"


@cache
def _load_file(path: str, mtime: float) -> dict:  # mtime: a changed file is read again
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 - a malformed table is bad input: ValueError, as elsewhere
            f"{path}: expected a mapping of model -> method -> task -> fields, "
            f"got {type(data).__name__}")
    return data


def _load(name: str) -> dict:
    path = hparams_dir() / name
    if not path.is_file():
        raise ValueError(f"hyperparameter table {path} not found (set LORA_REPRO_CONF to a conf/ "
                         f"folder that has hparams/{name})")
    # a deep copy: YAML anchors share objects, and callers may change what they get
    return copy.deepcopy(_load_file(str(path), path.stat().st_mtime))


def tier_table(tier: str) -> dict:
    """The tier's table as loaded (without its embedded presets)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: valid tiers are {', '.join(TIERS)}")
    table = _load(f"{tier}.yaml")
    table.pop(PRESETS_KEY, None)
    return table


def presets(tier: str) -> tuple[str, ...]:
    """The presets that can be laid over this tier."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: valid tiers are {', '.join(TIERS)}")
    embedded = _load(f"{tier}.yaml").get(PRESETS_KEY) or {}
    return tuple(PRESET_FILES) + tuple(k for k in embedded if k not in PRESET_FILES)


def _preset_table(tier: str, preset: str) -> tuple[dict, str]:
    valid = presets(tier)
    if preset not in valid:
        raise ValueError(f"unknown preset {preset!r} for tier {tier!r}: valid presets are "
                         f"{', '.join(valid)} (or None for the tier's own values)")
    if preset in PRESET_FILES:
        return _load(PRESET_FILES[preset]), PRESET_FILES[preset]
    return _load(f"{tier}.yaml")[PRESETS_KEY][preset] or {}, f"{tier}.yaml:{PRESETS_KEY}/{preset}"


def entries(tier: str) -> list[tuple[str, str, str]]:
    """Every (model, method, task) the tier has an entry for."""
    table = tier_table(tier)
    found = []
    for model, methods in table.items():
        if model.startswith("_") or not isinstance(methods, dict):
            continue
        for method, tasks in methods.items():
            if method.startswith("_") or not isinstance(tasks, dict):
                continue
            found.extend((model, method, task) for task in tasks if not task.startswith("_"))
    return found


def has_entry(tier: str, model: str, method: str, task: str) -> bool:
    """Whether the tier's table has hyperparameters for this (model, method, task)."""
    return (model, method, task) in entries(tier)


def _fields(node, where: str) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ValueError(f"{where}: expected a mapping of fields, got {node!r}")  # noqa: TRY004
    known = known_fields()
    unknown = [k for k in node if k not in known]
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}: valid fields are {', '.join(known)} "
                         f"(fields are defined in lora_repro/settings.py and lora_repro/methods/)")
    return node


def _layers(table: dict, source: str, model: str, method: str, task: str, required: bool,
            tier: str) -> list[tuple[str, dict]]:
    """(where, fields) for each level of one table that applies to this run, outermost first."""
    layers = [(f"{source}:{ALL}", _fields(table.get(ALL), f"{source}:{ALL}"))]
    model_node = table.get(model)
    method_node = model_node.get(method) if isinstance(model_node, dict) else None
    task_node = method_node.get(task) if isinstance(method_node, dict) else None
    if required and (not isinstance(method_node, dict) or task not in method_node):
        _no_entry(tier, model, method, task)
    if isinstance(model_node, dict):
        where = f"{source}:{model}/{ALL}"
        layers.append((where, _fields(model_node.get(ALL), where)))
    if isinstance(method_node, dict):
        where = f"{source}:{model}/{method}/{ALL}"
        layers.append((where, _fields(method_node.get(ALL), where)))
        if task in method_node:
            where = f"{source}:{model}/{method}/{task}"
            layers.append((where, _fields(task_node, where)))
    return layers


def _no_entry(tier: str, model: str, method: str, task: str):
    have = entries(tier)
    same_model = sorted(f"{m}/{t}" for mo, m, t in have if mo == model)
    if same_model:
        listing = f"for {model} it has {', '.join(same_model)}"
    else:
        models = sorted({mo for mo, _, _ in have})
        listing = f"it has no entry for model {model!r} at all; its models are {', '.join(models)}"
    raise ValueError(f"tier {tier!r} has no hyperparameters for model={model!r}, method={method!r}, "
                     f"task={task!r}: {listing}")


def _check(values: dict, what: str, method: str) -> None:
    """Check the merged values against the train and method schemas (fields of other methods are
    allowed at shared levels and ignored for this one)."""
    from lora_repro import methods, settings

    mine = {k: v for k, v in values.items() if k in settings.table_fields(method)}
    train = {k: v for k, v in mine.items() if k in settings.field_help(settings.TrainConfig)}
    settings.check_fields(train, settings.TrainConfig, f"{what}: train")
    method_values = {k: v for k, v in mine.items() if k in settings.field_help(methods.get(method).config)}
    settings.check_fields(method_values, methods.get(method).config, f"{what}: method")
    if "init_from" in mine and not isinstance(mine["init_from"], str):
        raise ValueError(f"{what}: init_from={mine['init_from']!r} is not valid: a task name")


def describe(tier: str, model: str, task: str, method: str, preset: str | None = None) -> dict:
    """The merged fields and, for each field, the table level it came from.

    Returns {"values": {...}, "sources": {field: "file:model/method/task"}}; a field removed by a
    later null is absent from values and its source names the level that removed it.
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: valid tiers are {', '.join(TIERS)}")
    layers = _layers(tier_table(tier), f"{tier}.yaml", model, method, task, True, tier)
    if preset is not None:
        table, source = _preset_table(tier, preset)
        layers += _layers(table, source, model, method, task, False, tier)
    values, sources = {}, {}
    for where, fields in layers:
        for key, value in fields.items():
            values[key] = copy.deepcopy(value)
            sources[key] = where
    from lora_repro import settings

    values = {k: v for k, v in values.items() if v is not None and k in settings.table_fields(method)}
    _check(values, f"{tier}/{model}/{method}/{task}" + (f" with preset {preset}" if preset else ""), method)
    return {"values": values, "sources": sources}


def resolve(tier: str, model: str, task: str, method: str, preset: str | None = None) -> dict:
    """The hyperparameters for one run: the tier's table, then the preset's differences on top.

    Raises ValueError naming the bad value and the valid choices for an unknown tier or preset,
    or a (model, method, task) the tier has no entry for.
    """
    return describe(tier, model, task, method, preset)["values"]
