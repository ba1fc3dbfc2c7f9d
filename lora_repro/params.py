"""`lora-repro params`: a method's trainable parameters, counted on a model built on the meta device.

    lora-repro params model=roberta_base method=lora method.targets=[q,v] method.rank=8   # 294912
    lora-repro params model=gpt2_medium method=adapter_l                    # the paper tier's preset
    lora-repro params model=roberta_large method=adapter_p preset=large_adapters task=sst2

Nothing is downloaded and no weight is allocated. Method fields left unset come from the tier's
table for this model and method, as in a run (tier=paper, else quick; task= picks the entry,
default its first; preset= lays a preset over it). The count is the paper's: the method's own
parameters, without the task head. Prints the settings, one line per kind of trained parameter
(block index written *), and last `trainable=<N>`.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

import yaml

from lora_repro import hparams, methods, settings
from lora_repro.architectures import family_of
from lora_repro.models import build_random, model_config

OPTIONS = ("model", "method", "tier", "task", "preset")


def parse(argv: list[str]) -> tuple[dict, dict]:
    """`key=value` words: (options, method fields); values read as YAML ([q,v], 8, null, 1.0e-3)."""
    options, fields = {}, {}
    for word in argv:
        key, sep, text = word.partition("=")
        if not sep:
            raise ValueError(f"{word!r} is not key=value: use {', '.join(OPTIONS)} or method.<field>=<value>")
        value = yaml.safe_load(text) if text else None
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if key.startswith("method."):
            fields[key.removeprefix("method.")] = value
        elif key in OPTIONS:
            options[key] = value
        else:
            raise ValueError(f"{key}={text} is not valid: the keys are {', '.join(OPTIONS)} and method.<field>")
    for key in ("model", "method"):
        if key not in options:
            raise ValueError(f"{key} is not set: lora-repro params model=<model> method=<method> [method.<field>=<v>]")
    return options, fields


def table_entry(model: str, method: str, tier: str | None = None, task: str | None = None,
                preset: str | None = None) -> tuple[dict, str]:
    """The tier table's values for (model, method) and where they came from ({}, "" if none)."""
    for name in [tier] if tier else ["paper", "quick"]:
        tasks = [t for mo, me, t in hparams.entries(name) if (mo, me) == (model, method)]
        if task is not None:
            tasks = [t for t in tasks if t == task]
        if tasks:
            return hparams.resolve(name, model, tasks[0], method, preset), f"{name}: {model}/{method}/{tasks[0]}"
    return {}, ""


def method_config(model: str, method: str, overrides: dict, **where):
    """The method's config: the overrides, then the tier table, then the dataclass defaults."""
    chosen = methods.get(method)
    settings.check_fields(overrides, chosen.config, "method")
    table, source = table_entry(model, method, **where)
    known = settings.field_help(chosen.config)
    values = {k: v for k, v in table.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["name"] = method
    cfg = chosen.config(**values)
    if chosen.validate:
        chosen.validate(cfg, "method")
    return cfg, source


def build(model: str, method: str, overrides: dict, **where):
    """(model with the method applied, the method, its config, where the table values came from)."""
    chosen = methods.get(method)
    cfg, source = method_config(model, method, overrides, **where)
    family = family_of(model_config(model))
    if chosen.families is not None and family.name not in chosen.families:
        raise ValueError(f"method={method!r} is not defined for model {model!r} (family {family.name}): "
                         f"it is defined for {', '.join(chosen.families)}")
    if family.causal_lm:
        built, heads = build_random(model, head="causal_lm", meta=True), []
    else:
        from lora_repro.tasks import HEADS

        built = build_random(model, head="sequence_classification", meta=True)
        heads = HEADS.get(built.config.model_type, ["classifier"])
    built = chosen.apply(built, cfg, head_modules=heads, seed=0)
    return built, chosen, cfg, source, heads


def count(model_name: str, method_name: str, method_overrides: dict | None = None, **where) -> int:
    """The paper's count of a method's trainable parameters on `model_name` (no task head)."""
    built, chosen, cfg, _, _ = build(model_name, method_name, dict(method_overrides or {}), **where)
    return chosen.count(built, cfg)


def breakdown(model, heads: list[str]) -> list[tuple[str, int, int, tuple]]:
    """(name with block index *, parameters, how many tensors, shape) of what trains, head apart."""
    from lora_repro.methods import common

    head = set(common.head_parameters(model, heads))
    groups = defaultdict(list)
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = re.sub(r"\.\d+\.", ".*.", name, count=1)
            groups[("head: " if name in head else "") + kind].append(param)
    return [(k, sum(p.numel() for p in ps), len(ps), tuple(ps[0].shape)) for k, ps in groups.items()]


def main(argv: list[str] | None = None) -> int:
    options, fields = parse(list(sys.argv[1:] if argv is None else argv))
    where = {k: options.get(k) for k in ("tier", "task", "preset")}
    built, chosen, cfg, source, heads = build(options["model"], options["method"], fields, **where)
    total = sum(p.numel() for p in built.parameters())
    shown = " ".join(f"{k}={v}" for k, v in settings.as_dict(cfg).items() if k != "name")
    print(f"model={options['model']} ({family_of(built).name} family, {total:,} parameters, meta device)")
    print(f"method={chosen.name} {shown}" + (f"  (table values from {source})" if source else ""))
    for kind, n, k, shape in breakdown(built, heads):
        print(f"  {n:>13,}  {kind}  ({k} x {'x'.join(map(str, shape))})")
    print(f"trainable={chosen.count(built, cfg)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        print(f"[lora-repro] error: {err}", file=sys.stderr)
        sys.exit(2)
