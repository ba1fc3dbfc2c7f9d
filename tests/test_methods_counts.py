"""The baselines' parameter counts on full-size meta-device models: the paper's formulas, the
printed counts of Tables 2 and 3 from the paper tier's presets, `lora-repro params`, and the one-line
errors for bad settings."""

from __future__ import annotations

import dataclasses

import pytest

from lora_repro import architectures, methods, params
from lora_repro.models import build_random, known_models

# one full-size model per family (meta device: no weights)
FAMILY_MODELS = {"bert": "roberta_base", "deberta_v2": "deberta_v2_xxlarge", "gpt2": "gpt2_medium",
                 "llama": "smollm2_135m"}


def dims(model: str) -> tuple[int, int, int]:
    """(L, d, FFN width) from known_models.json."""
    c = known_models()[model]["config"]
    d = c.get("hidden_size", c.get("n_embd"))
    return c.get("num_hidden_layers", c.get("n_layer")), d, c.get("intermediate_size") or 4 * d


def adapter(d: int, r: int) -> int:
    return 2 * d * r + r + d  # one adapter of Section 5.1's formula


def block_params(model: str) -> int:
    """Parameters of one transformer block, in closed form."""
    L, d, f = dims(model)
    if known_models()[model]["config"]["model_type"] == "llama":
        c = known_models()[model]["config"]
        kv = c["num_key_value_heads"] * c.get("head_dim", d // c["num_attention_heads"])
        return 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d  # q, o; k, v; gate, up, down; 2 RMSNorms
    return 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d  # q k v o, FFN, 2 LayerNorms


def meta_count(model: str, method: str, **fields) -> int:
    return params.count(model, method, fields, tier="quick")  # no paper table values: fields given here


def formula(model: str, method: str, **f) -> int:
    L, d, _ = dims(model)
    n = f.get("prefix_length", 0) + f.get("infix_length", 0)
    one = adapter(d, f["bottleneck"]) if "bottleneck" in f else 0
    return {
        "adapter_h": 2 * L * one + (2 * 2 * L * d if f.get("train_layernorm") else 0),
        "adapter_l": L * one + 2 * L * d,  # L_LN = L new LayerNorms
        "adapter_p": L * one,
        "adapter_d": (L - f.get("drop_layers", 0)) * one,
        "prefix_embed": d * n,
        "prefix_layer": L * d * n,
        "ft_top2": f.get("blocks", 2) * block_params(model),
    }[method]


CASES = [
    ("adapter_h", {"bottleneck": 8}),
    ("adapter_h", {"bottleneck": 64}),
    ("adapter_l", {"bottleneck": 16}),
    ("adapter_p", {"bottleneck": 16}),
    ("adapter_d", {"bottleneck": 16, "drop_layers": 5}),
    ("prefix_embed", {"prefix_length": 10, "infix_length": 4}),
    ("prefix_layer", {"prefix_length": 0, "infix_length": 7}),
    ("ft_top2", {"blocks": 2}),
    ("ft_top2", {"blocks": 1}),
]


@pytest.mark.parametrize("family", FAMILY_MODELS)
@pytest.mark.parametrize("method,fields", CASES)
def test_counts_follow_the_formulas(family, method, fields):
    model = FAMILY_MODELS[family]
    assert meta_count(model, method, **fields) == formula(model, method, **fields)


@pytest.mark.parametrize("family", ["bert", "deberta_v2", "gpt2"])  # LayerNorms of 2 d (weight + bias)
def test_houlsby_trained_layernorms_count_2_d_each(family):
    model = FAMILY_MODELS[family]
    fields = {"bottleneck": 8, "train_layernorm": True}
    assert meta_count(model, "adapter_h", **fields) == formula(model, "adapter_h", **fields)


def test_bitfit_counts_every_bias_but_the_head():
    L, d, f = dims("roberta_base")
    assert meta_count("roberta_base", "bitfit") == L * (7 * d + f) + d == 102_144  # + embeddings' LayerNorm
    L, d, _ = dims("gpt2_medium")
    assert meta_count("gpt2_medium", "bitfit") == L * 11 * d + d  # 11 d per block + ln_f
    built = build_random("deberta_v2_xxlarge", head="sequence_classification", meta=True)
    biases = sum(p.numel() for n, p in built.named_parameters()
                 if n.endswith(".bias") and not n.startswith(("classifier.", "pooler.")))
    assert meta_count("deberta_v2_xxlarge", "bitfit") == biases


# (model, method, preset, printed count in millions as the paper rounds it, our exact count)
PRINTED = [
    ("roberta_base", "bitfit", None, "0.1", 102_144),
    ("roberta_base", "adapter_d", None, "0.3", 306_628),
    ("roberta_base", "adapter_d", "large_adapters", "0.9", 909_132),
    ("roberta_large", "adapter_p", "large_adapters", "3.0", 3_024_312),
    ("roberta_large", "adapter_p", None, "0.8", 811_392),
    ("roberta_large", "adapter_h", "large_adapters", "6.0", 6_048_624),
    ("roberta_large", "adapter_h", None, "0.8", 835_968),
    ("gpt2_medium", "ft_top2", None, "25.19", 25_192_448),
    ("gpt2_medium", "adapter_l", None, "0.37", 368_784),
    ("gpt2_medium", "adapter_l", "large_adapters", "11.09", 11_089_152),
    ("gpt2_large", "adapter_l", None, "0.88", 875_808),
    ("gpt2_large", "adapter_l", "large_adapters", "23.00", 23_002_848),
]
# printed counts the formula cannot give: (..., printed, the size field and its preset value, count)
NEAREST = [
    ("gpt2_medium", "adapter_h", "11.09", "bottleneck", 112, 11_064_576),  # r = 113: 11.16M
    ("gpt2_medium", "prefix_layer", "0.35", "prefix_length", 14, 344_064),  # 15 tokens: 0.37M
    ("gpt2_large", "prefix_layer", "0.77", "prefix_length", 17, 783_360),  # 16 tokens: 0.74M
]


def _rounded(count: int, printed: str) -> str:
    decimals = len(printed.split(".")[1])
    return f"{count / 1e6:.{decimals}f}"


@pytest.mark.parametrize("model,method,preset,printed,exact", PRINTED)
def test_paper_presets_reproduce_the_printed_counts(model, method, preset, printed, exact):
    count = params.count(model, method, {}, tier="paper", preset=preset)
    assert count == exact
    assert _rounded(count, printed) == printed


@pytest.mark.parametrize("model,method,printed,field,size,nearest", NEAREST)
def test_unreachable_printed_counts_use_the_nearest(model, method, printed, field, size, nearest):
    count = params.count(model, method, {}, tier="paper")
    assert count == nearest == params.count(model, method, {field: size}, tier="paper")
    assert _rounded(count, printed) != printed
    target = float(printed) * 1e6
    for other in (size - 1, size + 1):  # the next size down or up is no nearer to the printed count
        assert abs(count - target) < abs(params.count(model, method, {field: other}, tier="paper") - target)


def test_params_cli_prints_a_breakdown_and_the_count_last(capsys):
    assert params.main(["model=gpt2_medium", "method=adapter_h", "method.bottleneck=8"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"trainable={formula('gpt2_medium', 'adapter_h', bottleneck=8)}"
    assert any("h.*.mlp.c_proj.bottleneck_adapter.up.weight" in line and "(24 x 1024x8)" in line for line in out)


def test_params_cli_counts_lora_like_the_paper(capsys):
    params.main(["model=roberta_base", "method=lora", "method.targets=[q,v]", "method.rank=8"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "trainable=294912"


def test_params_cli_takes_the_tier_table_and_its_presets(capsys):
    params.main(["model=roberta_large", "method=adapter_p", "preset=large_adapters", "task=sst2"])
    out = capsys.readouterr().out
    assert "bottleneck=61" in out and "paper: roberta_large/adapter_p/sst2" in out
    assert out.strip().splitlines()[-1] == "trainable=3024312"


@pytest.mark.parametrize("argv,needle", [
    (["model=roberta_base"], "method is not set"),
    (["model=roberta_base", "method=adapter_x"], "valid methods are"),
    (["model=roberta_base", "method=adapter_h", "bottleneck=8"], "method.<field>"),
    (["model=roberta_base", "method=adapter_h", "method.bottleneck"], "is not key=value"),
    (["model=roberta_base", "method=adapter_h", "method.size=8"], "method.size is not a setting"),
    (["model=tiny_bert", "method=adapter_h"], "method.bottleneck is not set"),
    (["model=roberta_base", "method=adapter_h", "method.bottleneck=0"], "method.bottleneck=0 is not valid"),
    (["model=roberta_base", "method=adapter_h", "method.bottleneck=769"], "at most d_model = 768"),
    (["model=roberta_base", "method=adapter_d", "method.bottleneck=8", "method.drop_layers=12"],
     "method.drop_layers=12 is not valid"),
    (["model=roberta_base", "method=ft_top2", "method.blocks=13"], "method.blocks=13 is not valid"),
    (["model=gpt2_medium", "method=prefix_layer", "method.prefix_length=0", "method.infix_length=0"],
     "l_p + l_i >= 1"),
    (["model=gpt2_medium", "method=prefix_embed", "method.prefix_length=-1", "method.infix_length=2"],
     "method.prefix_length=-1 is not valid: an integer >= 0"),
    (["model=smollm2_135m", "method=bitfit"], "not defined for model 'smollm2_135m' (family llama)"),
])
def test_bad_input_is_one_clear_line(argv, needle):
    with pytest.raises(ValueError) as err:
        params.main(argv)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_family_without_a_layout_has_no_baselines(monkeypatch):
    bare = dataclasses.replace(architectures.FAMILIES["gpt2"], layout=None)
    monkeypatch.setitem(architectures.FAMILIES, "gpt2", bare)
    built = build_random("gpt2_medium", head="causal_lm", meta=True)
    for name in ("adapter_h", "ft_top2", "prefix_layer"):
        method = methods.get(name)
        cfg = method.config(bottleneck=8) if name == "adapter_h" else (
            method.config(prefix_length=1, infix_length=0) if name == "prefix_layer" else method.config())
        with pytest.raises(ValueError, match=f"method='{name}' is not defined for the gpt2 family"):
            method.apply(built, cfg, [], 0)


def test_every_baseline_is_registered_with_a_documented_config():
    for name in ("ft_top2", "bitfit", "adapter_h", "adapter_l", "adapter_p", "adapter_d", "prefix_embed",
                 "prefix_layer"):
        method = methods.get(name)
        assert method.config().name == name and method.summary
        for field in dataclasses.fields(method.config):
            assert field.name == "name" or field.metadata["help"], (name, field.name)
