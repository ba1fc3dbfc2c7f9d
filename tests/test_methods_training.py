"""Every baseline on a tiny random model of every family: it trains (the loss falls), exactly its
parameters change (every other weight bit-identical), save + load into a fresh model gives the same
outputs, and adapters (like FT^Top2 and BitFit) leave the model's outputs unchanged at init."""

from __future__ import annotations

import pytest
import torch

from lora_repro import methods
from lora_repro.methods import common
from lora_repro.models import build_random
from lora_repro.tasks import HEADS

TINY = {"bert": "tiny_bert", "roberta": "tiny_roberta", "deberta_v2": "tiny_deberta_v2", "gpt2": "tiny_gpt2",
        "llama": "tiny_llama"}
CAUSAL = ("gpt2", "llama")
SETTINGS = {
    "ft_top2": {"blocks": 1},
    "bitfit": {},
    "adapter_h": {"bottleneck": 4},
    "adapter_l": {"bottleneck": 4},
    "adapter_p": {"bottleneck": 4},
    "adapter_d": {"bottleneck": 4, "drop_layers": 1},
    "prefix_embed": {"prefix_length": 2, "infix_length": 1},
    "prefix_layer": {"prefix_length": 2, "infix_length": 1},
}
# what each method's own parameters are called (blocks: tiny models have two, 0 and 1)
OWN = {
    "ft_top2": lambda n: ".1." in n,  # the last block only (blocks=1)
    "bitfit": lambda n: n.endswith(".bias"),
    "adapter_h": lambda n: ".bottleneck_adapter." in n,
    "adapter_l": lambda n: ".bottleneck_adapter." in n,  # its new LayerNorm included
    "adapter_p": lambda n: ".bottleneck_adapter." in n,
    "adapter_d": lambda n: ".1." in n and ".bottleneck_adapter." in n,  # block 0's adapter dropped
    "prefix_embed": lambda n: n == "virtual_tokens",
    "prefix_layer": lambda n: n == "virtual_tokens",
}
CASES = [(f, m) for f in TINY for m in SETTINGS if not (f == "llama" and m == "bitfit")]


def tiny(family: str, seed: int = 0):
    if family in CAUSAL:
        return build_random(TINY[family], head="causal_lm", seed=seed).eval(), []
    model = build_random(TINY[family], head="sequence_classification", seed=seed).eval()
    return model, HEADS.get(model.config.model_type, ["classifier"])


def batch(family: str, model) -> dict:
    """Two rows, the second right-padded; causal LMs get their own tokens as labels."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids[1, 5:] = pad
    if family in CAUSAL:
        ids[:, 3] = model.config.eos_token_id  # the prompt's separator (prefix methods' infix)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}


def adapted(family: str, name: str, seed: int = 0):
    model, heads = tiny(family)
    method = methods.get(name)
    cfg = method.config(**SETTINGS[name])
    return method.apply(model, cfg, heads, seed), method, heads


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family,name", CASES)
def test_trains_exactly_its_own_parameters(family, name, tmp_path):
    torch.manual_seed(0)
    model, method, heads = adapted(family, name)
    inputs = batch(family, model)
    head = set(common.head_parameters(model, heads))
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    own = trains - head
    assert own and all(OWN[name](n) for n in own), sorted(own)[:5]
    assert method.count(model, None) == sum(p.numel() for n, p in model.named_parameters() if n in own)

    before = snapshot(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    losses, moved = [], set()
    for _ in range(6):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        moved |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = model(**inputs).loss.item()
    assert final < losses[0], (losses, final)

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trains  # every other weight (and buffer) is bit-identical
    assert moved <= trains and moved <= changed  # and whatever got a gradient did move
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trains)

    # save, then load into a fresh model with the same method (other init): the same outputs
    method.save(model, tmp_path)
    fresh, _, _ = adapted(family, name, seed=123)
    with torch.no_grad():
        differs = not torch.equal(fresh(**inputs).logits, model(**inputs).logits)
    method.load(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, model(**inputs).logits)
    assert differs  # the fresh model is untrained: loading is what makes them equal


@pytest.mark.parametrize("family", TINY)
@pytest.mark.parametrize("name", ["adapter_h", "adapter_l", "adapter_p", "adapter_d", "ft_top2", "bitfit"])
def test_the_adapted_model_starts_as_the_pretrained_one(family, name):
    if family == "llama" and name == "bitfit":
        pytest.skip("llama has no biases (test_methods_counts checks the error)")
    base, _ = tiny(family)
    model, _, _ = adapted(family, name)
    inputs = {k: v for k, v in batch(family, base).items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, base(**inputs).logits, rtol=0, atol=1e-6)


def test_load_refuses_another_methods_file(tmp_path):
    model, method, _ = adapted("gpt2", "adapter_h")
    method.save(model, tmp_path)
    other, other_method, _ = adapted("gpt2", "adapter_p")
    with pytest.raises(ValueError, match="does not fit this model"):
        other_method.load(other, tmp_path)
    with pytest.raises(FileNotFoundError):
        other_method.load(other, tmp_path / "nowhere")


def test_applying_twice_is_refused():
    model, method, _ = adapted("gpt2", "adapter_h")
    with pytest.raises(ValueError, match="cannot be applied twice"):
        method.apply(model, method.config(bottleneck=4), [], 0)
    wrapped, prefix, _ = adapted("gpt2", "prefix_embed")
    with pytest.raises(ValueError, match="must be applied to a fresh model"):
        prefix.apply(wrapped, prefix.config(prefix_length=1, infix_length=0), [], 0)


def test_adapters_draw_their_own_initial_values():
    model, _, _ = adapted("gpt2", "adapter_h")
    downs = [p for n, p in model.named_parameters() if n.endswith("bottleneck_adapter.down.weight")]
    assert len(downs) == 4 and all(p.std() > 0 for p in downs)
    assert all(not torch.equal(a, b) for i, a in enumerate(downs) for b in downs[i + 1:])
    again, _, _ = adapted("gpt2", "adapter_h")
    assert all(torch.equal(a, b) for a, b in zip(
        downs, [p for n, p in again.named_parameters() if n.endswith("bottleneck_adapter.down.weight")]))


@pytest.mark.parametrize("family,name", [("gpt2", "adapter_h"), ("bert", "prefix_layer"), ("llama", "ft_top2")])
def test_a_resumed_run_continues_exactly(family, name, tmp_path):
    """lora_repro.checkpoint (the loop's resume) keeps the method's parameters by name: a run stopped
    after two steps and resumed into a fresh model takes the same third step."""
    from lora_repro.checkpoint import load_checkpoint, save_checkpoint

    def step(model, optimizer, inputs):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model, _, _ = adapted(family, name)
    inputs = batch(family, model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        step(model, optimizer, inputs)
    save_checkpoint(tmp_path, model, optimizer, None, {"step": 2})

    resumed, _, _ = adapted(family, name, seed=7)
    resumed_optimizer = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-2)
    assert load_checkpoint(tmp_path, resumed, resumed_optimizer, None) == {"step": 2}
    step(model, optimizer, inputs)
    step(resumed, resumed_optimizer, inputs)
    for (n, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
