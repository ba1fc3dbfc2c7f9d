"""From a composed Hydra config to one fully resolved run: names checked, nulls filled, run_id.

Every null in train/ and method/ is taken from the tier's hyperparameter table for this model,
task and method (lora_repro/hparams.py); what the user set always wins. The run_id hashes only
the fields that change the result, so the same command always lands in the same run folder.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lora_repro import hparams
from lora_repro.data.glue import GLUE_TASKS
from lora_repro.data.nlg import NLG_TASKS
from lora_repro.models import known_models
from lora_repro.records import run_id_of

METHODS = ("lora", "full_ft")
TIERS = ("quick", "paper")
# train fields that say how a run executes, not what it computes: kept out of the run_id
EXECUTION_FIELDS = ("num_threads", "checkpoint_every", "progress")
# hyperparameter-table keys that fill method fields (table key -> method field)
METHOD_FIELDS = {"targets": "targets", "rank": "rank", "ranks": "ranks", "alpha": "alpha",
                 "lora_dropout": "dropout"}
DEFAULTS = {"eval_batch_size": None, "grad_accum": 1, "precision": "fp32", "warmup_ratio": 0.0,
            "warmup_steps": 0, "weight_decay": 0.0, "lr_schedule": "linear", "optimizer": "adamw",
            "max_seq_length": 128, "label_smoothing": 0.0, "beam_size": 1, "length_penalty": 1.0,
            "no_repeat_ngram_size": 0, "max_new_tokens": 64}
REQUIRED = ("lr", "batch_size", "epochs")


def _choice(kind: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}: valid {kind}s are {', '.join(map(str, valid))}")


def resolve(cfg: DictConfig | dict) -> dict:
    """The run as a plain dict: model/task/method/train with every value decided, and its run_id."""
    if isinstance(cfg, DictConfig):  # the hydra node is Hydra's own business
        c = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig)
             else cfg[k] for k in cfg if k != "hydra"}
    else:
        c = dict(cfg)
    model, task, method = c["model"]["name"], c["task"]["name"], c["method"]["name"]
    _choice("model", model, list(known_models()))
    _choice("task", task, list(GLUE_TASKS) + list(NLG_TASKS))
    _choice("method", method, METHODS)
    _choice("tier", c["tier"], TIERS)
    kind = "glue" if task in GLUE_TASKS else "nlg"
    if c["task"].get("kind", kind) != kind:
        raise ValueError(f"task {task!r} is a {kind} task, but its config says kind={c['task']['kind']!r}")

    table = hparams.resolve(c["tier"], model, task, method, c.get("preset"))
    train = {k: (v if v is not None else table.get(k, DEFAULTS.get(k))) for k, v in c["train"].items()}
    train["eval_batch_size"] = train["eval_batch_size"] or train["batch_size"]
    missing = [k for k in REQUIRED if train.get(k) is None]
    if missing:
        raise ValueError(
            f"no value for {', '.join(missing)} of {model}/{task}/{method} in tier {c['tier']!r}: "
            f"set train.{missing[0]}=... or add it to conf/hparams/{c['tier']}.yaml"
        )
    method_cfg = dict(c["method"])
    if method == "lora":
        for key, field in METHOD_FIELDS.items():
            if method_cfg.get(field) is None and table.get(key) is not None:
                method_cfg[field] = table[key]
        method_cfg.setdefault("dropout", 0.0)
        method_cfg["dropout"] = method_cfg["dropout"] or 0.0
        for field in ("targets", "rank", "alpha"):
            if method_cfg.get(field) is None:
                raise ValueError(f"method.{field} is not set and tier {c['tier']!r} has no default for it")
        method_cfg["targets"] = list(method_cfg["targets"])
    init_from = c.get("init_from")

    result_fields = {
        "model": model, "task": task, "method": method_cfg, "tier": c["tier"], "seed": c["seed"],
        "train": {k: v for k, v in train.items() if k not in EXECUTION_FIELDS},
        "init_from": str(init_from) if init_from else None,
    }
    run_id = run_id_of(result_fields)
    experiment = c.get("experiment_name") or "default"
    return {
        **result_fields,
        "train": train,
        "run_id": run_id,
        "experiment": experiment,
        "preset": c.get("preset"),
        "task_kind": kind,
        "model_source": c["model"].get("path") or model,
        "data_dir": c["task"].get("data_dir"),
        "tokenizer_dir": c["task"].get("tokenizer_dir"),
        "run_dir": str(Path(c.get("run_root", "results/runs")) / experiment / run_id),
        "logger": c.get("logger", {"name": "none"}),
        "force": bool(c.get("force", False)),
        "config": c,
    }
