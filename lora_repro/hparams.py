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
applies then). Fields are flat; their names and meaning are in ``FIELDS`` below. Other top-level
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

# field -> what it means; the schema is open: add a field here, then use it in the tables
FIELDS = {
    "lr": "peak learning rate",
    "batch_size": "training examples per optimizer step (per device in the authors' scripts)",
    "epochs": "training epochs",
    "max_steps": "stop after this many optimizer steps (overrides epochs for the schedule)",
    "warmup_ratio": "linear warmup over this fraction of the optimizer steps",
    "warmup_steps": "linear warmup over this many optimizer steps (wins over warmup_ratio)",
    "weight_decay": "AdamW decoupled weight decay",
    "lr_schedule": "linear (decay to 0 after warmup) | constant",
    "optimizer": "adamw",
    "max_seq_length": "tokens per training example (longer ones are truncated)",
    "label_smoothing": "label smoothing of the token-level loss",
    "classifier_dropout": "dropout before the classification head (Table 10's 'CLS Dropout')",
    "grad_accum": "batches accumulated per optimizer step",
    "precision": "fp32 | bf16 | fp16 (autocast)",
    "train_limit": "use the first N training rows (null: all)",
    "eval_limit": "evaluate on the first N rows of each eval split (null: all)",
    "eval_batch_size": "examples per evaluation batch",
    "targets": "weight matrices LoRA adapts, a list of q, k, v, o",
    "rank": "LoRA rank r, the same for every target",
    "ranks": "per-target LoRA ranks, e.g. {q: 8, v: 4}",
    "alpha": "LoRA alpha (the update is scaled by alpha / r)",
    "lora_dropout": "dropout on the LoRA branch's input",
    "init_from": "task whose finished run of the same model and method this run starts from",
    "beam_size": "beam search width",
    "length_penalty": "beam search length penalty (exponent on the length)",
    "no_repeat_ngram_size": "forbid repeating n-grams of this size when decoding",
    "max_new_tokens": "most tokens generated per example",
}
_CHOICES = {
    "lr_schedule": ("linear", "constant"),
    "optimizer": ("adamw",),
    "precision": ("fp32", "bf16", "fp16"),
}
_TARGETS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
_POSITIVE_INTS = ("batch_size", "epochs", "max_steps", "max_seq_length", "grad_accum", "train_limit",
                  "eval_limit", "eval_batch_size", "rank", "beam_size", "max_new_tokens")
_NONNEGATIVE_INTS = ("warmup_steps", "no_repeat_ngram_size")
_FRACTIONS = ("warmup_ratio", "label_smoothing", "classifier_dropout", "lora_dropout")
_NONNEGATIVE_NUMBERS = ("weight_decay", "alpha", "length_penalty")


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


def _fields(node, where: str) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ValueError(f"{where}: expected a mapping of fields, got {node!r}")  # noqa: TRY004
    unknown = [k for k in node if k not in FIELDS]
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}: valid fields are "
                         f"{', '.join(FIELDS)} (add new ones to FIELDS in lora_repro/hparams.py)")
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


def _check(values: dict, what: str) -> None:
    def bad(key, expected):
        raise ValueError(f"{what}: {key}={values[key]!r} is not {expected}")

    for key, value in values.items():
        if key in _CHOICES and value not in _CHOICES[key]:
            bad(key, f"one of {', '.join(_CHOICES[key])}")
        if key in _POSITIVE_INTS and (type(value) is not int or value < 1):
            bad(key, "a positive integer")
        if key in _NONNEGATIVE_INTS and (type(value) is not int or value < 0):
            bad(key, "an integer >= 0")
        if key in _FRACTIONS and (not _is_number(value) or not 0 <= value < 1):
            bad(key, "a number in [0, 1)")
        if key in _NONNEGATIVE_NUMBERS and (not _is_number(value) or value < 0):
            bad(key, "a number >= 0")
        if key == "lr" and (not _is_number(value) or value <= 0):
            bad(key, "a number > 0 (write floats as 5.0e-4: YAML reads 5e-4 as a string)")
        if key == "targets" and (not isinstance(value, list) or not value
                                 or any(t not in _TARGETS for t in value)):
            bad(key, f"a non-empty list of {', '.join(_TARGETS)}")
        if key == "ranks" and (not isinstance(value, dict) or any(
                t not in _TARGETS or type(r) is not int or r < 1 for t, r in value.items())):
            bad(key, f"a mapping of {', '.join(_TARGETS)} to positive integers")
        if key == "init_from" and not isinstance(value, str):
            bad(key, "a task name")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    values = {k: v for k, v in values.items() if v is not None}
    _check(values, f"{tier}/{model}/{method}/{task}" + (f" with preset {preset}" if preset else ""))
    return {"values": values, "sources": sources}


def resolve(tier: str, model: str, task: str, method: str, preset: str | None = None) -> dict:
    """The hyperparameters for one run: the tier's table, then the preset's differences on top.

    Raises ValueError naming the bad value and the valid choices for an unknown tier or preset,
    or a (model, method, task) the tier has no entry for.
    """
    return describe(tier, model, task, method, preset)["values"]
