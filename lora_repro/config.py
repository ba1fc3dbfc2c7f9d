"""From a composed Hydra config to one fully resolved, validated run: nulls filled, run_id.

    python -c "from lora_repro.plan import jobs; print(jobs(['model=tiny_bert', 'task=sst2'])[0]['run_id'])"

Every null in train/ and method/ is taken from the tier's hyperparameter table for this model,
task and method (lora_repro/hparams.py), then from the trainer's defaults; what the user set
always wins. Every value is checked here, once, against its schema (lora_repro/settings.py and the
method's own config): a bad one raises a one-line ValueError before anything is built or
recorded. The run_id hashes only the fields that change the result, so the same command always
lands in the same run folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lora_repro import hparams, methods, settings
from lora_repro.data.glue import GLUE_TASKS
from lora_repro.data.nlg import NLG_TASKS
from lora_repro.models import known_models
from lora_repro.records import run_id_of

settings.register_configs()  # conf/*.yaml extend the typed schemas: Hydra must know them first

TIERS = hparams.TIERS
TASKS = tuple(GLUE_TASKS) + tuple(NLG_TASKS)


def _choice(field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{field}={value!r} is not valid: one of {', '.join(map(str, valid))}")


def _plain(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):  # the hydra node is Hydra's own business
        return {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig)
                else cfg[k] for k in cfg if k != "hydra"}
    return copy.deepcopy(dict(cfg))


def _family_of_model(model: str) -> str:
    from lora_repro.architectures import family_of

    return family_of(known_models()[model]["config"]["model_type"]).name


def _check_names(c: dict) -> tuple[str, str, str]:
    model, task, method = c["model"]["name"], c["task"]["name"], c["method"]["name"]
    _choice("model", model, list(known_models()))
    _choice("task", task, TASKS)
    _choice("method", method, methods.names())
    _choice("tier", c["tier"], TIERS)
    kind = "glue" if task in GLUE_TASKS else "nlg"
    if c["task"].get("kind", kind) != kind:
        raise ValueError(f"task.kind={c['task']['kind']!r} is not valid: task {task!r} is a {kind} task")
    families = methods.get(method).families
    if families is not None and _family_of_model(model) not in families:
        raise ValueError(f"method={method!r} is not defined for model {model!r} (family "
                         f"{_family_of_model(model)}): it is defined for {', '.join(families)}")
    return model, task, method


def _fill_train(c: dict, table: dict) -> dict:
    given = c.get("train") or {}
    settings.check_fields(given, settings.TrainConfig, "train")
    train = {}
    for name in settings.field_help(settings.TrainConfig):
        value = given.get(name)
        if value is None:
            value = table.get(name, settings.TRAIN_DEFAULTS.get(name))
        if value is None:  # the dataclass default (execution fields)
            value = settings.TrainConfig.__dataclass_fields__[name].default
        train[name] = value
    train["eval_batch_size"] = train["eval_batch_size"] or train["batch_size"]
    missing = [k for k in settings.REQUIRED_TRAIN if train.get(k) is None]
    if missing:
        raise ValueError(f"train.{missing[0]} is not set and tier {c['tier']!r} has no value for "
                         f"{c['model']['name']}/{c['task']['name']}/{c['method']['name']}: set "
                         f"train.{missing[0]}=... or add it to conf/hparams/{c['tier']}.yaml")
    settings.check_fields(train, settings.TrainConfig, "train")
    return train


def _fill_method(c: dict, table: dict) -> dict:
    method = methods.get(c["method"]["name"])
    schema_fields = settings.field_help(method.config)
    given = c["method"]
    settings.check_fields(given, method.config, "method")
    filled = {}
    for name in schema_fields:
        value = given.get(name)
        if value is None and name in table:
            value = copy.deepcopy(table[name])
        if value is None:
            default = method.config.__dataclass_fields__[name].default
            value = None if default is settings.MISSING else default
        filled[name] = value
    settings.check_fields(filled, method.config, "method")
    if method.validate:
        method.validate(method.config(**filled), "method")
    return filled


def _init_source(c: dict, value: str | None) -> dict | None:
    """What the run starts from: a task name means that task's run of the same model, method,
    seed and overrides in this experiment (resolved here, checked when the run starts)."""
    if not value:
        return None
    if value in TASKS:
        if value == c["task"]["name"]:
            raise ValueError(f"init_from={value!r} is not valid: a run cannot start from its own task")
        source_cfg = copy.deepcopy(c)
        source_cfg["task"] = {**c["task"], "name": value, "kind": "glue" if value in GLUE_TASKS else "nlg"}
        source_cfg["init_from"] = None
        source_cfg["_init_from_table"] = False  # the source run starts from the pretrained model
        source = resolve(source_cfg)
        if source["init_from"]:
            raise ValueError(f"init_from={value!r}: that run itself starts from {source['init_from']['task']}")
        return {"task": value, "run_id": source["run_id"], "run_dir": source["run_dir"]}
    path = Path(value)
    if not path.exists():
        raise ValueError(f"init_from={value!r} is not valid: a task name ({', '.join(TASKS)}) or an "
                         f"existing run folder / adapter file")
    return {"task": None, "run_id": None, "run_dir": str(path)}


def resolve(cfg: DictConfig | dict) -> dict:
    """The run as a plain dict: model/task/method/train with every value decided and checked, and
    its run_id. Raises a one-line ValueError for any bad value."""
    c = _plain(cfg)
    model, task, method = _check_names(c)
    settings.check_fields({k: c.get(k) for k in ("seed", "force")}, settings.RunConfig, "")
    table = hparams.resolve(c["tier"], model, task, method, c.get("preset"))
    train = _fill_train(c, table)
    method_cfg = _fill_method(c, table)
    init_value = c.get("init_from")
    if init_value is None and c.get("_init_from_table", True):
        init_value = table.get("init_from")

    experiment = c.get("experiment_name") or "default"
    run_root = Path(c.get("run_root", "results/runs"))
    init_from = _init_source(c, init_value)
    result_fields = {
        "model": model, "task": task, "method": method_cfg, "tier": c["tier"], "seed": c["seed"],
        "train": {k: v for k, v in train.items() if k not in settings.EXECUTION_FIELDS},
        "init_from": (f"{init_from['task']}:{init_from['run_id']}" if init_from and init_from["task"]
                      else init_from["run_dir"] if init_from else None),
    }
    run_id = run_id_of(result_fields)
    return {
        **result_fields,
        "train": train,
        "init_from": init_from,
        "run_id": run_id,
        "experiment": experiment,
        "preset": c.get("preset"),
        "task_kind": "glue" if task in GLUE_TASKS else "nlg",
        "model_source": c["model"].get("path") or model,
        "data_dir": c["task"].get("data_dir"),
        "tokenizer_dir": c["task"].get("tokenizer_dir"),
        "run_dir": str(run_root / experiment / run_id),
        "logger": c.get("logger") or {"name": "none"},
        "force": bool(c.get("force", False)),
        "config": {k: v for k, v in c.items() if not k.startswith("_")},
    }
