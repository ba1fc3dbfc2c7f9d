"""What differs between GLUE (a classification head) and NLG (a causal LM with beam search).

A job builds the model for its task, serves training batches in a seeded length-grouped order,
computes the training loss, and evaluates with the paper's metrics. The training loop
(lora_repro/train.py) is the same for both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from lora_repro.data import glue as glue_data
from lora_repro.data import nlg as nlg_data
from lora_repro.metrics.glue import glue_metrics
from lora_repro.models import load_pretrained, load_tokenizer

# Modules that make up the task head of each family's sequence-classification model: they train
# in full next to LoRA, as the classifier does in the paper's GLUE runs.
HEADS = {"bert": ["classifier", "pooler"], "roberta": ["classifier"], "deberta-v2": ["classifier", "pooler"]}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches: a length-grouped order (transformers' sampler) drawn from (seed, epoch).

    Grouping similar lengths with dynamic padding cuts the padding of a random batch; the order
    depends on nothing but (seed, epoch), so a resumed run sees exactly the same batches.
    """
    order = list(LengthGroupedSampler(
        batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
    ))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class GlueJob:
    kind = "glue"

    def __init__(self, run: dict):
        self.run, self.train_cfg = run, run["train"]
        self.task = glue_data.glue_task(run["task"])
        self.tokenizer = load_tokenizer(run["model_source"])
        data_dir = run["data_dir"]
        max_len = self.train_cfg["max_seq_length"]
        raw = glue_data.load_glue(run["task"], "train", data_dir, limit=self.train_cfg["train_limit"])
        self.train_set = glue_data.tokenize_glue(raw, self.tokenizer, max_len)
        self.eval_sets = {
            split: glue_data.tokenize_glue(
                glue_data.load_glue(run["task"], split, data_dir, limit=self.train_cfg["eval_limit"]),
                self.tokenizer, max_len,
            )
            for split in self.task.eval_splits
        }
        self.collate = DataCollatorWithPadding(self.tokenizer)
        self.train_lengths = [len(ids) for ids in self.train_set["input_ids"]]

    def build_model(self):
        kwargs = {"num_labels": self.task.num_labels}
        if self.train_cfg.get("classifier_dropout") is not None:
            kwargs["classifier_dropout"] = self.train_cfg["classifier_dropout"]
        model = load_pretrained(self.run["model_source"], head="sequence_classification", **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def head_modules(self, model) -> list[str]:
        return HEADS.get(model.config.model_type, ["classifier"])

    def loss(self, model, batch):
        return model(**batch).loss

    @torch.no_grad()
    def evaluate(self, model, accelerator, autocast) -> dict:
        model.eval()
        metrics, self.predictions = {}, {}
        for split, dataset in self.eval_sets.items():
            loader = accelerator.prepare_data_loader(DataLoader(
                dataset, batch_size=self.train_cfg["eval_batch_size"], collate_fn=self.collate
            ))
            logits, labels = [], []
            for batch in loader:
                with autocast():
                    out = model(**batch).logits.float()
                out, gold = accelerator.gather_for_metrics((out, batch["labels"]))
                logits.append(out.cpu())
                labels.append(gold.cpu())
            logits, labels = torch.cat(logits), torch.cat(labels)
            scores = glue_metrics(self.run["task"], logits.numpy(), labels.numpy())
            # per-example predictions: the paired bootstrap of the report's verdicts needs them
            predicted = logits[:, 0] if logits.shape[1] == 1 else logits.argmax(-1)
            self.predictions[split] = {"prediction": predicted.tolist(), "label": labels.tolist()}
            suffix = "" if len(self.eval_sets) == 1 else "_" + split.removeprefix("validation_")
            metrics.update({f"{k}{suffix}": v for k, v in scores.items() if k != "primary"})
            if "primary" not in metrics:  # the first eval split carries the headline number
                metrics["primary"] = scores["primary"]
        model.train()
        return metrics


class NLGJob:
    """A causal LM (GPT-2, Llama/SmolLM2) on E2E / WebNLG / DART: loss on the reference tokens
    only, label smoothing, beam search over left-padded prompts."""

    kind = "nlg"

    def __init__(self, run: dict):
        self.run, self.train_cfg = run, run["train"]
        self.tokenizer = load_tokenizer(run["model_source"], run.get("tokenizer_dir"))
        pairs = nlg_data.load_nlg(run["task"], "train", run["data_dir"], limit=self.train_cfg["train_limit"])
        self.train_set = nlg_data.tokenize_nlg(pairs, self.tokenizer, self.train_cfg["max_seq_length"])
        self.train_lengths = [len(ids) for ids in self.train_set["input_ids"]]
        # the per-epoch loss picks the best epoch on the validation split; the final decoding is
        # scored on the task's evaluation split (the same for E2E; WebNLG's test set)
        spec = nlg_data.nlg_task(run["task"])
        self.eval_split = spec.eval_split
        self.select_items, self.eval_items = (
            nlg_data.take(nlg_data.group_references(nlg_data.load_nlg(run["task"], split, run["data_dir"])),
                          self.train_cfg["eval_limit"], spec.spread_limit)
            for split in ("validation", spec.eval_split))

    def collate(self, rows):
        width = max(len(r["input_ids"]) for r in rows)
        pad = self.tokenizer.pad_token_id

        def padded(key, value):
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])

        return {
            "input_ids": padded("input_ids", pad),
            "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", nlg_data.IGNORE_INDEX),
        }

    def build_model(self):
        model = load_pretrained(self.run["model_source"], head="causal_lm")
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but {self.run['model_source']} "
                f"embeds {model.config.vocab_size}: tokenizer_dir={self.run.get('tokenizer_dir')!r} "
                "(GPT2_TOKENIZER_DIR) is for GPT-2 models only; unset it for this model"
            )
        return model

    def head_modules(self, model) -> list[str]:
        return []

    def loss(self, model, batch):
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=nlg_data.IGNORE_INDEX,
            label_smoothing=self.train_cfg.get("label_smoothing") or 0.0,
        )

    @torch.no_grad()
    def generate(self, model, sources: list[str], autocast) -> list[str]:
        """Beam search with the paper's settings, batched with left padding."""
        cfg, tok = self.train_cfg, self.tokenizer
        model = getattr(model, "module", model)
        model.eval()
        outputs = []
        batch_size = cfg["eval_batch_size"]
        for start in range(0, len(sources), batch_size):
            prompts = [nlg_data.encode_prompt(s, tok) for s in sources[start:start + batch_size]]
            width = max(map(len, prompts))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            device = next(model.parameters()).device
            with autocast():
                generated = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device),
                    num_beams=cfg["beam_size"], length_penalty=cfg["length_penalty"],
                    no_repeat_ngram_size=cfg["no_repeat_ngram_size"],
                    max_new_tokens=cfg["max_new_tokens"], eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, do_sample=False, early_stopping=True,
                )
            for row in generated[:, width:]:
                outputs.append(tok.decode(row, skip_special_tokens=True).strip())
        model.train()
        return outputs

    @torch.no_grad()
    def evaluate(self, model, accelerator, autocast) -> dict:
        """Validation loss every epoch (cheap); decoding and the five scores are `final_evaluate`."""
        model.eval()
        sources = self.select_items["source"]
        references = self.select_items["references"]
        rows = [nlg_data.encode_pair(s, refs[0], self.tokenizer, self.train_cfg["max_seq_length"])
                for s, refs in zip(sources, references)]
        losses = []
        for start in range(0, len(rows), self.train_cfg["eval_batch_size"]):
            batch = self.collate(rows[start:start + self.train_cfg["eval_batch_size"]])
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with autocast():
                losses.append(self.loss(model, batch).item())
        model.train()
        loss = sum(losses) / len(losses)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50)), "primary": -loss}

    def final_evaluate(self, model, autocast) -> dict:
        from lora_repro.metrics.nlg import score

        hypotheses = self.generate(model, list(self.eval_items["source"]), autocast)
        references = [list(r) for r in self.eval_items["references"]]
        scores = score(hypotheses, references)
        if "seen" in self.eval_items.column_names:  # WebNLG: Table 14's seen / unseen columns
            scores.update(seen_unseen_bleu(hypotheses, references, self.eval_items["seen"]))
        self.outputs = [{"source": s, "output": h, "references": r}
                        for s, h, r in zip(self.eval_items["source"], hypotheses, references)]
        return {**scores, "eval_split": self.eval_split, "eval_items": len(hypotheses),
                "samples": [{k: o[k] for k in ("source", "output")} for o in self.outputs[:5]]}


def seen_unseen_bleu(hypotheses, references, seen) -> dict:
    """BLEU over the items of seen and of unseen categories apart (Table 14's S and U)."""
    from lora_repro.metrics.nlg import bleu_nist

    scores = {}
    for name, keep in (("seen", True), ("unseen", False)):
        chosen = [i for i, s in enumerate(seen) if bool(s) == keep]
        if chosen:
            part = bleu_nist([hypotheses[i] for i in chosen], [references[i] for i in chosen])
            scores[f"bleu_{name}"] = part["bleu"]
            scores[f"items_{name}"] = len(chosen)
    return scores


def make_job(run: dict):
    if run["task_kind"] == "glue":
        return GlueJob(run)
    if run["task_kind"] == "nlg":
        return NLGJob(run)
    raise ValueError(f"unknown task kind {run['task_kind']!r}: glue or nlg")
