"""Options of the LoRA core: rsLoRA's scale, LoRA+'s parameter groups, per-adapter init streams."""

import json
import math

import pytest
import torch
from peft import PeftModel

from lora_repro import lora
from lora_repro.models import build_random


def fresh(name="tiny_bert", head=None):
    model = build_random(name, head=head, seed=0)
    model.eval()
    return model


def trained(model, seed=3):
    """Give every B (and A) new values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for p in list(wrapper.lora_A.values()) + list(wrapper.lora_B.values()):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def logits(model):
    x = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


# -- rsLoRA --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_bert", "tiny_gpt2"])
def test_rslora_delta_is_alpha_over_sqrt_r_times_BA(name):
    model = trained(lora.inject(fresh(name), targets=("q", "v"), ranks={"q": 4, "v": 16}, alpha=8,
                                scaling="rslora", seed=0))
    for (layer, target), (A, B, scaling) in lora.factors(model).items():
        r = A.shape[0]
        assert scaling == 8 / math.sqrt(r)  # 4.0 at r=4, 2.0 at r=16
        torch.testing.assert_close(lora.delta_weights(model)[(layer, target)], 8 / math.sqrt(r) * B @ A)
    assert lora.spec_of(model).scaling == "rslora"


def test_rslora_merge_and_standard_differ_by_sqrt_r():
    std = trained(lora.inject(fresh(), rank=16, alpha=8, seed=0))
    rs = trained(lora.inject(fresh(), rank=16, alpha=8, seed=0, scaling="rslora"))
    for key, delta in lora.delta_weights(std).items():
        torch.testing.assert_close(lora.delta_weights(rs)[key], 4.0 * delta)  # sqrt(16)
    before = logits(rs)
    lora.merge(rs)
    torch.testing.assert_close(logits(rs), before, rtol=1e-5, atol=1e-5)


def test_unknown_scaling_is_refused():
    with pytest.raises(ValueError, match="unknown scaling 'rs'.*standard, rslora"):
        lora.inject(fresh(), scaling="rs")


def test_rslora_survives_save_load_read_and_peft(tmp_path):
    model = trained(lora.inject(fresh(head="sequence_classification"), rank=4, alpha=8,
                                scaling="rslora", seed=0, trainable_modules=["classifier"]))
    expected = logits(model)
    lora.save_adapter(model, tmp_path / "run")
    assert lora.read_adapter_meta(tmp_path / "run")["scaling"] == "rslora"
    for key, (A, B, scaling) in lora.read_factors(tmp_path / "run").items():
        assert scaling == 8 / 2
        torch.testing.assert_close(scaling * B @ A, lora.delta_weights(model)[key])
    reloaded = lora.load_adapter(fresh(head="sequence_classification"), tmp_path / "run")
    assert lora.spec_of(reloaded).scaling == "rslora"
    torch.testing.assert_close(logits(reloaded), expected, rtol=0, atol=0)
    standard = lora.inject(fresh(head="sequence_classification"), rank=4, alpha=8,
                           trainable_modules=["classifier"])
    with pytest.raises(ValueError, match="scaling rslora"):
        lora.load_adapter(standard, tmp_path / "run")

    lora.export_peft(model, tmp_path / "peft")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["use_rslora"]
    peft_model = PeftModel.from_pretrained(fresh(head="sequence_classification"), tmp_path / "peft")
    assert (logits(peft_model) - expected).abs().max().item() <= 1e-5
    for key, (A, B, scaling) in lora.read_factors(tmp_path / "peft").items():
        torch.testing.assert_close(scaling * B @ A, lora.delta_weights(model)[key])


def test_rslora_export_of_gpt2_fused_slices_of_two_ranks(tmp_path):
    model = trained(lora.inject(fresh("tiny_gpt2", "causal_lm"), targets=("q", "v"),
                                ranks={"q": 2, "v": 8}, alpha=4, scaling="rslora", seed=0))
    lora.export_peft(model, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(fresh("tiny_gpt2", "causal_lm"), tmp_path / "peft")
    assert (logits(peft_model) - logits(model)).abs().max().item() <= 1e-5


# -- LoRA+ ---------------------------------------------------------------------------------------

def test_param_groups_put_B_at_lr_ratio_times_lr():
    model = lora.inject(fresh(head="sequence_classification"), rank=4,
                        trainable_modules=["classifier"], seed=0)
    groups = lora.param_groups(model, lr=1e-3, lr_ratio=16, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["base"]["lr"] == 1e-3 and by_name["lora_B"]["lr"] == 16e-3
    assert all(g["weight_decay"] == 0.1 for g in groups)
    Bs = {id(B) for w in lora.wrappers(model).values() for B in w.lora_B.values()}
    As = {id(A) for w in lora.wrappers(model).values() for A in w.lora_A.values()}
    head = {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in by_name["lora_B"]["params"]} == Bs
    assert {id(p) for p in by_name["base"]["params"]} == As | head
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 16e-3]


def test_param_groups_step_moves_B_by_the_ratio():
    """Plain SGD, one step, equal gradients: B moves lr_ratio times as far as A."""
    model = lora.inject(fresh(), rank=2, seed=0)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    before = {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}
    torch.optim.SGD(lora.param_groups(model, lr=0.01, lr_ratio=4)).step()
    wrapper = next(iter(lora.wrappers(model).values()))
    A, B = wrapper.lora_A["q"], wrapper.lora_B["q"]
    torch.testing.assert_close(before[id(A)] - A.detach(), torch.full_like(A, 0.01))
    torch.testing.assert_close(before[id(B)] - B.detach(), torch.full_like(B, 0.04))


def test_param_groups_errors():
    model = lora.inject(fresh(), rank=2, seed=0)
    for bad in (0, -1.0, True):
        with pytest.raises(ValueError, match="lr_ratio must be a number > 0"):
            lora.param_groups(model, lr=1e-3, lr_ratio=bad)
    plain = fresh()
    assert len(lora.param_groups(plain, lr=1e-3)) == 1  # full FT: one group
    with pytest.raises(ValueError, match="no trainable B factor"):
        lora.param_groups(plain, lr=1e-3, lr_ratio=16)


# -- independent init streams --------------------------------------------------------------------

def A_at(rank, seed=0, targets=("q", "v"), name="tiny_bert"):
    return {k: A for k, (A, _, _) in lora.factors(lora.inject(fresh(name), targets=targets,
                                                              rank=rank, seed=seed)).items()}


def test_low_rank_A_is_not_the_first_rows_of_high_rank_A():
    low, high = A_at(2), A_at(16)
    for key in low:
        assert not torch.allclose(low[key], high[key][:2])
        # independent draws: rows of the two are no more alike than chance (|cos| ~ 1/sqrt(32))
        cos = torch.nn.functional.normalize(low[key], dim=1) @ torch.nn.functional.normalize(
            high[key], dim=1).T
        assert cos.abs().max() < 0.9


def test_init_streams_are_reproducible_and_distinct_per_layer_and_target():
    first, again, other_seed = A_at(4), A_at(4), A_at(4, seed=1)
    for key in first:
        assert torch.equal(first[key], again[key])
        assert not torch.equal(first[key], other_seed[key])
    assert not torch.equal(first[(0, "q")], first[(1, "q")])
    assert not torch.equal(first[(0, "q")], first[(0, "v")])
    # an adapter's A does not depend on which other targets are adapted beside it
    only_v = A_at(4, targets=("v",))
    assert torch.equal(only_v[(1, "v")], first[(1, "v")])
    assert lora.init_seed(0, 1, "v", 4) == lora.init_seed(0, 1, "v", 4) != lora.init_seed(0, 1, "v", 8)


def test_without_a_seed_one_is_drawn_and_recorded():
    torch.manual_seed(5)
    model = lora.inject(fresh(), rank=4)
    seed = lora.spec_of(model).seed
    assert isinstance(seed, int)
    again = A_at(4, seed=seed)
    assert all(torch.equal(A, again[key]) for key, (A, _, _) in lora.factors(model).items())


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
def test_initial_factors_recompute_the_A_of_a_model_and_of_a_saved_run(tmp_path, init):
    model = lora.inject(fresh("tiny_gpt2"), targets=("q", "v"), ranks={"q": 2, "v": 4},
                        init=init, seed=7)
    at_init = {k: A.clone() for k, (A, _, _) in lora.factors(model).items()}
    trained(model)
    lora.save_adapter(model, tmp_path)
    for source in (model, tmp_path):
        recomputed = lora.initial_factors(source)
        assert recomputed.keys() == at_init.keys()
        for key, A in at_init.items():
            assert torch.equal(recomputed[key], A)
            assert not torch.equal(recomputed[key], lora.factors(model)[key][0])  # not the trained A


def test_initial_factors_replay_an_adapter_saved_with_one_shared_generator(tmp_path):
    """Adapters saved before per-adapter streams: one generator, drawn through sites in order."""
    model = lora.inject(fresh(), targets=("q", "v"), rank=4, seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for A in wrapper.lora_A.values():
                A.normal_(0.0, 0.02, generator=generator)
    old = {k: A.clone() for k, (A, _, _) in lora.factors(model).items()}
    lora.save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / "adapter.json").read_text())
    del meta["init_stream"], meta["scaling"]  # as the files of that time read
    (tmp_path / "adapter.json").write_text(json.dumps(meta))
    replayed = lora.initial_factors(tmp_path)
    assert all(torch.equal(replayed[k], A) for k, A in old.items())
    assert torch.equal(replayed[(0, "q")], old[(0, "q")])
    assert lora.read_factors(tmp_path)[(0, "q")][2] == 8 / 4  # no scaling recorded: standard
    assert lora.spec_of(lora.load_adapter(fresh(), tmp_path)).init_stream == "shared"
