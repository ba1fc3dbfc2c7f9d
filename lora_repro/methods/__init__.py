"""One home per fine-tuning method: the few verbs the training loop, `plan` and `params` need.

    from lora_repro import methods
    method = methods.get("lora")
    cfg = method.config(targets=["q", "v"], rank=8, alpha=8)      # the typed method.* fields
    model = method.apply(model, cfg, head_modules=["classifier"], seed=0)   # in place (or wrapped)
    method.save(model, run_dir); method.load(model, run_dir)      # what trained (best epoch)
    methods.count_parameters("roberta_base", "lora", cfg)          # the paper's count, meta device

A method is a `Method` entry in `REGISTRY`: its config dataclass (registered with Hydra as the
schema of `conf/method/<name>.yaml`), and the functions below. Adding a method = one module that
calls `register(...)` and one YAML file; nothing else changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class Method:
    """The verbs of one method.

    name:    the value of `method=` (also `method.name`).
    config:  dataclass of its `method.*` fields; each field's `metadata["help"]` says what it means.
             `validate(cfg, where)` (optional) raises ValueError naming a bad field.
    apply(model, cfg, head_modules, seed) -> model: adapt a freshly built model in place (freezing
             what does not train; `head_modules` are the task head's module names, which always
             train) and return it (or a wrapper around it, e.g. prefix methods).
    save(model, run_dir) / load(model, run_dir): write / read back what trained (best epoch);
             files live in run_dir.
    count(model, cfg) -> int: the method's own trainable parameters without the task head (the
             paper's convention) on a model built on the meta device (after `apply`).
    families: model families it is defined for (None: every family).
    start_from(model, run_dir, fresh_modules) -> str (optional): start from another run of the same
             method (the paper's MRPC/RTE/STS-B from MNLI), keeping `fresh_modules` (the task
             classifier) fresh; returns what was loaded, in words.
    param_groups(model, cfg, lr, weight_decay) -> list[dict] (optional): the optimizer's groups
             (default: every trainable parameter at lr).
    """

    name: str
    config: type
    apply: Callable[..., nn.Module]
    save: Callable[[nn.Module, Path], Any]
    load: Callable[[nn.Module, Path], Any]
    count: Callable[[nn.Module, Any], int]
    validate: Callable[[Any, str], None] | None = None
    families: tuple[str, ...] | None = None
    start_from: Callable[..., str] | None = None
    param_groups: Callable[..., list] | None = None
    summary: str = ""


REGISTRY: dict[str, Method] = {}
# modules that register methods, imported on first use (so importing this package stays cheap)
_MODULES = ("lora_repro.methods.lora", "lora_repro.methods.full", "lora_repro.methods.partial",
            "lora_repro.methods.adapters", "lora_repro.methods.prefix")


def register(method: Method) -> Method:
    REGISTRY[method.name] = method
    return method


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def names() -> tuple[str, ...]:
    _load_all()
    return tuple(REGISTRY)


def get(name: str) -> Method:
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"method={name!r} is not a method: valid methods are {', '.join(REGISTRY)}")
    return REGISTRY[name]
