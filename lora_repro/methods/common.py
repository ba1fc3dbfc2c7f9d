"""What the baselines (partial.py, adapters.py, prefix.py) share: which parameters train, saving
and loading them, counting them, and the checks of their settings.

A baseline's `apply` decides the method's own parameters (those the paper's tables count) and
calls `train_only`: every other weight is frozen except the task head's, which always trains.
`save` writes what trains (own + head) to adapter.safetensors; `count` sums the own ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from lora_repro import settings
from lora_repro.architectures import FAMILIES
from lora_repro.records import ADAPTER_FILE, atomic_write

_OWN = "_lora_repro_own"  # on the model `apply` returns: names of the method's own parameters
_METHOD = "_lora_repro_method"  # ... and the method's name and settings


def families_with_layout() -> tuple[str, ...]:
    """The families whose architectures.py entry says where blocks, FFNs and norms live."""
    return tuple(name for name, family in FAMILIES.items() if family.layout is not None)


def head_parameters(model: nn.Module, head_modules) -> list[str]:
    """Names of the parameters of the task head's modules (a name matches itself or a suffix)."""
    head_modules = [head_modules] if isinstance(head_modules, str) else list(head_modules or ())
    module_names = [name for name, _ in model.named_modules()]
    prefixes = []
    for head in head_modules:
        matches = [n for n in module_names if n == head or n.endswith("." + head)]
        if not matches:
            top = sorted(n for n in module_names if n and "." not in n)
            raise ValueError(f"head module {head!r} not found in the model; top-level modules: {', '.join(top)}")
        prefixes += matches
    return [name for name, _ in model.named_parameters()
            if any(name.startswith(prefix + ".") for prefix in prefixes)]


def train_only(model: nn.Module, own: list[str], head_modules, method: str, cfg) -> nn.Module:
    """Freeze everything but the method's own parameters and the task head; remember which are own."""
    heads = set(head_parameters(model, head_modules))
    own = [name for name in own if name not in heads]
    if not own:
        raise ValueError(f"method={method!r} found nothing to train in this {type(model).__name__}")
    chosen = set(own) | heads
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    setattr(model, _OWN, own)
    setattr(model, _METHOD, {"name": method, **settings.as_dict(cfg)})
    return model


def own_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    names = getattr(model, _OWN, None)
    if names is None:
        raise ValueError("this model carries no baseline method: call the method's apply first")
    params = dict(model.named_parameters())
    return {name: params[name] for name in names}


def count(model: nn.Module, cfg=None) -> int:
    """The method's own trainable parameters, without the task head (the paper's convention)."""
    return sum(p.numel() for p in own_parameters(model).values())


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains (the method's own and the task head's), on the CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save(model: nn.Module, run_dir: Path) -> Path:
    state = trained_state(model)
    meta = {"method": json.dumps(getattr(model, _METHOD, {}), default=str)}
    return atomic_write(Path(run_dir) / ADAPTER_FILE, lambda tmp: save_file(state, tmp, metadata=meta))


def load(model: nn.Module, run_dir: Path) -> None:
    """Copy a saved adapter.safetensors into a model the same method was applied to."""
    path = Path(run_dir)
    path = path if path.is_file() else path / ADAPTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained parameters at {path}")
    saved = load_file(str(path))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        extra, missing = sorted(set(saved) - set(params)), sorted(set(params) - set(saved))
        raise ValueError(f"{path} does not fit this model: it holds {extra[:3]} the model does not train "
                         f"and lacks {missing[:3]} (was it saved with the same method, settings and model?)")
    with torch.no_grad():
        for name, tensor in saved.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model's has "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(tensor)


def check(cfg, where: str, required: tuple[str, ...] = ()) -> None:
    """Each field against its schema, then the fields that must be set (one line per error)."""
    settings.check_fields(settings.as_dict(cfg), type(cfg), where)
    for name in required:
        if getattr(cfg, name) is None:
            raise ValueError(f"{where}.{name} is not set and the tier's table has no value for it: "
                             f"set {where}.{name}=... ({type(cfg).__dataclass_fields__[name].metadata['help']})")


def seeded_normal(shape, std: float, seed: int, like: torch.Tensor) -> torch.Tensor:
    """N(0, std^2) drawn on the CPU from its own stream, then moved to `like`'s device and dtype
    (on the meta device nothing is drawn)."""
    if like.device.type == "meta":
        return torch.empty(shape, device="meta", dtype=like.dtype)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * std).to(like.device, like.dtype)


def stream(seed: int, *parts: int) -> int:
    """A seed of its own for one module (run seed, block, site), so no two share initial values."""
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**63 - 1)
    return value
