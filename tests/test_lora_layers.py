"""LoRA layers on tiny random-init models of every family: the formula, init, merge, freezing."""

import math

import pytest
import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from lora_repro import lora
from lora_repro.lora.layers import LoRAWrapper
from lora_repro.models import build_random

FAMILIES = ["tiny_bert", "tiny_roberta", "tiny_deberta_v2", "tiny_gpt2"]


def tiny(name, seed=0):
    model = build_random(name, seed=seed)
    model.eval()
    return model


def inputs(seed=1, batch=2, length=12):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, 1000, (batch, length), generator=g)}


def hidden(model, x):
    return model(**x).last_hidden_state


def randomize_B(model, std=0.05, seed=3):
    """B starts at zero; give it values so ΔW is not zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for B in wrapper.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * std)


@pytest.mark.parametrize("name", FAMILIES)
def test_adapted_model_starts_equal_to_pretrained(name):
    model, x = tiny(name), inputs()
    before = hidden(model, x)
    lora.inject(model, targets=("q", "k", "v", "o"), rank=4, alpha=8, seed=0)
    assert torch.equal(hidden(model, x), before)


@pytest.mark.parametrize("layer_cls", ["linear", "conv1d"])
def test_forward_is_Wx_plus_scaled_BAx(layer_cls):
    torch.manual_seed(0)
    d_in, d_out, r, alpha = 16, 12, 4, 8
    base = nn.Linear(d_in, d_out) if layer_cls == "linear" else Conv1D(d_out, d_in)
    if layer_cls == "conv1d":
        nn.init.normal_(base.weight)
        nn.init.normal_(base.bias)
    W = base.weight.detach().clone()
    W = W.T if layer_cls == "conv1d" else W  # W in out x in
    bias = base.bias.detach().clone()
    wrapper = LoRAWrapper(base)
    wrapper.add_target("q", r, alpha, (0, d_out), "gaussian", 0.02, None)
    B = torch.randn(d_out, r)
    with torch.no_grad():
        wrapper.lora_B["q"].copy_(B)
    A = wrapper.lora_A["q"].detach()
    x = torch.randn(3, 5, d_in)
    expected = x @ W.T + bias + (alpha / r) * (x @ A.T @ B.T)
    torch.testing.assert_close(wrapper(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapper.delta_weight("q"), (alpha / r) * B @ A)


def test_gpt2_fused_q_v_equals_separate_q_v_projections():
    """Adapting q and v slices of c_attn computes exactly what two separate adapted projections do."""
    torch.manual_seed(0)
    d = 8
    fused = Conv1D(3 * d, d)
    nn.init.normal_(fused.weight)
    nn.init.normal_(fused.bias)
    W = fused.weight.detach().T  # (3d x d), rows q | k | v
    bias = fused.bias.detach()
    separate = {}
    for i, t in enumerate("qkv"):
        linear = nn.Linear(d, d)
        with torch.no_grad():
            linear.weight.copy_(W[i * d:(i + 1) * d])
            linear.bias.copy_(bias[i * d:(i + 1) * d])
        separate[t] = linear

    fused_wrapper = LoRAWrapper(fused)
    for i, t in [(0, "q"), (2, "v")]:
        fused_wrapper.add_target(t, 2, 4, (i * d, (i + 1) * d), "gaussian", 0.5, None)
        with torch.no_grad():
            fused_wrapper.lora_B[t].normal_()
    for t in "qv":
        wrapper = LoRAWrapper(separate[t])
        wrapper.add_target(t, 2, 4, (0, d), "gaussian", 0.02, None)
        with torch.no_grad():
            wrapper.lora_A[t].copy_(fused_wrapper.lora_A[t])
            wrapper.lora_B[t].copy_(fused_wrapper.lora_B[t])
        separate[t] = wrapper

    x = torch.randn(2, 5, d)
    expected = torch.cat([separate[t](x) for t in "qkv"], dim=-1)
    torch.testing.assert_close(fused_wrapper(x), expected, rtol=1e-6, atol=1e-6)
    # k is untouched: its third equals the plain projection
    torch.testing.assert_close(fused_wrapper(x)[..., d:2 * d], fused(x)[..., d:2 * d])


def test_gpt2_targets_get_their_own_factors():
    model = tiny("tiny_gpt2")
    lora.inject(model, targets=("q", "v"), ranks={"q": 2, "v": 4}, alpha=8)
    c_attn = model.h[0].attn.c_attn
    assert isinstance(c_attn, LoRAWrapper)
    assert c_attn.lora_A["q"].shape == (2, 32) and c_attn.lora_B["q"].shape == (32, 2)
    assert c_attn.lora_A["v"].shape == (4, 32) and c_attn.lora_B["v"].shape == (32, 4)
    assert c_attn.out_slices == {"q": (0, 32), "v": (64, 96)}
    assert c_attn.scaling == {"q": 4.0, "v": 2.0}


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
def test_init_is_seeded_and_B_is_zero(init):
    def A_of(seed):
        model = tiny("tiny_bert")
        lora.inject(model, rank=8, init=init, seed=seed)
        return lora.factors(model)

    first, again, other = A_of(0), A_of(0), A_of(1)
    for key, (A, B, _) in first.items():
        assert torch.equal(A, again[key][0])
        assert not torch.equal(A, other[key][0])
        assert torch.count_nonzero(B) == 0


def test_gaussian_init_uses_sigma_and_kaiming_uses_loralib_bound():
    big = nn.Linear(1024, 1024)
    wrapper = LoRAWrapper(big)
    wrapper.add_target("q", 64, 64, (0, 1024), "gaussian", 0.02, torch.Generator().manual_seed(0))
    A = wrapper.lora_A["q"].detach()
    assert abs(A.mean().item()) < 1e-3 and abs(A.std().item() - 0.02) < 5e-4
    wrapper.add_target("k", 64, 64, (0, 1024), "kaiming", 0.02, torch.Generator().manual_seed(0))
    A = wrapper.lora_A["k"].detach()
    bound = 1 / math.sqrt(1024)  # kaiming_uniform_(a=sqrt(5)) on a (r x in) matrix
    assert A.abs().max() <= bound and A.abs().max() > 0.99 * bound


@pytest.mark.parametrize("name", FAMILIES)
def test_merge_matches_unmerged_and_unmerge_restores_W(name):
    model, x = tiny(name), inputs()
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    lora.inject(model, targets=("q", "v", "o"), rank=4, alpha=16, seed=0)
    randomize_B(model)
    unmerged = hidden(model, x)

    lora.merge(model)
    assert not any(isinstance(m, LoRAWrapper) for m in model.modules())
    merged = hidden(model, x)
    assert ((merged - unmerged).norm() / unmerged.norm()).item() <= 1e-5
    assert lora.is_merged(model)

    lora.unmerge(model)
    assert any(isinstance(m, LoRAWrapper) for m in model.modules())
    torch.testing.assert_close(hidden(model, x), unmerged, rtol=1e-5, atol=1e-5)
    restored = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
    for key, value in originals.items():
        assert (restored[key] - value).abs().max() <= 1e-6, key


def test_merged_forward_calls_no_lora_module():
    model, x = tiny("tiny_gpt2"), inputs()
    lora.inject(model, targets=("q", "v"), rank=4)
    calls = []
    for w in lora.wrappers(model).values():
        w.register_forward_hook(lambda *_: calls.append(1))
    hidden(model, x)
    assert len(calls) == 2  # one fused c_attn per layer
    calls.clear()
    lora.merge(model)
    hidden(model, x)
    assert calls == []


@pytest.mark.parametrize("name", FAMILIES)
def test_delta_weights_are_in_W_orientation(name):
    """ΔW from delta_weights equals (merged W - original W), read in out x in for every family."""
    model = tiny(name)
    lora.inject(model, targets=("q", "k", "v", "o"), rank=2, alpha=4, seed=0)
    randomize_B(model)
    before = {key: lora.target_weight(model, *key) for key in lora.factors(model)}
    deltas = lora.delta_weights(model)
    lora.merge(model)
    for key, delta in deltas.items():
        layer, target = key
        merged_W = _raw_weight(model, layer, target)
        torch.testing.assert_close(merged_W - before[key], delta, rtol=1e-5, atol=1e-6)
        # target_weight of a merged model still gives the base W
        torch.testing.assert_close(lora.target_weight(model, layer, target), before[key])
        A, B, scaling = lora.factors(model)[key]
        assert A.shape[0] == B.shape[1] and delta.shape == (B.shape[0], A.shape[1])


def _raw_weight(model, layer, target):
    from lora_repro.architectures import family_of, find_sites

    for site in find_sites(model, family_of(model)):
        if (site.layer, site.target) == (layer, target):
            W = model.get_submodule(site.module_name).weight.detach()
            W = W.T if isinstance(model.get_submodule(site.module_name), Conv1D) else W
            return W[site.out_slice[0]:site.out_slice[1]]


def test_only_lora_trains_and_bias_modes():
    model = build_random("tiny_bert", head="sequence_classification", num_labels=3)
    lora.inject(model, targets=("q", "v"), rank=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)

    model = build_random("tiny_bert", head="sequence_classification", num_labels=3)
    lora.inject(model, rank=4, bias="lora_only", trainable_modules=["classifier"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in names and "classifier.bias" in names
    assert "bert.encoder.layer.0.attention.self.query.base_layer.bias" in names
    assert "bert.encoder.layer.0.attention.self.key.bias" not in names
    assert not any(n.endswith("weight") and "lora" not in n and "classifier" not in n for n in names)

    model = build_random("tiny_bert", head="sequence_classification", num_labels=3)
    lora.inject(model, rank=4, bias="all")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bert.encoder.layer.0.attention.self.key.bias" in names
    assert "bert.embeddings.LayerNorm.bias" in names


def test_training_steps_change_only_trainable_parameters():
    torch.manual_seed(0)
    model = build_random("tiny_roberta", head="sequence_classification", num_labels=2)
    lora.inject(model, rank=4, alpha=8, trainable_modules=["classifier"], seed=0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = inputs(batch=8)
    labels = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(0))
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**x, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    assert any(torch.count_nonzero(B) > 0 for _, B, _ in lora.factors(model).values())


def test_dropout_applies_to_lora_input_in_training_only():
    torch.manual_seed(0)
    wrapper = LoRAWrapper(nn.Linear(16, 16), dropout=0.5)
    wrapper.add_target("q", 4, 8, (0, 16), "gaussian", 0.5, None)
    with torch.no_grad():
        wrapper.lora_B["q"].normal_()
    x = torch.randn(4, 16)
    wrapper.eval()
    torch.testing.assert_close(wrapper(x), wrapper(x))
    wrapper.train()
    assert not torch.allclose(wrapper(x), wrapper(x))
    # the base path never sees dropout: with B = 0 training output is exactly W x + b
    with torch.no_grad():
        wrapper.lora_B["q"].zero_()
    torch.testing.assert_close(wrapper(x), wrapper.base_layer(x))


@pytest.mark.parametrize("layer_cls", ["linear", "fused_conv1d"])
def test_gradients_match_the_formula(layer_cls):
    """Backward through the in-place update gives the gradients of W x + s B A x (float64)."""
    torch.manual_seed(0)
    d = 6
    base = (nn.Linear(d, d) if layer_cls == "linear" else Conv1D(3 * d, d)).double()
    out_slice = (0, d) if layer_cls == "linear" else (2 * d, 3 * d)
    wrapper = LoRAWrapper(base)
    wrapper.add_target("v", 2, 4, out_slice, "gaussian", 0.5, None)
    with torch.no_grad():
        wrapper.lora_B["v"].normal_()
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, base(x).shape[-1], dtype=torch.float64)
    (wrapper(x) * weights).sum().backward()
    got = [x.grad.clone(), wrapper.lora_A["v"].grad.clone(), wrapper.lora_B["v"].grad.clone()]

    A = wrapper.lora_A["v"].detach().clone().requires_grad_(True)
    B = wrapper.lora_B["v"].detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    out = base(x2)
    start, stop = out_slice
    delta = 2.0 * x2 @ A.T @ B.T
    out = torch.cat([out[:, :start], out[:, start:stop] + delta, out[:, stop:]], dim=-1)
    (out * weights).sum().backward()
    for mine, reference in zip(got, [x2.grad, A.grad, B.grad]):
        torch.testing.assert_close(mine, reference)
