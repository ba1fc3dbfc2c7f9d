"""Full fine-tuning: every weight trains; the best epoch's weights are kept as model.safetensors
(the paper's MRPC, RTE and STS-B full-FT runs start from the MNLI one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from lora_repro.methods import Method, register
from lora_repro.records import WEIGHTS_FILE, atomic_write


@dataclass
class FullFTConfig:
    """Every weight of the model trains (no fields of its own)."""

    name: str = "full_ft"


def apply(model: nn.Module, cfg: FullFTConfig, head_modules: list[str], seed: int) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    # tied weights (GPT-2's lm_head = wte) appear once: safetensors refuses shared storage
    seen, state = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().cpu().contiguous()
    return state


def save(model: nn.Module, run_dir: Path) -> None:
    state = _state(model)
    atomic_write(Path(run_dir) / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))


def load(model: nn.Module, run_dir: Path) -> None:
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fine-tuned weights at {path}")
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected:
        raise ValueError(f"{path} holds {unexpected[:3]}, which this model has no place for")


def count(model: nn.Module, cfg: FullFTConfig) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def start_from(model: nn.Module, run_dir: Path, fresh_modules: list[str]) -> str:
    """Load another run's fine-tuned weights except `fresh_modules` (the task classifier: a new
    task may have another number of labels)."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"init_from {run_dir}: no {WEIGHTS_FILE} (its full-FT run kept no weights)")
    state = {k: v for k, v in load_file(str(path)).items()
             if not any(f".{m}." in f".{k}" for m in fresh_modules)}
    model.load_state_dict(state, strict=False)
    return f"fine-tuned weights of {run_dir} (fresh task head)"


FULL_FT = register(Method(
    name="full_ft", config=FullFTConfig, apply=apply, save=save, load=load, count=count, start_from=start_from,
    summary="full fine-tuning: every weight trains",
))
