"""LoRA (Hu et al., 2021): layers, injection, merge, ΔW, adapters on disk. See core.py and io.py."""

from lora_repro.lora.core import (
    BIAS_MODES,
    LoRASpec,
    count_lora_parameters,
    count_trainable,
    delta_weights,
    factors,
    inject,
    is_adapted,
    is_merged,
    mark_trainable,
    merge,
    param_groups,
    plan,
    spec_of,
    target_weight,
    unmerge,
    wrappers,
)
from lora_repro.lora.io import (
    adapter_state,
    export_peft,
    initial_factors,
    load_adapter,
    read_adapter_meta,
    read_factors,
    save_adapter,
)
from lora_repro.lora.layers import INITS, SCALINGS, LoRAWrapper, init_seed, scale_of

__all__ = [
    "BIAS_MODES", "INITS", "SCALINGS", "LoRASpec", "LoRAWrapper", "adapter_state",
    "count_lora_parameters", "count_trainable", "delta_weights", "export_peft", "factors",
    "init_seed", "initial_factors", "inject", "is_adapted", "is_merged", "load_adapter",
    "mark_trainable", "merge", "param_groups", "plan", "read_adapter_meta", "read_factors",
    "save_adapter", "scale_of", "spec_of", "target_weight", "unmerge", "wrappers",
]
