"""Inject LoRA into a transformers model, freeze the rest, merge/unmerge, and read ΔW back.

    import transformers, lora_repro.lora as lora
    model = transformers.AutoModel.from_pretrained(...)
    lora.inject(model, targets=("q", "v"), rank=8, alpha=8)
    lora.delta_weights(model)[(0, "q")]   # (alpha/r) B A of layer 0's Wq, out x in
    torch.optim.AdamW(lora.param_groups(model, lr=2e-4, lr_ratio=16))   # LoRA+: B at 16 x lr
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from lora_repro.architectures import TARGETS, Site, family_of, find_sites
from lora_repro.lora.layers import INITS, SCALINGS, LoRAWrapper, init_seed

BIAS_MODES = ("none", "all", "lora_only")
_SPEC_ATTR = "lora_repro_spec"  # set on an adapted model: how it was adapted
_MERGED_ATTR = "_lora_repro_merged"  # wrappers taken out of the forward pass by merge()


@dataclass
class LoRASpec:
    """How a model was adapted: everything needed to rebuild the same adapter on the same model.

    scaling: "standard" (alpha / r) or "rslora" (alpha / sqrt(r)). init_stream: "per_adapter"
    (each A from its own stream, see layers.init_seed); "shared" marks adapters saved before
    that, whose A's came from one generator seeded once and run through the sites in order.
    """

    targets: list[str]
    ranks: dict[str, int]
    alpha: float
    dropout: float = 0.0
    init: str = "gaussian"
    sigma: float = 0.02
    layers: list[int] | None = None
    bias: str = "none"
    trainable_modules: list[str] = field(default_factory=list)
    seed: int | None = None
    family: str = ""
    model: str = ""
    scaling: str = "standard"
    init_stream: str = "per_adapter"

    def to_dict(self) -> dict:
        return asdict(self)


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "lora_repro_name", None) or getattr(config, "_name_or_path", "") or ""


def is_adapted(model: nn.Module) -> bool:
    return getattr(model, _SPEC_ATTR, None) is not None


def spec_of(model: nn.Module) -> LoRASpec:
    spec = getattr(model, _SPEC_ATTR, None)
    if spec is None:
        raise ValueError("this model carries no LoRA adapter: call lora_repro.lora.inject first")
    return spec


def plan(
    model: nn.Module,
    targets=("q", "v"),
    rank: int = 8,
    ranks: dict[str, int] | None = None,
    layers=None,
) -> tuple[list[Site], dict[str, int]]:
    """The sites to adapt and the rank of each target, after checking every argument.

    Raises ValueError naming the bad value and the valid choices; touches nothing.
    """
    family = family_of(model)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError(f"no targets given: choose one or more of {', '.join(TARGETS)}")
    for target in targets:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}: valid targets are {', '.join(TARGETS)}")
        if target not in family.targets:
            raise ValueError(
                f"target {target!r} is absent from the {family.name} architecture, "
                f"which has {', '.join(family.targets)}"
            )
    if len(set(targets)) != len(targets):
        raise ValueError(f"target listed twice in {targets}")
    ranks = dict(ranks or {})
    for target in ranks:
        if target not in targets:
            raise ValueError(
                f"a rank is given for {target!r}, which is not adapted: targets are {targets}"
            )
    rank_of = {t: ranks.get(t, rank) for t in targets}
    for target, r in rank_of.items():
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rank of {target!r} must be an integer >= 1, got {r!r}")

    sites = [s for s in find_sites(model, family) if s.target in targets]
    if not sites:
        raise ValueError(f"found no {targets} modules in this {family.name} model")
    n_layers = max(s.layer for s in sites) + 1
    if layers is not None:
        layers = sorted({int(i) for i in layers})
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layer(s) {bad} out of range: this model has layers 0..{n_layers - 1}")
        sites = [s for s in sites if s.layer in layers]
    for site in sites:
        r = rank_of[site.target]
        if r > min(site.d_in, site.d_out):
            raise ValueError(
                f"rank {r} of {site.target!r} is larger than min(d_in, d_out) = "
                f"{min(site.d_in, site.d_out)} of {site.module_name} "
                f"(W is {site.d_out} x {site.d_in}); choose a rank in 1..{min(site.d_in, site.d_out)}"
            )
    return sites, rank_of


def inject(
    model: nn.Module,
    targets=("q", "v"),
    rank: int = 8,
    alpha: float = 8,
    dropout: float = 0.0,
    init: str = "gaussian",
    ranks: dict[str, int] | None = None,
    layers=None,
    *,
    sigma: float = 0.02,
    bias: str = "none",
    trainable_modules=(),
    seed: int | None = None,
    scaling: str = "standard",
) -> nn.Module:
    """Adapt `targets` of `model` in place with LoRA and freeze everything else.

    rank/alpha: h = W x + (alpha / r) B A x; `ranks` overrides the rank per target (r_q=8, r_v=8).
    scaling: "standard" (alpha / r) or "rslora" (alpha / sqrt(r), Kalajdzievski 2023).
    init: "gaussian" (A ~ N(0, sigma^2), the paper) or "kaiming" (loralib); B = 0 either way, so
    the adapted model starts equal to the pretrained one. Each A has its own stream seeded from
    (seed, layer, target, rank); without `seed`, one is drawn from torch's global RNG and recorded.
    bias: which biases train ("none" | "all" | "lora_only"); trainable_modules: names of modules
    that train in full (e.g. the classifier head, as in the paper's GLUE runs).
    """
    if is_adapted(model) or any(isinstance(m, LoRAWrapper) for m in model.modules()):
        raise ValueError("LoRA is already applied to this model: it cannot be applied twice")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: valid inits are {', '.join(INITS)}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}: valid scalings are {', '.join(SCALINGS)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}: valid modes are {', '.join(BIAS_MODES)}")
    trainable_modules = [trainable_modules] if isinstance(trainable_modules, str) else list(
        trainable_modules
    )
    module_names = {name for name, _ in model.named_modules()}
    for name in trainable_modules:
        if not any(n == name or n.endswith("." + name) for n in module_names):
            heads = [n for n in module_names if n.count(".") == 0 and n]
            raise ValueError(
                f"trainable module {name!r} not found in the model; top-level modules: "
                f"{', '.join(sorted(heads))}"
            )
    sites, rank_of = plan(model, targets, rank, ranks, layers)

    if seed is None:
        seed = int(torch.randint(2**31 - 1, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    wrappers: dict[str, LoRAWrapper] = {}
    for site in sites:
        wrapper = wrappers.get(site.module_name)
        if wrapper is None:
            base = model.get_submodule(site.module_name)
            wrapper = wrappers[site.module_name] = LoRAWrapper(base, dropout)
            wrapper.layer_index = site.layer
        r = rank_of[site.target]
        generator = torch.Generator().manual_seed(init_seed(seed, site.layer, site.target, r))
        wrapper.add_target(site.target, r, alpha, site.out_slice, init, sigma, generator, scaling)
    for name, wrapper in wrappers.items():
        _set_submodule(model, name, wrapper)

    spec = LoRASpec(
        targets=[t for t in TARGETS if t in rank_of],
        ranks=rank_of,
        alpha=float(alpha),
        dropout=float(dropout),
        init=init,
        sigma=float(sigma),
        layers=sorted({s.layer for s in sites}) if layers is not None else None,
        bias=bias,
        trainable_modules=trainable_modules,
        seed=seed,
        family=family_of(model).name,
        model=_model_name(model),
        scaling=scaling,
    )
    setattr(model, _SPEC_ATTR, spec)
    mark_trainable(model)
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def mark_trainable(model: nn.Module) -> None:
    """Freeze all but LoRA factors, the biases the spec asks for and the named trainable modules."""
    spec = spec_of(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for module_name, module in model.named_modules():
        if isinstance(module, LoRAWrapper):
            for p in list(module.lora_A.values()) + list(module.lora_B.values()):
                p.requires_grad_(True)
            if spec.bias == "lora_only" and getattr(module.base_layer, "bias", None) is not None:
                module.base_layer.bias.requires_grad_(True)
        if any(module_name == n or module_name.endswith("." + n) for n in spec.trainable_modules):
            for p in module.parameters():
                p.requires_grad_(True)
    if spec.bias == "all":
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)


def wrappers(model: nn.Module) -> dict[str, LoRAWrapper]:
    """Module name -> LoRA wrapper, whether it sits in the forward pass or was merged out."""
    live = {n: m for n, m in model.named_modules() if isinstance(m, LoRAWrapper)}
    return {**getattr(model, _MERGED_ATTR, {}), **live}


def merge(model: nn.Module) -> nn.Module:
    """Fold scaling * B A into W and put the plain base modules back: no LoRA left in the forward
    pass, so inference costs what the base model costs. `unmerge` undoes it."""
    spec_of(model)
    merged = getattr(model, _MERGED_ATTR, {})
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRAWrapper):
            module.merge_into_base()
            _set_submodule(model, name, module.base_layer)
            merged[name] = module
    # a plain dict attribute: the wrappers stay reachable without being submodules
    object.__setattr__(model, _MERGED_ATTR, merged)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract scaling * B A from W again and put the LoRA wrappers back into the forward pass."""
    merged = getattr(model, _MERGED_ATTR, {})
    for name, wrapper in merged.items():
        wrapper.unmerge_from_base()
        _set_submodule(model, name, wrapper)
    object.__setattr__(model, _MERGED_ATTR, {})
    mark_trainable(model)
    return model


def is_merged(model: nn.Module) -> bool:
    return bool(getattr(model, _MERGED_ATTR, {}))


def factors(model: nn.Module) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, float]]:
    """(layer, target) -> (A (r x in), B (out x r), scaling alpha/r or alpha/sqrt(r)), detached."""
    out = {}
    for wrapper in wrappers(model).values():
        for target, A in wrapper.lora_A.items():
            B = wrapper.lora_B[target]
            out[(wrapper.layer_index, target)] = (A.detach(), B.detach(), wrapper.scaling[target])
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], TARGETS.index(kv[0][1]))))


def delta_weights(model: nn.Module) -> dict[tuple[int, str], torch.Tensor]:
    """(layer, target) -> ΔW = scaling * B A in W's orientation (out x in)."""
    return {key: scaling * (B @ A) for key, (A, B, scaling) in factors(model).items()}


def param_groups(model: nn.Module, lr: float, lr_ratio: float = 1.0,
                 weight_decay: float = 0.0) -> list[dict]:
    """AdamW parameter groups for LoRA+ (Hayou et al. 2024): every B factor learns at
    lr_ratio * lr; A factors and every other trainable parameter (e.g. the task head) at lr.

    Only trainable parameters, in the model's order; an empty group is left out, so lr_ratio=1
    on a model without LoRA gives one group. Each group carries a "name" ("lora_B" or "base").
    """
    if isinstance(lr_ratio, bool) or not isinstance(lr_ratio, (int, float)) or not lr_ratio > 0:
        raise ValueError(f"lr_ratio must be a number > 0, got {lr_ratio!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    B_ids = {id(B) for w in wrappers(model).values() for B in w.lora_B.values()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if lr_ratio != 1 and not any(id(p) in B_ids for p in trainable):
        raise ValueError(f"lr_ratio={lr_ratio} sets the learning rate of LoRA's B factors, but "
                         "this model has no trainable B factor: use lr_ratio=1")
    groups = [
        {"name": "base", "params": [p for p in trainable if id(p) not in B_ids], "lr": lr},
        {"name": "lora_B", "params": [p for p in trainable if id(p) in B_ids], "lr": lr * lr_ratio},
    ]
    return [{**g, "weight_decay": weight_decay} for g in groups if g["params"]]


def target_weight(model: nn.Module, layer: int, target: str) -> torch.Tensor:
    """The base W (out x in) of one target, without ΔW, whether or not the model is adapted."""
    family = family_of(model)
    by_name = wrappers(model)
    for site in find_sites(model, family):
        if site.layer == layer and site.target == target:
            module = model.get_submodule(site.module_name)
            wrapper = by_name.get(site.module_name)
            base = module.base_layer if isinstance(module, LoRAWrapper) else module
            W = base.weight.detach()
            W = W.T if isinstance(base, Conv1D) else W
            start, stop = site.out_slice
            W = W[start:stop].clone()
            if wrapper is not None and is_merged(model) and target in wrapper.lora_A:
                W -= wrapper.delta_weight(target).detach().to(W.dtype)
            return W
    raise ValueError(f"no target {target!r} in layer {layer} of this {family.name} model")


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of a model."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def count_lora_parameters(model, targets=("q", "v"), rank: int = 8, ranks=None, layers=None) -> int:
    """LoRA's trainable parameters, sum of r * (d_in + d_out) over the adapted matrices.

    `model`: a project model name (roberta_base, gpt2_medium, ...), a transformers config, or a
    model. Names and configs are built on the meta device: real shapes, no memory, no download.
    """
    if not isinstance(model, nn.Module):
        from lora_repro.models import build_random

        model = build_random(model, meta=True)
    sites, rank_of = plan(model, targets, rank, ranks, layers)
    return sum(rank_of[s.target] * (s.d_in + s.d_out) for s in sites)
