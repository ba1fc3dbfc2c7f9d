"""LoRA factors and their labels, from run directories, adapter files, PEFT folders and loralib
state dicts; the base weights W they adapted; checks that name the bad value and the valid ones.

Factors are read only through `lora_repro.lora.read_factors` (which opens foreign pickles with
torch.load(weights_only=True)); labels (model, task, seed, tier) come from record.json (read
through `lora_repro.records`), else adapter.json, else a PEFT adapter_config.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from lora_repro.architectures import TARGETS
from lora_repro.records import find_records, read_record

LABEL_KEYS = ("model", "task", "seed", "tier", "rank", "alpha", "experiment", "run_id", "status")


class AnalysisError(ValueError):
    """Bad input to an analysis command; its message names the value and the valid choices."""


@dataclass
class Adapter:
    """The LoRA factors of one adapted model, keyed by (layer, target), and where they came from."""

    path: Path
    factors: dict  # (layer, target) -> (A (r x in), B (out x r), scaling alpha / r)
    labels: dict = field(default_factory=dict)

    def A(self, layer: int, target: str) -> torch.Tensor:
        return self.factors[(layer, target)][0]

    def B(self, layer: int, target: str) -> torch.Tensor:
        return self.factors[(layer, target)][1]

    def delta(self, layer: int, target: str) -> torch.Tensor:
        A, B, scaling = self.factors[(layer, target)]
        return scaling * (B.double() @ A.double())

    def rank(self, layer: int, target: str) -> int:
        return self.A(layer, target).shape[0]

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.factors})

    @property
    def targets(self) -> list[str]:
        present = {target for _, target in self.factors}
        return [t for t in TARGETS if t in present] + sorted(present - set(TARGETS))

    @property
    def n_layers(self) -> int:
        """Layers of the model, as far as the adapter tells (the highest adapted layer + 1)."""
        return max(self.layers) + 1

    def ranks(self) -> list[int]:
        return sorted({A.shape[0] for A, _, _ in self.factors.values()})

    def describe(self) -> str:
        """A short label for titles and tables: model, task, r, seed, tier."""
        parts = [str(self.labels.get("model") or self.path.name)]
        if self.labels.get("task"):
            parts.append(str(self.labels["task"]))
        if self.labels.get("shown_target"):
            parts.append(f"ΔW{self.labels['shown_target']}")
        parts.append("r=" + "/".join(map(str, self.ranks())))
        if self.labels.get("seed") is not None:
            parts.append(f"seed {self.labels['seed']}")
        return " ".join(parts) + f" [{self.labels.get('tier') or 'tier ?'}]"


def load_adapter(path, alpha: float | None = None) -> Adapter:
    """Factors and labels of a run directory, adapter.safetensors, PEFT folder or loralib .bin."""
    path = Path(path)
    if not path.exists():
        raise AnalysisError(
            f"{path}: no such file or directory. Expected a run directory (record.json + "
            "adapter.safetensors), an adapter.safetensors file, a PEFT adapter folder or a loralib "
            "state dict (.bin/.pt)"
        )
    labels = read_labels(path)
    if labels.get("status") not in (None, "done"):
        raise AnalysisError(f"{path}: the run's status is {labels['status']!r}, not 'done'")
    from lora_repro.lora import read_factors

    factors = read_factors(path, alpha=alpha)
    if not factors:
        raise AnalysisError(f"{path}: no LoRA factors found")
    return Adapter(path, dict(sorted(factors.items())), labels)


def read_labels(path: Path) -> dict:
    """model/task/seed/tier/... of what produced an adapter, from whichever metadata lies with it."""
    from lora_repro.lora import read_adapter_meta

    folder = path if path.is_dir() else path.parent
    record = read_record(folder)
    if record is not None:
        return {key: record[key] for key in LABEL_KEYS if record.get(key) is not None}
    try:
        meta = read_adapter_meta(path)  # ours: adapter.json beside the safetensors, or inside it
        return {key: meta[key] for key in LABEL_KEYS[:-1] if meta.get(key) not in (None, "")}
    except FileNotFoundError:
        pass
    if (folder / "adapter_config.json").is_file():  # PEFT
        data = json.loads((folder / "adapter_config.json").read_text())
        return {"model": data.get("base_model_name_or_path"), "rank": data.get("r"),
                "alpha": data.get("lora_alpha"), "tier": "PEFT adapter"}
    return {"model": None, "tier": "external checkpoint"}


def check_selection(adapter: Adapter, layers=None, targets=None) -> tuple[list[int], list[str]]:
    """Layers and targets to analyse (all adapted ones by default), each checked against adapter."""
    targets = list(targets) if targets else adapter.targets
    for target in targets:
        if target not in TARGETS:
            raise AnalysisError(f"unknown target {target!r}: valid targets are {', '.join(TARGETS)}")
        if target not in adapter.targets:
            raise AnalysisError(
                f"target {target!r} is not adapted in {adapter.path}: it adapts "
                f"{', '.join(adapter.targets)}"
            )
    layers = list(layers) if layers is not None else adapter.layers
    for layer in layers:
        if layer not in adapter.layers:
            raise AnalysisError(
                f"layer {layer} out of range for {adapter.path}: adapted layers are "
                f"{_span(adapter.layers)} (counted from 0)"
            )
    return layers, targets


def _span(layers: list[int]) -> str:
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def check_pair(first: Adapter, second: Adapter, keys, same_rank: bool = False) -> None:
    """Both adapters have every key, in spaces of one width (and of one rank if same_rank)."""
    for layer, target in keys:
        for adapter in (first, second):
            if (layer, target) not in adapter.factors:
                raise AnalysisError(
                    f"{adapter.path} has no factors for layer {layer} target {target!r}: it adapts "
                    f"layers {_span(adapter.layers)}, targets {', '.join(adapter.targets)}"
                )
        A1, A2 = first.A(layer, target), second.A(layer, target)
        if A1.shape[1] != A2.shape[1]:
            raise AnalysisError(
                f"layer {layer} target {target!r}: A is {tuple(A1.shape)} in {first.path} but "
                f"{tuple(A2.shape)} in {second.path}; adapters of different models?"
            )
        if same_rank and A1.shape[0] != A2.shape[0]:
            raise AnalysisError(
                f"rank mismatch at layer {layer} target {target!r}: r={A1.shape[0]} in "
                f"{first.path} but r={A2.shape[0]} in {second.path}; comparing seeds needs one rank"
            )


def middle_layer(n_layers: int) -> int:
    """The paper's layer 48 of 96 (counted from 1) is the middle one: n/2 - 1 counted from 0."""
    return max(n_layers // 2 - 1, 0)


def default_layers(n_layers: int) -> list[int]:
    """First, quarter, middle and last layer (counted from 0). The paper shows layers 1, 32, 64,
    96 of GPT-3's 96 (Figs. 6, 7)."""
    return sorted({0, n_layers // 4, n_layers // 2, n_layers - 1})


def base_weight(adapter: Adapter, layer: int, target: str, base: str | None = None) -> torch.Tensor:
    """The frozen W (out x in) that the adapter adapted, from its base model (or `base`)."""
    name = base or adapter.labels.get("model")
    if not name:
        raise AnalysisError(
            f"{adapter.path} does not record its base model (a loralib state dict carries only "
            "the LoRA factors), so W is unknown: pass --base with a project model name or a local "
            "model folder. The authors' RoBERTa checkpoints need roberta-base, which cannot be "
            "downloaded offline."
        )
    model = _load_base(str(name))
    from lora_repro.lora import target_weight

    try:
        W = target_weight(model, layer, target)
    except ValueError as err:
        raise AnalysisError(f"base model {name!r}: {err}") from err
    if W.shape != adapter.delta(layer, target).shape:
        raise AnalysisError(
            f"base model {name!r} has W of shape {tuple(W.shape)} at layer {layer} target "
            f"{target!r}, but the adapter's dW is {tuple(adapter.delta(layer, target).shape)}"
        )
    return W


@cache
def _load_base(name: str):
    from lora_repro.models import load_pretrained

    try:
        return load_pretrained(name)
    except (OSError, ValueError) as err:
        raise AnalysisError(
            f"cannot load base model {name!r}, whose W the amplification and Fig. 8 need: {err}"
        ) from err


def discover_runs(runs_dir) -> list[Path]:
    """Finished run directories (record.json with status done, plus adapter.safetensors) at any
    depth under runs_dir: all runs, one experiment's, or one run."""
    run_dirs = [Path(record["run_dir"]) for record in find_records(runs_dir, status="done")]
    return [run_dir for run_dir in run_dirs if (run_dir / "adapter.safetensors").is_file()]
