"""Forgetting: the pretrained model's held-out behaviour before vs after fine-tuning, LoRA vs full
FT (Biderman et al. 2024, "LoRA Learns Less and Forgets Less").

    python -c "from analysis.forgetting import forgetting; help(forgetting)"

Two measures, one per kind of model:
- a causal LM (GPT-2, Llama): its language-model loss (mean next-token NLL) on held-out text that
  is not the task (e.g. WebNLG text for a model tuned on E2E). Pretraining minimised exactly this,
  so its rise is the knowledge lost.
- an encoder (all-MiniLM-L6-v2, BERT, RoBERTa): the mean cosine similarity between the fine-tuned
  and the pretrained model's mean-pooled sentence embeddings of held-out sentences of another
  task. all-MiniLM-L6-v2 ships no masked-LM head (it was trained contrastively as a sentence
  encoder, used through mean pooling), so a masked-LM loss would measure an untrained head; its
  pretrained behaviour *is* that embedding. 1 means nothing moved; 0 means unrelated vectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def is_causal_lm(model) -> bool:
    """True for a model that predicts the next token (a *ForCausalLM / *LMHeadModel)."""
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


@torch.no_grad()
def lm_loss(model, batches) -> float:
    """Mean next-token NLL (nats per predicted token) of a causal LM over batches of
    {"input_ids", optional "attention_mask"}; padded positions are not predicted."""
    total, count = 0.0, 0
    for batch in batches:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                                 reduction="sum").item()
        count += int((targets != -100).sum())
    return total / count


@torch.no_grad()
def sentence_embeddings(model, batches) -> torch.Tensor:
    """Mean-pooled last hidden states (n x hidden) of an encoder (a task head is bypassed)."""
    encoder = model.base_model  # BertModel inside BertForSequenceClassification, or itself
    out = []
    for batch in batches:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * weights).sum(1) / weights.sum(1).clamp(min=1))
    return torch.cat(out)


def forgetting(pretrained, finetuned, batches) -> dict:
    """How far the fine-tuned model moved from the pretrained one on held-out `batches`.

    `batches`: a list of {"input_ids", "attention_mask"} of text that is not the task. Returns
    {"measure", "before", "after", "change"}: for a causal LM, "lm_loss" before and after
    (change > 0: forgot); for an encoder, "embedding_cosine" of the pretrained (1) and the
    fine-tuned embeddings against the pretrained ones (change < 0: moved away).
    """
    batches = list(batches)
    pretrained.eval()
    finetuned.eval()
    if is_causal_lm(pretrained):
        before, after = lm_loss(pretrained, batches), lm_loss(finetuned, batches)
        measure = "lm_loss"
    else:
        reference = sentence_embeddings(pretrained, batches)
        moved = sentence_embeddings(finetuned, batches)
        before, after = 1.0, F.cosine_similarity(moved, reference, dim=-1).mean().item()
        measure = "embedding_cosine"
    return {"measure": measure, "before": before, "after": after, "change": after - before}
