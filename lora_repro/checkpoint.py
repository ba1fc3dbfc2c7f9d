"""Resumable training state in one safetensors file, written atomically.

Holds the trainable weights, the optimizer's tensors, the RNG state and, in the metadata, the
scheduler, the optimizer's param groups and the progress (epoch, step within it, metrics so far).
A run killed at any moment restarts from the last complete file; there is never half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lora_repro.records import atomic_write

CHECKPOINT_FILE = "checkpoint.safetensors"


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, progress: dict) -> Path:
    tensors = {
        f"model.{name}": param.detach().cpu().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    optim_state = optimizer.state_dict()
    for index, state in optim_state["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    meta = {
        "progress": progress,
        "param_groups": optim_state["param_groups"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"state": json.dumps(meta, default=float)}))
    return path


def load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict | None:
    """Restore weights, optimizer, scheduler and RNG; return the saved progress (None: no file)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("model."):
                name = key[len("model."):]
                if name not in params:
                    raise ValueError(f"checkpoint {path} holds {name!r}, which the model lacks")
                params[name].copy_(value)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return meta["progress"]


def remove_checkpoint(run_dir: Path) -> None:
    path = Path(run_dir) / CHECKPOINT_FILE
    if path.exists():
        path.unlink()
