"""Target mapping per family, parameter counts against the paper, and bad input refused cleanly."""

import pytest
import torch

from lora_repro import lora
from lora_repro.architectures import family_of
from lora_repro.models import build_random, known_models, model_config

EXPECTED_MODULES = {
    "tiny_bert": {
        "q": "encoder.layer.1.attention.self.query",
        "k": "encoder.layer.1.attention.self.key",
        "v": "encoder.layer.1.attention.self.value",
        "o": "encoder.layer.1.attention.output.dense",
    },
    "tiny_roberta": {
        "q": "encoder.layer.1.attention.self.query",
        "o": "encoder.layer.1.attention.output.dense",
    },
    "tiny_deberta_v2": {
        "q": "encoder.layer.1.attention.self.query_proj",
        "k": "encoder.layer.1.attention.self.key_proj",
        "v": "encoder.layer.1.attention.self.value_proj",
        "o": "encoder.layer.1.attention.output.dense",
    },
    "tiny_gpt2": {"q": "h.1.attn.c_attn", "v": "h.1.attn.c_attn", "o": "h.1.attn.c_proj"},
    "tiny_llama": {
        "q": "layers.1.self_attn.q_proj",
        "k": "layers.1.self_attn.k_proj",
        "v": "layers.1.self_attn.v_proj",
        "o": "layers.1.self_attn.o_proj",
    },
}


@pytest.mark.parametrize("name", EXPECTED_MODULES)
def test_targets_map_to_the_family_modules(name):
    model = build_random(name)
    sites, _ = lora.plan(model, targets=("q", "k", "v", "o"), rank=2)
    by_key = {(s.layer, s.target): s.module_name for s in sites}
    assert len(sites) == 2 * 4  # two layers x four targets
    for target, module in EXPECTED_MODULES[name].items():
        assert by_key[(1, target)] == module


def test_unknown_family_lists_known_ones():
    from transformers import T5Config

    with pytest.raises(ValueError, match=r"unknown model family 't5'.*bert.*roberta.*deberta-v2.*gpt2"):
        family_of(T5Config())


def test_per_target_ranks_and_layer_subset():
    model = build_random("tiny_bert")
    lora.inject(model, targets=("q", "v"), rank=8, ranks={"v": 2}, layers=[1], alpha=8)
    shapes = {key: (A.shape, scaling) for key, (A, B, scaling) in lora.factors(model).items()}
    assert shapes == {
        (1, "q"): (torch.Size([8, 32]), 1.0),
        (1, "v"): (torch.Size([2, 32]), 4.0),
    }


# (model, targets, rank, paper's count) -- Section 5 and Table 2 of the paper
PAPER_COUNTS = [
    ("roberta_base", ("q", "v"), 8, 294_912),  # 0.3M
    ("roberta_large", ("q", "v"), 8, 786_432),  # 0.8M
    ("deberta_v2_xxlarge", ("q", "v"), 16, 4_718_592),  # 4.7M
    ("gpt2_medium", ("q", "v"), 4, 393_216),  # 0.35M
    ("gpt2_large", ("q", "v"), 4, 737_280),  # 0.77M
]


@pytest.mark.parametrize("name,targets,rank,expected", PAPER_COUNTS)
def test_lora_parameter_counts_match_the_paper(name, targets, rank, expected):
    assert lora.count_lora_parameters(name, targets, rank) == expected
    # the same from a config and from a real-shaped model on the meta device
    assert lora.count_lora_parameters(model_config(name), targets, rank) == expected
    meta_model = build_random(name, meta=True)
    assert next(meta_model.parameters()).device.type == "meta"
    lora.inject(meta_model, targets=targets, rank=rank)
    trainable, _ = lora.count_trainable(meta_model)
    assert trainable == expected


def test_known_model_dimensions_are_shipped():
    dims = {n: s["config"] for n, s in known_models().items()}
    assert dims["roberta_base"]["hidden_size"] == 768 and dims["roberta_base"]["num_hidden_layers"] == 12
    assert dims["roberta_large"]["hidden_size"] == 1024 and dims["roberta_large"]["num_attention_heads"] == 16
    assert dims["deberta_v2_xxlarge"]["hidden_size"] == 1536 and dims["deberta_v2_xxlarge"]["num_hidden_layers"] == 48
    assert dims["gpt2_medium"]["n_embd"] == 1024 and dims["gpt2_large"]["n_layer"] == 36
    assert dims["gpt2_large"]["vocab_size"] == 50257 and dims["roberta_base"]["vocab_size"] == 50265


BAD_INPUT = [
    (dict(targets=("q", "x")), r"unknown target 'x'.*q, k, v, o"),
    (dict(targets=("ffn_in",)), r"unknown target 'ffn_in'"),
    (dict(targets=()), r"no targets"),
    (dict(rank=0), r"rank of 'q' must be an integer >= 1, got 0"),
    (dict(rank=2.5), r"must be an integer"),
    (dict(rank=33), r"rank 33 of 'q' is larger than min\(d_in, d_out\) = 32.*1\.\.32"),
    (dict(ranks={"k": 2}), r"rank is given for 'k', which is not adapted"),
    (dict(alpha=0), r"alpha must be a number > 0, got 0"),
    (dict(alpha=-1.0), r"alpha must be a number > 0"),
    (dict(dropout=1.0), r"dropout must lie in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), r"dropout must lie in \[0, 1\)"),
    (dict(init="xavier"), r"unknown init 'xavier'.*gaussian, kaiming"),
    (dict(bias="some"), r"unknown bias mode 'some'.*none, all, lora_only"),
    (dict(layers=[0, 5]), r"layer\(s\) \[5\] out of range.*0\.\.1"),
    (dict(trainable_modules=["head"]), r"trainable module 'head' not found"),
]


@pytest.mark.parametrize("kwargs,message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
@pytest.mark.parametrize("name", ["tiny_bert", "tiny_gpt2"])
def test_bad_input_is_refused_and_model_untouched(name, kwargs, message):
    model = build_random(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match=message):
        lora.inject(model, **kwargs)
    assert [type(m) for m in model.modules()] == modules_before
    assert not lora.is_adapted(model)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())


def test_lora_cannot_be_applied_twice():
    model = build_random("tiny_roberta")
    lora.inject(model, rank=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="already applied"):
        lora.inject(model, rank=2)
    assert model.state_dict().keys() == state.keys()
    lora.merge(model)  # merged out of the forward pass, still adapted
    with pytest.raises(ValueError, match="already applied"):
        lora.inject(model, rank=2)
