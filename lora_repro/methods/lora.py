"""LoRA as a method of the training loop: its typed `method.*` fields and the four verbs.

    lora-repro params model=roberta_base method=lora method.targets=[q,v] method.rank=8   # 294912

The layers, injection, merge and ΔW live in lora_repro/lora/; this module only says which
settings a run has and how the loop applies, saves, loads and counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from lora_repro import lora
from lora_repro.architectures import TARGETS
from lora_repro.methods import Method, register
from lora_repro.settings import FRACTION, POSITIVE, POSITIVE_INT, Valid, one_of, setting

SCALINGS = ("standard", "rslora")


@dataclass
class LoRAConfig:
    """h = W x + scaling · B A x on the chosen attention matrices (nulls come from the tier table)."""

    name: str = "lora"
    targets: Optional[List[str]] = setting(
        None, "weight matrices to adapt, a non-empty subset of q, k, v, o",
        Valid(f"a non-empty list of {', '.join(TARGETS)} without repeats",
              lambda v: bool(v) and all(t in TARGETS for t in v) and len(set(v)) == len(v)))
    rank: Optional[int] = setting(None, "LoRA rank r, the same for every target", POSITIVE_INT)
    ranks: Optional[Dict[str, int]] = setting(
        None, "per-target ranks, e.g. {q: 8, v: 4} (wins over rank)",
        Valid(f"a mapping of {', '.join(TARGETS)} to positive integers",
              lambda v: all(t in TARGETS and type(r) is int and r >= 1 for t, r in v.items())))
    alpha: Optional[float] = setting(None, "LoRA alpha: ΔW is scaled by alpha / r (rsLoRA: alpha / sqrt(r))",
                                     POSITIVE)
    dropout: Optional[float] = setting(None, "dropout on the LoRA branch's input", FRACTION)
    init: str = setting("gaussian", "A's init: gaussian (the paper, N(0, sigma^2)) | kaiming (loralib)",
                        one_of(*lora.INITS))
    sigma: float = setting(0.02, "standard deviation of A's gaussian init", POSITIVE)
    bias: str = setting("none", "biases that train: none | all | lora_only", one_of(*lora.BIAS_MODES))
    layers: Optional[List[int]] = setting(
        None, "adapt only these layer indices (null: every layer)",
        Valid("a list of layer indices >= 0", lambda v: all(type(i) is int and i >= 0 for i in v)))
    scaling: str = setting("standard", "standard (alpha / r) | rslora (alpha / sqrt(r), Kalajdzievski 2023)",
                           one_of(*SCALINGS))
    lr_ratio: float = setting(1.0, "LoRA+ (Hayou et al. 2024): B learns at lr_ratio x the learning rate of A",
                              POSITIVE)


def _validate(cfg: LoRAConfig, where: str) -> None:
    for name in ("targets", "rank", "alpha"):
        if getattr(cfg, name) is None:
            raise ValueError(f"{where}.{name} is not set and the tier's table has no value for it: "
                             f"set {where}.{name}=...")


def _inject_kwargs(cfg) -> dict:
    kwargs = dict(targets=list(cfg.targets), rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout or 0.0,
                  init=cfg.init, ranks=dict(cfg.ranks) if cfg.ranks else None,
                  layers=list(cfg.layers) if cfg.layers is not None else None, sigma=cfg.sigma, bias=cfg.bias)
    if cfg.scaling != "standard":  # the core takes the option once it knows rsLoRA
        kwargs["scaling"] = cfg.scaling
    return kwargs


def apply(model: nn.Module, cfg: LoRAConfig, head_modules: list[str], seed: int) -> nn.Module:
    return lora.inject(model, **_inject_kwargs(cfg), trainable_modules=head_modules, seed=seed)


def save(model: nn.Module, run_dir: Path) -> None:
    lora.save_adapter(model, run_dir)


def load(model: nn.Module, run_dir: Path) -> None:
    lora.load_adapter(model, run_dir)


def count(model: nn.Module, cfg: LoRAConfig) -> int:
    return sum(A.numel() + B.numel() for A, B, _ in lora.factors(model).values())


def start_from(model: nn.Module, run_dir: Path, fresh_modules: list[str]) -> str:
    """Copy the LoRA factors of another run (its best epoch) into this adapted model; the task
    head stays fresh (the paper starts MRPC, RTE and STS-B from the MNLI adapter this way)."""
    read = lora.read_factors(Path(run_dir))
    ours = {(w.layer_index, t): w for w in lora.wrappers(model).values() for t in w.lora_A}
    if set(read) != set(ours):
        raise ValueError(f"init_from {run_dir}: its adapter covers {sorted(read)[:4]}..., this run's "
                         f"covers {sorted(ours)[:4]}... (targets, ranks and layers must match)")
    with torch.no_grad():
        for key, (A, B, _) in read.items():
            wrapper = ours[key]
            if wrapper.lora_A[key[1]].shape != A.shape:
                raise ValueError(f"init_from {run_dir}: factor {key} has rank {A.shape[0]}, this run's "
                                 f"has {wrapper.lora_A[key[1]].shape[0]}")
            wrapper.lora_A[key[1]].copy_(A)
            wrapper.lora_B[key[1]].copy_(B)
    return f"LoRA factors of {run_dir} (fresh task head)"


def param_groups(model: nn.Module, cfg: LoRAConfig, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: with LoRA+ (lr_ratio != 1) the B factors learn at lr_ratio x lr."""
    if cfg.lr_ratio != 1.0 and hasattr(lora, "param_groups"):
        return lora.param_groups(model, lr, lr_ratio=cfg.lr_ratio, weight_decay=weight_decay)
    if cfg.lr_ratio != 1.0:
        raise ValueError("method.lr_ratio needs lora.param_groups (LoRA+), which this build lacks")
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]


LORA = register(Method(
    name="lora", config=LoRAConfig, apply=apply, save=save, load=load, count=count, validate=_validate,
    start_from=start_from, param_groups=param_groups,
    summary="LoRA: trainable rank-r factors B A beside the chosen attention matrices",
))
