"""PreEmbed and PreLayer: where the virtual tokens go, what the caller sees of the logits, and
generation (beam search, KV cache, left padding) through the wrapper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lora_repro import methods
from lora_repro.models import build_random

CAUSAL = {"gpt2": "tiny_gpt2", "llama": "tiny_llama"}
PRE = ("prefix_embed", "prefix_layer")


def wrapped(model_name: str, name: str, prefix: int = 2, infix: int = 1, head: str = "causal_lm", heads=()):
    model = build_random(model_name, head=head, seed=0).eval()
    method = methods.get(name)
    return method.apply(model, method.config(prefix_length=prefix, infix_length=infix), list(heads), 0).eval()


def test_virtual_tokens_go_after_left_padding_and_after_the_separator():
    model = wrapped("tiny_gpt2", "prefix_embed", prefix=2, infix=1)
    eos = pad = model.config.eos_token_id
    ids = torch.tensor([[pad, pad, 5, 6, eos, 7, 8], [5, 6, 7, eos, 9, eos, pad]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]])
    labels = ids.masked_fill(mask == 0, -100)
    inputs, _ = model._insert(ids, mask, labels=labels)
    model._pending = None
    P = model.placeholder
    assert inputs["input_ids"].tolist() == [[pad, pad, P, P, 5, 6, eos, P, 7, 8],
                                            [P, P, 5, 6, 7, eos, P, 9, eos, pad]]
    assert inputs["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 9 + [0]]
    assert inputs["labels"].tolist() == [[-100, -100, -100, -100, 5, 6, eos, -100, 7, 8],
                                         [-100, -100, 5, 6, 7, eos, -100, 9, eos, -100]]


def test_an_encoder_keeps_its_first_token_and_gets_the_infix_at_its_end():
    model = wrapped("tiny_bert", "prefix_layer", prefix=1, infix=2, head="sequence_classification",
                    heads=["classifier", "pooler"])
    ids = torch.tensor([[101, 5, 6, 102], [101, 7, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    inputs, _ = model._insert(ids, mask, token_type_ids=types, labels=torch.tensor([0, 1]))
    model._pending = None
    P = model.placeholder
    assert inputs["input_ids"].tolist() == [[101, P, 5, 6, 102, P, P], [101, P, 7, 102, P, P, 0]]
    assert inputs["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 0, 0], [0] * 7]
    assert inputs["labels"].tolist() == [0, 1]  # sequence labels pass through


@pytest.mark.parametrize("family", CAUSAL)
@pytest.mark.parametrize("name", PRE)
def test_the_callers_logits_predict_the_callers_next_token(family, name):
    """NLGJob's loss (its own shift over the returned logits) equals the model's loss on the
    sequence with the virtual tokens (whose labels are ignored)."""
    model = wrapped(CAUSAL[family], name, prefix=2, infix=3)
    eos = model.config.eos_token_id
    ids = torch.tensor([[11, 12, eos, 13, 14, eos], [21, eos, 22, 23, eos, eos]])
    mask = torch.tensor([[1] * 6, [1] * 5 + [0]])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # the source: no loss
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape[:2] == ids.shape
    ours = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    torch.testing.assert_close(ours, out.loss)


@pytest.mark.parametrize("family", CAUSAL)
@pytest.mark.parametrize("name", PRE)
def test_greedy_generation_matches_step_by_step_forward(family, name):
    """generate (KV cache: the virtual tokens only in the first step) = argmax of forward, token by token."""
    model = wrapped(CAUSAL[family], name, prefix=2, infix=2)
    eos = model.config.eos_token_id
    ids = torch.tensor([[11, 12, 13, eos], [21, 22, 23, eos]])
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                   do_sample=False, pad_token_id=eos, eos_token_id=None)
        manual = ids
        for _ in range(4):
            logits = model(input_ids=manual, attention_mask=torch.ones_like(manual)).logits
            manual = torch.cat([manual, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert generated.tolist() == manual.tolist()


@pytest.mark.parametrize("family", CAUSAL)
@pytest.mark.parametrize("name", PRE)
def test_beam_search_with_left_padding_returns_the_prompt_then_new_tokens(family, name):
    model = wrapped(CAUSAL[family], name, prefix=3, infix=1)
    eos = model.config.eos_token_id
    ids = torch.tensor([[eos, eos, 5, eos], [5, 6, 7, eos]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = model.generate(input_ids=ids, attention_mask=mask, num_beams=3, no_repeat_ngram_size=2,
                         length_penalty=0.9, max_new_tokens=5, min_new_tokens=5, early_stopping=True,
                         do_sample=False, pad_token_id=eos, eos_token_id=eos)
    assert out.shape == (2, 9) and out[:, :4].tolist() == ids.tolist()
    assert model._pending is None and model._active is None
    assert int(out[:, 4:].max()) < model.config.vocab_size


def test_prefix_layer_replaces_every_blocks_activations():
    """Block l's trainable activations are the input of block l + 1: each but the last changes the
    output (the last block's feed only the virtual tokens' own logits, which the caller never sees;
    the paper's L x d x (l_p + l_i) counts them all the same)."""
    model = wrapped("tiny_gpt2", "prefix_layer", prefix=1, infix=0)
    ids = torch.tensor([[11, 12, 13]])
    n_layers = model.virtual_tokens.shape[0]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        for layer in range(n_layers):
            saved = model.virtual_tokens[layer].clone()
            model.virtual_tokens[layer] += 1.0
            assert torch.allclose(model(input_ids=ids).logits, before) == (layer == n_layers - 1), layer
            model.virtual_tokens[layer] = saved
        assert torch.equal(model(input_ids=ids).logits, before)


def test_unsupported_inputs_are_refused():
    model = wrapped("tiny_gpt2", "prefix_embed")
    with pytest.raises(ValueError, match="position_ids is not supported"):
        model(input_ids=torch.tensor([[1, 2]]), position_ids=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="need input_ids"):
        model(inputs_embeds=None)
