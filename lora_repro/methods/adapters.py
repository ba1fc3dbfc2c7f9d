"""Bottleneck adapters, the paper's four adapter baselines (Hu et al. 2021, Section 5.1).

    lora-repro params model=roberta_large method=adapter_h method.bottleneck=8   # 835,968 (0.8M)

An adapter maps h -> h + W_up f(W_down LN?(h)) with W_down: d -> r (`bottleneck`), W_up: r -> d.
W_up starts at zero, so the adapted model starts equal to the pretrained one (near-identity init);
W_down is drawn from N(0, init_std^2), each adapter from its own stream. Placements, as the paper
describes them (where each part lives in a family: lora_repro/architectures.py, `Layout`):

- `adapter_h` (Houlsby et al. 2019): two adapters per block, on the output of the attention output
  projection and on the output of the FFN, each before its residual sum.
- `adapter_l` (Lin et al. 2020): one adapter per block, after the MLP (on the block's output),
  with a new LayerNorm at its input.
- `adapter_p` (Pfeiffer et al. 2021): one adapter per block, after the FFN only.
- `adapter_d` (AdapterDrop, Rücklé et al. 2021): `adapter_p` without the adapters of the lowest
  `drop_layers` blocks.

|Θ| = L_Adpt (2 d r + r + d) + 2 L_LN d (the paper's Section 5.1), with r = `bottleneck`, L_Adpt
adapters and L_LN trained LayerNorms (Adapter^L's new ones; Adapter^H's block norms if
`train_layernorm`). Written by hand: AdapterHub's `adapters` pins transformers ~= 4.57 (this project
runs transformers 5) and PEFT has no bottleneck adapters. Each adapter is a child module
`bottleneck_adapter` of the module whose output it changes, run by a forward hook, so the model's
own module names (and LoRA's targets) stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from lora_repro.architectures import find_modules, layout_of
from lora_repro.methods import Method, common, register
from lora_repro.settings import NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, one_of, setting

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
CHILD = "bottleneck_adapter"


class BottleneckAdapter(nn.Module):
    """h + up(act(down(norm(h)))), with `up` zero at init: exactly the identity until it trains."""

    def __init__(self, d_model: int, bottleneck: int, activation: str, layer_norm: bool,
                 init_std: float, seed: int, like: torch.Tensor):
        super().__init__()
        kwargs = {"device": like.device, "dtype": like.dtype}
        self.norm = nn.LayerNorm(d_model, **kwargs) if layer_norm else None
        self.down = nn.Linear(d_model, bottleneck, **kwargs)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, d_model, **kwargs)
        with torch.no_grad():
            self.down.weight.copy_(common.seeded_normal(self.down.weight.shape, init_std, seed, like))
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.norm(hidden) if self.norm is not None else hidden
        return hidden + self.up(self.act(self.down(x)))


def _run_adapter(module: nn.Module, args, output):
    adapter = getattr(module, CHILD)
    if isinstance(output, tuple):  # blocks of some families return (hidden, attention, ...)
        return (adapter(output[0]), *output[1:])
    return adapter(output)


@dataclass
class AdapterConfig:
    """Bottleneck adapters; nulls come from the tier's table (conf/hparams/)."""

    name: str = "adapter_p"
    bottleneck: Optional[int] = setting(None, "adapter bottleneck size r (d -> r -> d), 1..d_model", POSITIVE_INT)
    activation: str = setting("relu", "the adapter's nonlinearity: relu | gelu | tanh", one_of(*ACTIVATIONS))
    init_std: float = setting(0.01, "std of W_down's normal init (W_up starts at zero: identity at init)",
                              POSITIVE)


@dataclass
class HoulsbyConfig(AdapterConfig):
    """Adapter^H: two adapters per block (after attention and after the FFN)."""

    name: str = "adapter_h"
    train_layernorm: bool = setting(False, "also train the blocks' own LayerNorms, as Houlsby et al. did "
                                    "(the paper's Adapter^H counts leave them out)", one_of(True, False))


@dataclass
class LinConfig(AdapterConfig):
    """Adapter^L: one adapter per block, after the MLP, with a new LayerNorm."""

    name: str = "adapter_l"


@dataclass
class PfeifferConfig(AdapterConfig):
    """Adapter^P: one adapter per block, after the FFN."""

    name: str = "adapter_p"


@dataclass
class DropConfig(AdapterConfig):
    """Adapter^D: Adapter^P without the adapters of the lowest blocks."""

    name: str = "adapter_d"
    drop_layers: Optional[int] = setting(None, "the lowest blocks that get no adapter (AdapterDrop drops "
                                         "adapters from the first n blocks)", NONNEGATIVE_INT)


@dataclass(frozen=True)
class Placement:
    sites: tuple[str, ...]  # Layout fields: the modules whose output an adapter changes
    layer_norm: bool = False  # a new LayerNorm at the adapter's input (Adapter^L)


PLACEMENTS = {
    "adapter_h": Placement(("attn_out", "ffn_out")),
    "adapter_l": Placement(("block",), layer_norm=True),
    "adapter_p": Placement(("ffn_out",)),
    "adapter_d": Placement(("ffn_out",)),
}


def validate(cfg: AdapterConfig, where: str) -> None:
    common.check(cfg, where, required=("bottleneck", "drop_layers") if cfg.name == "adapter_d" else ("bottleneck",))


def apply(model: nn.Module, cfg: AdapterConfig, head_modules, seed: int = 0) -> nn.Module:
    validate(cfg, "method")
    layout = layout_of(model, cfg.name)
    placement = PLACEMENTS[cfg.name]
    d_model = model.config.hidden_size
    if cfg.bottleneck > d_model:
        raise ValueError(f"method.bottleneck={cfg.bottleneck} is not valid: at most d_model = {d_model} "
                         f"of this model (an adapter maps d -> r -> d)")
    n_blocks = len(find_modules(model, layout.block))
    drop = getattr(cfg, "drop_layers", 0) or 0
    if drop >= n_blocks:
        raise ValueError(f"method.drop_layers={drop} is not valid: fewer than the model's {n_blocks} blocks "
                         f"(0..{n_blocks - 1})")
    if any(hasattr(m, CHILD) for m in model.modules()):
        raise ValueError("adapters are already applied to this model: they cannot be applied twice")
    own = []
    for k, site in enumerate(placement.sites):
        for layer, name, module in find_modules(model, getattr(layout, site)):
            if layer < drop:
                continue
            like = next(module.parameters())
            adapter = BottleneckAdapter(d_model, cfg.bottleneck, cfg.activation, placement.layer_norm,
                                        cfg.init_std, common.stream(seed, layer, k), like)
            module.add_module(CHILD, adapter)
            module.register_forward_hook(_run_adapter)
            own += [f"{name}.{CHILD}.{n}" for n, _ in adapter.named_parameters()]
    if getattr(cfg, "train_layernorm", False):
        for _, name, module in find_modules(model, layout.norms):
            own += [f"{name}.{n}" for n, _ in module.named_parameters()]
    return common.train_only(model, own, head_modules, cfg.name, cfg)


SUMMARIES = {
    "adapter_h": "Adapter^H (Houlsby): adapters after attention and after the FFN, before each residual sum",
    "adapter_l": "Adapter^L (Lin): one adapter after the MLP, with a new LayerNorm",
    "adapter_p": "Adapter^P (Pfeiffer): one adapter after the FFN",
    "adapter_d": "Adapter^D (AdapterDrop): Adapter^P without the lowest blocks' adapters",
}
CONFIGS = {"adapter_h": HoulsbyConfig, "adapter_l": LinConfig, "adapter_p": PfeifferConfig,
           "adapter_d": DropConfig}
for _name, _config in CONFIGS.items():
    register(Method(
        name=_name, config=_config, apply=apply, save=common.save, load=common.load, count=common.count,
        validate=validate, families=common.families_with_layout(), summary=SUMMARIES[_name],
    ))
