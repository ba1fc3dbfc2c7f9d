"""Where the abstract targets q, k, v, o live in each model family.

Configs, records, tables and figures speak `q, k, v, o`; this module is the one place that maps
them to module names. GPT-2 fuses q, k and v into one `c_attn` (a Conv1D, in x 3*hidden): each of
them is a slice of its output, adapted on its own.

    python -c "from lora_repro.architectures import family_of; print(family_of('gpt2'))"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

TARGETS = ("q", "k", "v", "o")


@dataclass(frozen=True)
class TargetSpec:
    """One abstract target: a module-name pattern (group 1 = layer index) and, for fused modules,
    which third of the output it occupies (0, 1, 2 of q, k, v) out of `n_slices`."""

    pattern: str
    slice_index: int | None = None
    n_slices: int = 3


@dataclass(frozen=True)
class Layout:
    """Where a block's parts live, as module-name patterns (group 1 = block index): what the
    baselines of lora_repro/methods/ hook into (adapters after `attn_out` / `ffn_out` / `block`,
    FT^Top2 on the last blocks, PreLayer after every block)."""

    block: str  # one transformer block (its output is the next block's input)
    attn_out: str  # the attention output projection, whose output enters a residual sum
    ffn_out: str  # the FFN's output projection, whose output enters a residual sum
    norms: str  # the block's own LayerNorms (or RMSNorms)
    biases: bool = True  # whether the model has bias vectors (BitFit needs them)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    layout: Layout | None = None  # None: the baselines (adapters, prefix, FT^Top2) are not defined
    causal_lm: bool = False  # decoder-only LM: NLG tasks, a causal_lm head


_BLOCK = r"(?:^|\.)encoder\.layer\.(\d+)"
ENCODER_LAYOUT = Layout(  # BERT, RoBERTa, DeBERTa-v2: post-LN blocks
    block=_BLOCK + "$", attn_out=_BLOCK + r"\.attention\.output\.dense$",
    ffn_out=_BLOCK + r"\.output\.dense$", norms=_BLOCK + r"\.(?:attention\.)?output\.LayerNorm$",
)


_ENCODER = r"(?:^|\.)layer\.(\d+)\.attention\."
_GPT2 = r"(?:^|\.)h\.(\d+)\.attn\."
_LLAMA = r"(?:^|\.)layers\.(\d+)\.self_attn\."

FAMILIES = {
    f.name: f
    for f in (
        Family(
            "bert",  # BERT, RoBERTa, all-MiniLM-L6-v2 share the module layout
            ("bert", "roberta", "xlm-roberta"),
            {
                "q": TargetSpec(_ENCODER + r"self\.query$"),
                "k": TargetSpec(_ENCODER + r"self\.key$"),
                "v": TargetSpec(_ENCODER + r"self\.value$"),
                "o": TargetSpec(_ENCODER + r"output\.dense$"),
            },
            ENCODER_LAYOUT,
        ),
        Family(
            "deberta_v2",
            ("deberta-v2",),
            {
                "q": TargetSpec(_ENCODER + r"self\.query_proj$"),
                "k": TargetSpec(_ENCODER + r"self\.key_proj$"),
                "v": TargetSpec(_ENCODER + r"self\.value_proj$"),
                "o": TargetSpec(_ENCODER + r"output\.dense$"),
            },
            ENCODER_LAYOUT,
        ),
        Family(
            "gpt2",
            ("gpt2",),
            {
                "q": TargetSpec(_GPT2 + r"c_attn$", slice_index=0),
                "k": TargetSpec(_GPT2 + r"c_attn$", slice_index=1),
                "v": TargetSpec(_GPT2 + r"c_attn$", slice_index=2),
                "o": TargetSpec(_GPT2 + r"c_proj$"),
            },
            Layout(block=r"(?:^|\.)h\.(\d+)$", attn_out=_GPT2 + r"c_proj$",
                   ffn_out=r"(?:^|\.)h\.(\d+)\.mlp\.c_proj$", norms=r"(?:^|\.)h\.(\d+)\.ln_[12]$"),
            causal_lm=True,
        ),
        Family(
            "llama",  # Llama, SmolLM2: separate nn.Linear projections; with grouped-query
            ("llama",),  # attention k_proj and v_proj map hidden -> n_kv_heads * head_dim
            {
                "q": TargetSpec(_LLAMA + r"q_proj$"),
                "k": TargetSpec(_LLAMA + r"k_proj$"),
                "v": TargetSpec(_LLAMA + r"v_proj$"),
                "o": TargetSpec(_LLAMA + r"o_proj$"),
            },
            Layout(block=r"(?:^|\.)layers\.(\d+)$", attn_out=_LLAMA + r"o_proj$",
                   ffn_out=r"(?:^|\.)layers\.(\d+)\.mlp\.down_proj$",
                   norms=r"(?:^|\.)layers\.(\d+)\.(?:input|post_attention)_layernorm$", biases=False),
            causal_lm=True,
        ),
    )
}

KNOWN_MODEL_TYPES = tuple(t for f in FAMILIES.values() for t in f.model_types)


def family_of(model_or_type) -> Family:
    """The family of a model, a transformers config or a `model_type` string."""
    model_type = model_or_type
    if not isinstance(model_or_type, str):
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ValueError(
        f"unknown model family {model_type!r}: lora-repro knows the model types "
        f"{', '.join(KNOWN_MODEL_TYPES)} (families {', '.join(FAMILIES)})"
    )


@dataclass(frozen=True)
class Site:
    """One adaptable matrix: target `target` of layer `layer`, in module `module_name`.

    `out_slice` is the (start, stop) range of the module's outputs it covers (the whole output
    except for GPT-2's fused q, k, v). `d_in`, `d_out` are the shapes of W (out x in) for it.
    """

    layer: int
    target: str
    module_name: str
    d_in: int
    d_out: int
    out_slice: tuple[int, int]


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """(out, in) of a Linear or a transformers Conv1D (which stores its weight as in x out)."""
    module = getattr(module, "base_layer", module)  # an adapted module: its frozen base
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return d_out, d_in
    raise TypeError(f"cannot adapt a {type(module).__name__}: only nn.Linear and Conv1D")


def find_sites(model: nn.Module, family: Family) -> list[Site]:
    """Every (layer, target) site of the model, in module order then q, k, v, o."""
    sites = []
    for name, module in model.named_modules():
        for target, spec in family.targets.items():
            match = re.search(spec.pattern, name)
            if not match:
                continue
            d_out_total, d_in = weight_shape(module)
            if spec.slice_index is None:
                out_slice = (0, d_out_total)
            else:
                width = d_out_total // spec.n_slices
                out_slice = (spec.slice_index * width, (spec.slice_index + 1) * width)
            d_out = out_slice[1] - out_slice[0]
            sites.append(Site(int(match.group(1)), target, name, d_in, d_out, out_slice))
    order = {t: i for i, t in enumerate(TARGETS)}
    return sorted(sites, key=lambda s: (s.layer, order.get(s.target, 99)))


def layout_of(model_or_type, method: str) -> Layout:
    """The family's layout, or one clear error if the family has none (`method` names the asker)."""
    family = family_of(model_or_type)
    if family.layout is None:
        with_layout = [f.name for f in FAMILIES.values() if f.layout is not None]
        raise ValueError(f"method={method!r} is not defined for the {family.name} family: its entry in "
                         f"lora_repro/architectures.py has no layout (families with one: {', '.join(with_layout)})")
    return family.layout


def find_modules(model: nn.Module, pattern: str) -> list[tuple[int, str, nn.Module]]:
    """(block index, name, module) of every module whose name matches `pattern`, by block index."""
    found = []
    for name, module in model.named_modules():
        match = re.search(pattern, name)
        if match:
            found.append((int(match.group(1)), name, module))
    return sorted(found, key=lambda item: item[0])


def site_of_module_path(path: str) -> list[tuple[int, str]]:
    """(layer, target) pairs a module path stands for in any family, for reading foreign files.

    A fused GPT-2 `c_attn` stands for q, k and v at once: the caller splits it.
    """
    found = []
    for family in FAMILIES.values():
        for target, spec in family.targets.items():
            match = re.search(spec.pattern, path)
            if match:
                found.append((int(match.group(1)), target))
    return found
