"""Adapters on disk: our safetensors format, PEFT export, and reading factors from any source.

Our format: `adapter.safetensors` holding the LoRA factors (`lora.<layer>.<target>.A` / `.B`) and
every other trainable weight under its model name (`model.<name>`, e.g. the classifier head),
with `adapter.json` beside it saying how the adapter was made (also kept in the file's metadata).

    lora.save_adapter(model, "runs/x")          # runs/x/adapter.safetensors + runs/x/adapter.json
    lora.read_factors("runs/x")                 # {(layer, target): (A, B, scaling)}
    lora.read_factors("roberta_base_lora_mnli.bin", alpha=16)   # a loralib state dict
    lora.initial_factors("runs/x")              # {(layer, target): A as initialised}
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_repro.architectures import TARGETS, site_of_module_path
from lora_repro.lora.core import (
    LoRASpec,
    _set_submodule,
    factors,
    inject,
    is_adapted,
    is_merged,
    spec_of,
    unmerge,
    wrappers,
)
from lora_repro.lora.layers import init_seed, initial_A, scale_of
from lora_repro.records import ADAPTER_FILE, atomic_write

ADAPTER_META = "adapter.json"
FORMAT = "lora-repro-adapter/1"
Factors = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, float]]


def _paths(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_name(ADAPTER_META if path.name == ADAPTER_FILE else path.stem + ".json")
    return path / ADAPTER_FILE, path / ADAPTER_META


def _canonical(name: str) -> str:
    """A parameter name as in the un-adapted model (a wrapper keeps its base in `base_layer`)."""
    return name.replace(".base_layer.", ".")


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights only: LoRA factors and the rest that trains (head, biases)."""
    state = {}
    for (layer, target), (A, B, _) in factors(model).items():
        state[f"lora.{layer}.{target}.A"] = A.contiguous()
        state[f"lora.{layer}.{target}.B"] = B.contiguous()
    for name, param in model.named_parameters():
        if param.requires_grad and ".lora_A." not in name and ".lora_B." not in name:
            state[f"model.{_canonical(name)}"] = param.detach().contiguous()
    return state


def save_adapter(model: nn.Module, path) -> Path:
    """Write the trainable weights (LoRA + head) as safetensors and how they were made as JSON.

    `path`: a folder (gets adapter.safetensors + adapter.json) or a `.safetensors` file.
    Both files are written atomically. Returns the safetensors path.
    """
    spec = spec_of(model)
    if is_merged(model):
        raise ValueError("save_adapter needs an unmerged model: call lora_repro.lora.unmerge first")
    weights_path, meta_path = _paths(path)
    meta = {"format": FORMAT, **spec.to_dict()}
    state = {k: v.cpu() for k, v in adapter_state(model).items()}
    atomic_write(weights_path, lambda tmp: save_file(state, tmp, metadata={"lora_repro": json.dumps(meta)}))
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return weights_path


def read_adapter_meta(path) -> dict:
    """How an adapter of ours was made (its JSON, or the metadata inside the safetensors)."""
    weights_path, meta_path = _paths(path)
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    if weights_path.is_file():
        with safe_open(str(weights_path), framework="pt") as f:
            meta = (f.metadata() or {}).get("lora_repro")
        if meta:
            return json.loads(meta)
    raise FileNotFoundError(f"no lora-repro adapter at {path}: expected {weights_path}")


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load an adapter of ours into `model`: injects LoRA as recorded if the model has none yet.

    Every stored tensor must find its place and every LoRA factor of the model must be stored.
    """
    weights_path, _ = _paths(path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"adapter file not found: {weights_path}")
    meta = read_adapter_meta(path)
    fields = {k: v for k, v in meta.items() if k in LoRASpec.__dataclass_fields__}
    spec = LoRASpec(**fields)
    if not is_adapted(model):
        inject(
            model, targets=spec.targets, rank=max(spec.ranks.values()), alpha=spec.alpha, dropout=spec.dropout,
            init=spec.init, ranks=spec.ranks, layers=spec.layers, sigma=spec.sigma,
            bias=spec.bias, trainable_modules=spec.trainable_modules, seed=spec.seed,
            scaling=spec.scaling,
        )
        spec_of(model).init_stream = meta.get("init_stream", "shared")  # as it was made
    else:
        carried = spec_of(model)
        if (carried.targets, carried.ranks, carried.scaling) != (spec.targets, spec.ranks, spec.scaling):
            raise ValueError(
                f"adapter at {path} has targets {spec.targets} ranks {spec.ranks} scaling "
                f"{spec.scaling}; the model carries targets {carried.targets} ranks "
                f"{carried.ranks} scaling {carried.scaling}"
            )
    state = load_file(str(weights_path))
    lora_params = {}
    for wrapper in wrappers(model).values():
        for target in wrapper.lora_A:
            lora_params[f"lora.{wrapper.layer_index}.{target}.A"] = wrapper.lora_A[target]
            lora_params[f"lora.{wrapper.layer_index}.{target}.B"] = wrapper.lora_B[target]
    model_params = {_canonical(n): p for n, p in model.named_parameters()}
    missing = sorted(set(lora_params) - set(state))
    if missing:
        raise ValueError(f"adapter at {path} lacks {missing[:4]}{'...' if len(missing) > 4 else ''}")
    with torch.no_grad():
        for key, tensor in state.items():
            if key in lora_params:
                target_param = lora_params[key]
            elif key.startswith("model.") and key[6:] in model_params:
                target_param = model_params[key[6:]]
            else:
                raise ValueError(f"adapter at {path} holds {key!r}, which this model has no place for")
            if target_param.shape != tensor.shape:
                raise ValueError(
                    f"{key}: adapter shape {tuple(tensor.shape)} != model {tuple(target_param.shape)}"
                )
            target_param.copy_(tensor)
    return model


# ---------------------------------------------------------------- PEFT export

def _peft_config(model: nn.Module):
    from peft import LoraConfig

    spec = spec_of(model)
    module_rank, module_alpha = {}, {}
    fan_in_fan_out = False
    for name, wrapper in wrappers(model).items():
        first = next(iter(wrapper.lora_A))
        module_rank[name] = sum(A.shape[0] for A in wrapper.lora_A.values())
        # PEFT scales the whole module by alpha/r (rsLoRA: alpha/sqrt(r)); per-slice scalings
        # are folded into B below.
        rank_term = math.sqrt(module_rank[name]) if spec.scaling == "rslora" else module_rank[name]
        module_alpha[name] = wrapper.scaling[first] * rank_term
        fan_in_fan_out |= wrapper.fan_in_fan_out
    r = Counter(module_rank.values()).most_common(1)[0][0]
    alpha = Counter(module_alpha.values()).most_common(1)[0][0]
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=sorted(module_rank),
        rank_pattern={n: k for n, k in module_rank.items() if k != r},
        alpha_pattern={n: a for n, a in module_alpha.items() if a != alpha},
        lora_dropout=spec.dropout,
        fan_in_fan_out=fan_in_fan_out,
        bias=spec.bias,
        modules_to_save=list(spec.trainable_modules) or None,
        use_rslora=spec.scaling == "rslora",
    )


def export_peft(model: nn.Module, path) -> Path:
    """Write the adapter in PEFT's format (adapter_config.json + adapter_model.safetensors).

    `peft.PeftModel.from_pretrained(base, path)` then computes the same function. GPT-2's per-slice
    q/v adapters become one adapter on `c_attn` of rank r_q + r_v whose factors are block-structured:
    A = [A_q; A_v] and B puts B_q in q's rows and B_v in v's rows, zero elsewhere.
    """
    from peft import get_peft_model

    spec_of(model)
    config = _peft_config(model)
    # PEFT wraps a plain copy of the base model: our wrappers are swapped back for their bases.
    plain = copy.deepcopy(model)
    if is_merged(plain):
        unmerge(plain)
    ours = wrappers(plain)
    for name, wrapper in ours.items():
        _set_submodule(plain, name, wrapper.base_layer)
    peft_model = get_peft_model(plain, config)
    with torch.no_grad():
        for name, wrapper in ours.items():
            layer = peft_model.base_model.model.get_submodule(name)
            A = torch.cat([wrapper.lora_A[t] for t in wrapper.lora_A])
            B = torch.zeros(wrapper.out_features, A.shape[0], dtype=A.dtype)
            peft_scaling = layer.scaling["default"]
            col = 0
            for target, B_t in wrapper.lora_B.items():
                start, stop = wrapper.out_slices[target]
                B[start:stop, col:col + B_t.shape[1]] = B_t * (wrapper.scaling[target] / peft_scaling)
                col += B_t.shape[1]
            layer.lora_A["default"].weight.copy_(A)
            layer.lora_B["default"].weight.copy_(B)
    path = Path(path)
    peft_model.save_pretrained(str(path))
    config_path = path / "adapter_config.json"  # PEFT blanks the name of a model it cannot resolve
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = spec_of(model).model or None
    config_path.write_text(json.dumps(saved, indent=2) + "\n")
    slices = {}  # which rows of B and of A each target owns in the fused PEFT factors
    for name, wrapper in ours.items():
        col, slices[name] = 0, {}
        for target, A_t in wrapper.lora_A.items():
            slices[name][target] = [list(wrapper.out_slices[target]), [col, col + A_t.shape[0]]]
            col += A_t.shape[0]
    (path / "lora_repro.json").write_text(
        json.dumps({"format": FORMAT, **spec_of(model).to_dict(), "slices": slices}, indent=2) + "\n"
    )
    return path


# ---------------------------------------------------------------- reading factors from any source

def read_factors(path, alpha: float | None = None, fused_slices=("q", "v")) -> Factors:
    """(layer, target) -> (A (r x in), B (out x r), scaling) from an adapter on disk.

    Reads our adapters (a folder with adapter.safetensors, or the file), PEFT adapter folders
    (adapter_config.json + adapter_model.safetensors/.bin), and loralib state dicts (.bin/.pt/.pth,
    e.g. the LoRA authors' released checkpoints). loralib files do not record alpha: pass
    `alpha=`. For a loralib GPT-2 `c_attn` (MergedLinear), `fused_slices` names the slices it
    adapts, in order (the authors adapt q and v).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no adapter at {path}")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return _read_peft(path)
    weights_path, _ = _paths(path)
    if weights_path.is_file():
        return _read_ours(path)
    if path.is_file() and path.suffix in (".bin", ".pt", ".pth"):
        return _read_loralib(path, alpha, fused_slices)
    raise ValueError(
        f"cannot tell what {path} is: expected a lora-repro run/adapter folder or "
        f"{ADAPTER_FILE}, a PEFT adapter folder (adapter_config.json), or a loralib state dict "
        f"(.bin/.pt/.pth)"
    )


def _sorted(factors: Factors) -> Factors:
    return dict(sorted(factors.items(), key=lambda kv: (kv[0][0], TARGETS.index(kv[0][1]))))


def _read_ours(path: Path) -> Factors:
    meta = read_adapter_meta(path)
    state = load_file(str(_paths(path)[0]))
    out = {}
    for key, A in state.items():
        if key.startswith("lora.") and key.endswith(".A"):
            _, layer, target, _ = key.split(".")
            B = state[f"lora.{layer}.{target}.B"]
            scaling = scale_of(meta["alpha"], A.shape[0], meta.get("scaling", "standard"))
            out[(int(layer), target)] = (A, B, scaling)
    return _sorted(out)


def _split_fused(module_path: str, A, B, scaling, slices: dict, out: Factors) -> None:
    """Split one adapter on a fused q/k/v module into per-slice factors.

    `slices`: target -> (out rows, A rows) it owns; for a foreign adapter every slice shares all
    of A's rows, so each slice's ΔW is that third of the fused B A, exactly.
    """
    layer_of = {t: layer for layer, t in site_of_module_path(module_path)}
    for target, ((start, stop), (c0, c1)) in slices.items():
        out[(layer_of[target], target)] = (A[c0:c1], B[start:stop, c0:c1], scaling)


def _read_peft(path: Path) -> Factors:
    config = json.loads((path / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path} is a {config.get('peft_type')} adapter, not LoRA")
    if (path / "adapter_model.safetensors").is_file():
        state = load_file(str(path / "adapter_model.safetensors"))
    elif (path / "adapter_model.bin").is_file():
        state = torch.load(path / "adapter_model.bin", weights_only=True, map_location="cpu")
    else:
        raise FileNotFoundError(f"{path} has adapter_config.json but no adapter_model.safetensors")
    ours = path / "lora_repro.json"
    recorded_slices = json.loads(ours.read_text()).get("slices", {}) if ours.is_file() else {}
    from peft.utils.other import get_pattern_key

    out = {}
    for key, A in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        B = state[module + ".lora_B.weight"]
        r = A.shape[0]
        name = module.removeprefix("base_model.model.")
        rank_key = get_pattern_key(config.get("rank_pattern") or {}, name)
        alpha_key = get_pattern_key(config.get("alpha_pattern") or {}, name)
        r_cfg = (config.get("rank_pattern") or {}).get(rank_key, config["r"])
        alpha = (config.get("alpha_pattern") or {}).get(alpha_key, config["lora_alpha"])
        scaling = alpha / (r_cfg ** 0.5 if config.get("use_rslora") else r_cfg)
        if r != r_cfg:
            raise ValueError(f"{path}: {module} has rank {r}, its config says {r_cfg}")
        found = site_of_module_path(name)
        if not found:
            continue  # a module that is none of q, k, v, o (e.g. an FFN): not part of our analysis
        if len(found) == 1:
            out[found[0]] = (A, B, scaling)
            continue
        slices = recorded_slices.get(name)
        if slices is None:  # a foreign adapter over the whole fused c_attn: each third of it
            width = B.shape[0] // 3
            slices = {t: ((i * width, (i + 1) * width), (0, r)) for i, (_, t) in enumerate(found)}
        _split_fused(name, A, B, scaling, slices, out)
    if not out:
        raise ValueError(f"{path}: no LoRA factors on q, k, v or o found")
    return _sorted(out)


def _read_loralib(path: Path, alpha: float | None, fused_slices) -> Factors:
    if alpha is None:
        raise ValueError(
            f"{path} is a loralib state dict, which does not record lora_alpha: pass alpha= "
            f"(the LoRA authors' RoBERTa/DeBERTa scripts used lora_alpha 16 for roberta_base "
            f"and 32 for deberta_v2_xxlarge)"
        )
    # a foreign pickle: tensors only, never arbitrary objects
    state = torch.load(path, weights_only=True, map_location="cpu")
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    out = {}
    for key, A in state.items():
        if not key.endswith("lora_A"):
            continue
        module = key[: -len(".lora_A")]
        B = state[module + ".lora_B"]
        B = B.squeeze(-1) if B.dim() == 3 else B
        found = site_of_module_path(module)
        if not found:
            continue
        if len(found) == 1:
            r = A.shape[0]
            out[found[0]] = (A, B, alpha / r)
            continue
        # loralib MergedLinear: A stacks one r x in block per enabled slice, B one d x r block
        r = B.shape[1]
        n = A.shape[0] // r
        if n != len(fused_slices):
            raise ValueError(
                f"{module}: {n} adapted slices in the file, but fused_slices={fused_slices}"
            )
        d = B.shape[0] // n
        layer = found[0][0]
        for i, target in enumerate(fused_slices):
            out[(layer, target)] = (A[i * r:(i + 1) * r], B[i * d:(i + 1) * d], alpha / r)
    if not out:
        raise ValueError(f"{path}: no loralib factors (keys ending in lora_A / lora_B) on q, k, v, o")
    return _sorted(out)


# ---------------------------------------------------------------- the A's an adapter started from

def initial_factors(source) -> dict[tuple[int, str], torch.Tensor]:
    """(layer, target) -> A (r x in, float32) as initialised, recomputed from how it was made.

    `source`: an adapted model, or a run folder / adapter file of ours. Needs only the recorded
    seed, init, sigma and the shapes (layers, targets, ranks, widths), never the trained weights:
    the control for Section 7, whose phi between initial A's says what initialisation alone gives.
    Adapters saved before per-adapter streams (init_stream "shared") are replayed from their one
    generator, seeded once and drawn through the sites in order, as they were made.
    """
    if isinstance(source, nn.Module):
        spec = spec_of(source)
        meta = spec.to_dict()
        shapes = {key: tuple(A.shape) for key, (A, _, _) in factors(source).items()}
    else:
        meta = read_adapter_meta(source)
        meta.setdefault("init_stream", "shared")
        shapes = {key: tuple(A.shape) for key, (A, _, _) in _read_ours(Path(source)).items()}
    seed, stream = meta.get("seed"), meta["init_stream"]
    if seed is None:
        raise ValueError(f"{source}: no seed recorded, so its initial A's cannot be recomputed")
    shared = torch.Generator().manual_seed(seed) if stream == "shared" else None
    out = {}
    for (layer, target), (rank, d_in) in _sorted(shapes).items():
        generator = shared if stream == "shared" else torch.Generator().manual_seed(
            init_seed(seed, layer, target, rank))
        out[(layer, target)] = initial_A(rank, d_in, meta["init"], meta["sigma"], generator)
    return out
