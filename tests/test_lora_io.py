"""Adapters on disk: our format round-trips, PEFT sees the same function, factors read from all sources."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from lora_repro import lora
from lora_repro.models import build_random, load_pretrained


def trained(model, seed=3):
    """Fill B (zero at init) and the head so the adapter is not trivially the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for B in wrapper.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * 0.05)
        for name, p in model.named_parameters():
            if p.requires_grad and "lora_" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def logits(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 1000, (2, 12), generator=g)
    model.eval()
    with torch.no_grad():
        return model(input_ids=x).logits


# (model, head, inject kwargs)
CASES = [
    ("tiny_bert", "sequence_classification", dict(targets=("q", "v"), rank=4, alpha=8,
                                                   trainable_modules=["classifier"])),
    ("tiny_roberta", "sequence_classification", dict(targets=("q", "k", "v", "o"), rank=4, alpha=16,
                                                      ranks={"o": 2}, trainable_modules=["classifier"])),
    ("tiny_deberta_v2", "sequence_classification", dict(targets=("q", "v"), rank=2, alpha=4,
                                                         trainable_modules=["classifier", "pooler"])),
    ("tiny_gpt2", "causal_lm", dict(targets=("q", "v"), rank=4, alpha=32)),
    ("tiny_gpt2", "causal_lm", dict(targets=("q", "k", "v", "o"), rank=4, ranks={"k": 2}, alpha=8)),
    ("tiny_bert", "sequence_classification", dict(targets=("q", "v"), rank=4, bias="all",
                                                   trainable_modules=["classifier"])),
]
IDS = ["bert-qv-head", "roberta-qkvo-ranks", "deberta-qv", "gpt2-qv", "gpt2-qkvo-ranks", "bert-bias-all"]


def fresh(name, head):
    kwargs = {"num_labels": 3} if head == "sequence_classification" else {}
    return build_random(name, head=head, seed=0, **kwargs)


@pytest.mark.parametrize("name,head,kwargs", CASES, ids=IDS)
def test_save_load_roundtrip(tmp_path, name, head, kwargs):
    model = trained(lora.inject(fresh(name, head), seed=0, **kwargs))
    expected = logits(model)
    path = lora.save_adapter(model, tmp_path / "run")
    assert path == tmp_path / "run" / "adapter.safetensors"
    meta = json.loads((tmp_path / "run" / "adapter.json").read_text())
    assert meta["targets"] == list(kwargs["targets"]) and meta["alpha"] == kwargs.get("alpha", 8)
    assert meta["model"] == name and meta["init"] == "gaussian"
    # only trainable weights are stored
    stored = load_file(str(path))
    n_trainable, n_total = lora.count_trainable(model)
    assert sum(t.numel() for t in stored.values()) == n_trainable < n_total

    reloaded = lora.load_adapter(fresh(name, head), tmp_path / "run")  # injects as recorded
    torch.testing.assert_close(logits(reloaded), expected, rtol=0, atol=0)
    assert lora.spec_of(reloaded).ranks == lora.spec_of(model).ranks


def test_load_adapter_refuses_a_mismatch(tmp_path):
    model = trained(lora.inject(fresh("tiny_bert", None), targets=("q", "v"), rank=4))
    lora.save_adapter(model, tmp_path)
    other = lora.inject(fresh("tiny_bert", None), targets=("q",), rank=4)
    with pytest.raises(ValueError, match=r"targets \['q', 'v'\].*carries targets \['q'\]"):
        lora.load_adapter(other, tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter file not found"):
        lora.load_adapter(fresh("tiny_bert", None), tmp_path / "nowhere")


@pytest.mark.parametrize("name,head,kwargs", CASES, ids=IDS)
def test_peft_from_pretrained_gives_the_same_logits(tmp_path, name, head, kwargs):
    model = trained(lora.inject(fresh(name, head), seed=0, **kwargs))
    expected = logits(model)
    lora.export_peft(model, tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == name
    peft_model = PeftModel.from_pretrained(fresh(name, head), tmp_path / "peft")
    assert (logits(peft_model) - expected).abs().max().item() <= 1e-5
    # and back: the factors PEFT holds give our ΔW for every (layer, target)
    ours, read = lora.delta_weights(model), lora.read_factors(tmp_path / "peft")
    assert read.keys() == ours.keys()
    for key, (A, B, scaling) in read.items():
        torch.testing.assert_close(scaling * B @ A, ours[key], rtol=1e-5, atol=1e-7)


def test_gpt2_export_is_one_block_structured_adapter_on_c_attn(tmp_path):
    model = trained(lora.inject(fresh("tiny_gpt2", "causal_lm"), targets=("q", "v"), rank=4, alpha=8))
    lora.export_peft(model, tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    A = state["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    B = state["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    assert A.shape == (8, 32) and B.shape == (96, 8)  # rank 2r over the fused 3d outputs
    assert torch.count_nonzero(B[:32, 4:]) == 0 and torch.count_nonzero(B[64:, :4]) == 0
    assert torch.count_nonzero(B[32:64]) == 0  # k untouched


def test_read_factors_of_our_adapter_file_and_folder(tmp_path):
    model = trained(lora.inject(fresh("tiny_roberta", None), targets=("q", "v"), rank=4, alpha=8))
    lora.save_adapter(model, tmp_path)
    for source in (tmp_path, tmp_path / "adapter.safetensors"):
        read = lora.read_factors(source)
        for key, (A, B, scaling) in lora.factors(model).items():
            assert torch.equal(read[key][0], A) and torch.equal(read[key][1], B)
            assert read[key][2] == scaling == 2.0


def test_read_factors_of_a_foreign_peft_adapter_on_whole_c_attn(tmp_path):
    """A PEFT adapter made by PEFT itself over the whole fused c_attn: each third is one target."""
    from peft import LoraConfig, get_peft_model

    base = fresh("tiny_gpt2", "causal_lm")
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                 fan_in_fan_out=True, init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    layer = peft_model.base_model.model.transformer.h[1].attn.c_attn
    fused_delta = 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    read = lora.read_factors(tmp_path)
    assert set(read) == {(i, t) for i in (0, 1) for t in "qkv"}
    for i, t in enumerate("qkv"):
        A, B, scaling = read[(1, t)]
        torch.testing.assert_close(scaling * B @ A, fused_delta[i * 32:(i + 1) * 32])


def test_read_factors_of_a_loralib_gpt2_merged_linear(tmp_path):
    """loralib's MergedLinear stores A as [A_q; A_v] (2r x in) and B as [B_q; B_v] (2d x r)."""
    r, d = 2, 8
    A_q, A_v, B_q, B_v = (torch.randn(r, d), torch.randn(r, d), torch.randn(d, r), torch.randn(d, r))
    state = {
        "transformer.h.3.attn.c_attn.lora_A": torch.cat([A_q, A_v]),
        "transformer.h.3.attn.c_attn.lora_B": torch.cat([B_q, B_v]),
        "transformer.h.3.attn.c_attn.weight": torch.randn(d, 3 * d),
    }
    torch.save(state, tmp_path / "gpt2_lora.pt")
    read = lora.read_factors(tmp_path / "gpt2_lora.pt", alpha=32)
    assert set(read) == {(3, "q"), (3, "v")}
    assert torch.equal(read[(3, "q")][0], A_q) and torch.equal(read[(3, "v")][1], B_v)
    assert read[(3, "v")][2] == 16.0


def test_read_factors_of_the_authors_roberta_mnli_checkpoint(shared_data):
    path = shared_data / "checkpoints" / "roberta_base_lora_mnli.bin"
    with pytest.raises(ValueError, match="does not record lora_alpha: pass alpha="):
        lora.read_factors(path)
    read = lora.read_factors(path, alpha=16)
    assert set(read) == {(i, t) for i in range(12) for t in ("q", "v")}
    for A, B, scaling in read.values():
        assert A.shape == (8, 768) and B.shape == (768, 8) and scaling == 2.0
        assert torch.count_nonzero(B) > 0  # trained factors, not an init


def test_authors_checkpoint_loads_into_a_roberta_base_shaped_model(shared_data):
    """The released factors fit our roberta_base adapter layout exactly (meta-free, random W)."""
    read = lora.read_factors(shared_data / "checkpoints" / "roberta_base_lora_mnli.bin", alpha=16)
    model = build_random("roberta_base", meta=True)
    lora.inject(model, targets=("q", "v"), rank=8, alpha=16)
    ours = lora.factors(model)
    assert ours.keys() == read.keys()
    assert all(ours[k][0].shape == read[k][0].shape and ours[k][2] == read[k][2] for k in ours)


def test_read_factors_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter at"):
        lora.read_factors(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="cannot tell what"):
        lora.read_factors(tmp_path / "notes.txt")


def test_real_minilm_adapts_exports_and_reloads(tmp_path):
    """all-MiniLM-L6-v2 from its PyPI package: six BERT layers, hidden 384, offline."""
    model = load_pretrained("minilm_l6", head="sequence_classification", num_labels=2)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    x = torch.randint(1000, 5000, (2, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        base_out = model.bert(input_ids=x).last_hidden_state
    lora.inject(model, targets=("q", "v"), rank=8, alpha=8, trainable_modules=["classifier"], seed=0)
    with torch.no_grad():
        assert torch.equal(model.bert(input_ids=x).last_hidden_state, base_out)
    assert lora.count_trainable(model)[0] == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2
    trained(model)
    expected = logits(model)
    lora.export_peft(model, tmp_path / "peft")
    lora.save_adapter(model, tmp_path / "ours")
    fresh_base = load_pretrained("minilm_l6", head="sequence_classification", num_labels=2)
    peft_model = PeftModel.from_pretrained(fresh_base, tmp_path / "peft")
    assert (logits(peft_model) - expected).abs().max().item() <= 1e-5
    fresh_base = load_pretrained("minilm_l6", head="sequence_classification", num_labels=2)
    torch.testing.assert_close(logits(lora.load_adapter(fresh_base, tmp_path / "ours")), expected)
    lora.merge(model)
    assert ((logits(model) - expected).norm() / expected.norm()).item() <= 1e-5
