"""Forgetting: the pretrained model's held-out behaviour before vs after fine-tuning, LoRA vs full
FT (Biderman et al. 2024, "LoRA Learns Less and Forgets Less").

    lora-repro analyze forgetting results/runs/table_glue/<run> [--against cola] [--rows 256]

Two measures, one per kind of model:
- a causal LM (GPT-2, Llama): its language-model loss (mean next-token NLL) on held-out text that
  is not the task (e.g. WebNLG text for a model tuned on E2E). Pretraining minimised exactly this,
  so its rise is the knowledge lost.
- an encoder (all-MiniLM-L6-v2, BERT, RoBERTa): the mean cosine similarity between the fine-tuned
  and the pretrained model's mean-pooled sentence embeddings of held-out sentences of another
  task. all-MiniLM-L6-v2 ships no masked-LM head (it was trained contrastively as a sentence
  encoder, used through mean pooling), so a masked-LM loss would measure an untrained head; its
  pretrained behaviour *is* that embedding. 1 means nothing moved; 0 means unrelated vectors.

Held-out text (`held_out_task`): for a GLUE run, the dev sentences of another GLUE task (CoLA's
single sentences; SST-2's for a CoLA run), read through lora_repro.data.glue from $GLUE_DIR; for a
causal LM, the references of the other NLG data set (E2E <-> WebNLG). `analyze` writes the result
beside the run as forgetting.json, which the report reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

FORGETTING_FILE = "forgetting.json"
NLG_HELD_OUT = {"e2e": "webnlg", "webnlg": "e2e", "dart": "e2e"}  # the other NLG data set


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


# -- a run folder: its models and held-out text ----------------------------------------------------

def held_out_task(task: str) -> str:
    """The data set whose text is held out for a run on `task`: not the task itself."""
    from lora_repro.data.glue import GLUE_TASKS

    if task in GLUE_TASKS:
        return "sst2" if task == "cola" else "cola"
    if task in NLG_HELD_OUT:
        return NLG_HELD_OUT[task]
    raise ValueError(f"no held-out text for task {task!r}: valid tasks are GLUE's and "
                     f"{', '.join(NLG_HELD_OUT)}")


def run_models(run_dir) -> tuple:
    """(pretrained, fine-tuned, record) of a finished run: the fine-tuned model is the task's model
    with the run's method applied as recorded and its saved weights loaded (method.load)."""
    from lora_repro import methods
    from lora_repro.data.glue import GLUE_TASKS, glue_task
    from lora_repro.models import load_pretrained
    from lora_repro.records import read_record
    from lora_repro.tasks import HEADS

    record = read_record(run_dir)
    if record is None or record.get("status") != "done":
        raise ValueError(f"{run_dir}: no finished run (record.json with status done)")
    name = ((record.get("config") or {}).get("model") or {}).get("path") or record["model"]
    if record["task"] in GLUE_TASKS:
        head, kwargs = "sequence_classification", {"num_labels": glue_task(record["task"]).num_labels}
    else:
        head, kwargs = "causal_lm", {}
    pretrained = load_pretrained(name, head=None if head != "causal_lm" else head)
    model = load_pretrained(name, head=head, **kwargs)
    method = methods.get(record["method"])
    cfg = method.config(**(record.get("method_config") or {"name": record["method"]}))
    heads = HEADS.get(model.config.model_type, ["classifier"]) if head != "causal_lm" else []
    model = method.apply(model, cfg, head_modules=heads, seed=record["seed"])
    method.load(model, Path(run_dir))
    return pretrained, model, record


def held_out_batches(task: str, tokenizer, rows: int = 256, batch_size: int = 32,
                     max_length: int = 128) -> list[dict]:
    """Padded batches of the first `rows` held-out texts of `task`: a GLUE task's dev sentences
    (its first text field) or an NLG data set's validation references."""
    from lora_repro.data.glue import GLUE_TASKS, load_glue

    if task in GLUE_TASKS:
        texts = load_glue(task, "validation", limit=rows)["text_a"]
    else:
        from lora_repro.data.nlg import load_nlg

        texts = load_nlg(task, "validation", limit=rows)["reference"]
    return [dict(tokenizer(list(texts[i:i + batch_size]), truncation=True, max_length=max_length,
                           padding=True, return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def analyze(run_dir, against: str | None = None, rows: int = 256) -> dict:
    """forgetting() of a run folder on held-out text; written to <run_dir>/forgetting.json."""
    from lora_repro.models import load_tokenizer
    from lora_repro.records import atomic_write_json

    pretrained, finetuned, record = run_models(run_dir)
    against = against or held_out_task(record["task"])
    name = ((record.get("config") or {}).get("model") or {}).get("path") or record["model"]
    batches = held_out_batches(against, load_tokenizer(name), rows)
    result = forgetting(pretrained, finetuned, batches)
    result |= {"held_out": {"task": against, "split": "validation",
                            "rows": sum(len(b["input_ids"]) for b in batches)},
               "method": record["method"], "task": record["task"], "seed": record.get("seed"),
               "run_id": record.get("run_id")}
    atomic_write_json(Path(run_dir) / FORGETTING_FILE, result)
    return result


def read_forgetting(run_dir) -> dict | None:
    """A run's forgetting.json (written by `analyze`), or None."""
    path = Path(run_dir) / FORGETTING_FILE
    return json.loads(path.read_text()) if path.is_file() else None
