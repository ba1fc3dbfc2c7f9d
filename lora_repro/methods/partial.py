"""Baselines that train part of the pretrained weights (Hu et al. 2021, Section 5.1).

    lora-repro params model=gpt2_medium method=ft_top2        # 25,192,448 (Table 3: 25.19M)
    lora-repro params model=roberta_base method=bitfit        # 102,144 (Table 2: 0.1M)

- `ft_top2` (FT^Top2, Li & Liang 2021): only the last `blocks` transformer blocks train, plus the
  task head.
- `bitfit` (BitFit, Zaken et al. 2021): only the bias vectors train (every `*.bias`, LayerNorms'
  included), plus the task head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from lora_repro.architectures import FAMILIES, family_of, find_modules, layout_of
from lora_repro.methods import Method, common, register
from lora_repro.settings import POSITIVE_INT, setting


@dataclass
class TopBlocksConfig:
    """FT^Top2: the last blocks (and the task head) train, everything below them stays frozen."""

    name: str = "ft_top2"
    blocks: int = setting(2, "how many of the last transformer blocks train (FT^Top2: 2)", POSITIVE_INT)


def _validate_top(cfg: TopBlocksConfig, where: str) -> None:
    common.check(cfg, where, required=("blocks",))


def apply_top(model: nn.Module, cfg: TopBlocksConfig, head_modules, seed: int = 0) -> nn.Module:
    _validate_top(cfg, "method")
    blocks = find_modules(model, layout_of(model, cfg.name).block)
    if cfg.blocks > len(blocks):
        raise ValueError(f"method.blocks={cfg.blocks} is not valid: at most the model's {len(blocks)} blocks")
    top = [name for _, name, _ in blocks[len(blocks) - cfg.blocks:]]
    own = [n for n, _ in model.named_parameters() if any(n.startswith(prefix + ".") for prefix in top)]
    return common.train_only(model, own, head_modules, cfg.name, cfg)


@dataclass
class BitFitConfig:
    """BitFit: only the bias vectors (and the task head) train; no fields of its own."""

    name: str = "bitfit"


def apply_bitfit(model: nn.Module, cfg: BitFitConfig, head_modules, seed: int = 0) -> nn.Module:
    own = [n for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias" and p.dim() == 1]
    heads = set(common.head_parameters(model, head_modules))
    if not [n for n in own if n not in heads]:
        raise ValueError(f"method='bitfit' is not defined for the {family_of(model).name} family: "
                         f"its model has no bias vectors")
    return common.train_only(model, own, head_modules, cfg.name, cfg)


FT_TOP2 = register(Method(
    name="ft_top2", config=TopBlocksConfig, apply=apply_top, save=common.save, load=common.load,
    count=common.count, validate=_validate_top, families=common.families_with_layout(),
    summary="FT^Top2: only the last two transformer blocks (and the task head) train",
))
BITFIT = register(Method(
    name="bitfit", config=BitFitConfig, apply=apply_bitfit, save=common.save, load=common.load,
    count=common.count, validate=lambda cfg, where: common.check(cfg, where),
    families=tuple(n for n, f in FAMILIES.items() if f.layout is None or f.layout.biases),
    summary="BitFit: only the bias vectors (and the task head) train",
))


@dataclass
class HeadOnlyConfig:
    """The control of Tables 5 and 6: no adapter, only the task head trains; no fields of its own."""

    name: str = "head_only"


def apply_head_only(model: nn.Module, cfg: HeadOnlyConfig, head_modules, seed: int = 0) -> nn.Module:
    heads = set(common.head_parameters(model, head_modules))
    if not heads:
        raise ValueError("method='head_only' needs a task head (a classification task): this model has none")
    return _control(model, heads, cfg.name)


def _control(model: nn.Module, trainable: set[str], name: str) -> nn.Module:
    """A control method: only `trainable` (the head, or nothing) trains; no parameters of its own."""
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name in trainable)
    setattr(model, common._OWN, [])
    setattr(model, common._METHOD, {"name": name})
    return model


HEAD_ONLY = register(Method(
    name="head_only", config=HeadOnlyConfig, apply=apply_head_only, save=common.save, load=common.load,
    count=common.count, summary="control: the task head alone trains (0 parameters of the method's own)",
))


@dataclass
class ZeroShotConfig:
    """The control of Table 3: the pretrained model untrained, evaluated and decoded as the others."""

    name: str = "zero_shot"


def apply_zero_shot(model: nn.Module, cfg: ZeroShotConfig, head_modules, seed: int = 0) -> nn.Module:
    if head_modules:
        raise ValueError("method='zero_shot' is for generation tasks: a classification head would be untrained")
    return _control(model, set(), cfg.name)


ZERO_SHOT = register(Method(
    name="zero_shot", config=ZeroShotConfig, apply=apply_zero_shot, save=common.save, load=common.load,
    count=common.count, summary="control: the pretrained model untrained (nothing trains)",
))
