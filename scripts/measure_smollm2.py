#!/usr/bin/env python
"""Measure SmolLM2-135M on E2E on one CPU thread, to choose the NLG quick-tier settings.

    .venv/bin/python scripts/measure_smollm2.py --sections load,step          # ~3 min
    .venv/bin/python scripts/measure_smollm2.py --sections zeroshot,train \
        --train-rows 800 --epochs 1 --lr 1e-3 --eval-items 64 --beams 1,4,10 --json out.json
    .venv/bin/python scripts/measure_smollm2.py --task webnlg --spread --sections train \
        --train-rows 800 --max-seq-length 160 --length-penalty 0.8 --eval-items 48 --beams 4

Sections (run in this order, any subset):
  load      first load (dequantizing the GGUF into an empty $LORA_REPRO_CACHE) and cached load
  step      median training-step time (forward, loss, backward, AdamW) of LoRA r=4 and r=8 on
            {q, v} and of full fine-tuning, batch --batch of real E2E training rows
  zeroshot  the untrained model decoded on the first --eval-items dev MRs, same prompt, scored
  train     LoRA on the first --train-rows training rows for --epochs (AdamW, linear schedule,
            10% warmup, label smoothing 0.1, dropout 0.1), then decoding the same dev MRs with
            each beam size in --beams (greedy = 1), each timed and scored
Times are wall seconds and, beside them, this process's CPU seconds (one thread: the figure to
trust when other processes share the cores). Everything goes through lora_repro's own NLGJob
(prompt layout, collate, loss, generate) under bf16 autocast, as the quick tier runs it. Scores:
lora_repro.metrics.nlg (official E2E metrics; BLEU on 0..1; needs java).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

from lora_repro import lora  # noqa: E402
from lora_repro.metrics.nlg import score  # noqa: E402
from lora_repro.models import load_pretrained, load_tokenizer  # noqa: E402
from lora_repro.tasks import NLGJob, epoch_batches  # noqa: E402

SECTIONS = ("load", "step", "zeroshot", "train")
SHARED = Path(__file__).resolve().parents[2] / "shared/data"
datasets.disable_progress_bars()


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def make_job(args, train_rows: int) -> NLGJob:
    """The quick tier's NLG job; --spread swaps its first-rows subsets for spread-out ones."""
    data_dir = args.data_dir or SHARED / {"e2e": "e2e", "webnlg": "webnlg_2017"}[args.task]
    job = NLGJob({
        "task": args.task, "data_dir": str(data_dir), "model_source": "smollm2_135m", "tokenizer_dir": None,
        "train": {"train_limit": None if args.spread else train_rows,
                  "eval_limit": None if args.spread else args.eval_items,
                  "max_seq_length": args.max_seq_length, "eval_batch_size": args.eval_batch,
                  "beam_size": 1, "length_penalty": args.length_penalty, "no_repeat_ngram_size": 4,
                  "max_new_tokens": args.max_new_tokens, "label_smoothing": 0.1},
    })
    if args.spread:  # a seeded random sample of training pairs; dev sources evenly strided
        job.train_set = job.train_set.shuffle(seed=0).select(range(min(train_rows, len(job.train_set))))
        job.train_lengths = [len(ids) for ids in job.train_set["input_ids"]]
        stride = max(len(job.eval_items) // args.eval_items, 1)
        job.eval_items = job.eval_items.select(range(0, len(job.eval_items), stride)[:args.eval_items])
    return job


def measure_load() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LORA_REPRO_CACHE"] = cache
        started = time.perf_counter()
        load_pretrained("smollm2_135m", head="causal_lm")
        first = time.perf_counter() - started
        started = time.perf_counter()
        load_tokenizer("smollm2_135m")
        tokenizer_first = time.perf_counter() - started
        started = time.perf_counter()
        load_pretrained("smollm2_135m", head="causal_lm")
        cached = time.perf_counter() - started
        started = time.perf_counter()
        load_tokenizer("smollm2_135m")
        tokenizer_cached = time.perf_counter() - started
    del os.environ["LORA_REPRO_CACHE"]
    return {"model_first_s": first, "tokenizer_first_s": tokenizer_first,
            "model_cached_s": cached, "tokenizer_cached_s": tokenizer_cached}


def step_time(job, model, rows, steps: int, warmup: int = 2) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.train()
    times, cpu_times = [], []
    for i in range(warmup + steps):
        batch = job.collate(rows[i % len(rows)])
        started, cpu_started = time.perf_counter(), time.process_time()
        with bf16():
            loss = job.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    return {"median_s": statistics.median(times), "median_cpu_s": statistics.median(cpu_times), "steps": steps,
            "tokens_per_batch": statistics.mean(int(job.collate(b)["attention_mask"].sum()) for b in rows),
            "trainable": sum(p.numel() for p in params)}


def measure_steps(args) -> dict:
    if args.spread:
        raise SystemExit("--spread is for the zeroshot and train sections")
    job = make_job(args, 512)
    order = list(range(len(job.train_set)))
    random.Random(0).shuffle(order)  # mixed lengths, as the average length-grouped batch
    batches = [[job.train_set[i] for i in order[k:k + args.batch]] for k in range(0, 8 * args.batch, args.batch)]
    out = {"batch": args.batch, "padded_width": [len(job.collate(b)["input_ids"][0]) for b in batches]}
    for rank in (4, 8):
        model = load_pretrained("smollm2_135m", head="causal_lm")
        lora.inject(model, targets=("q", "v"), rank=rank, alpha=4 * rank, dropout=0.1, seed=0)
        out[f"lora_r{rank}"] = step_time(job, model, batches, args.steps)
        print(f"[measure] step lora r={rank}: {out[f'lora_r{rank}']}", flush=True)
    model = load_pretrained("smollm2_135m", head="causal_lm")
    out["full_ft"] = step_time(job, model, batches, max(args.steps // 2, 2))
    print(f"[measure] step full_ft: {out['full_ft']}", flush=True)
    return out


def decode_and_score(job, model, beam: int) -> dict:
    job.train_cfg["beam_size"] = beam
    sources = list(job.eval_items["source"])
    started, cpu_started = time.perf_counter(), time.process_time()
    hypotheses = job.generate(model, sources, bf16)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    scores = score(hypotheses, [list(r) for r in job.eval_items["references"]])
    tokens = [len(job.tokenizer.encode(h, add_special_tokens=False)) for h in hypotheses]
    return {"beam": beam, "items": len(sources), "s_per_item": seconds / len(sources),
            "cpu_s_per_item": cpu_seconds / len(sources),
            "mean_output_tokens": statistics.mean(tokens), **scores,
            "samples": [{"source": s, "output": h} for s, h in zip(sources[:3], hypotheses[:3])]}


def measure_zeroshot(args) -> dict:
    job = make_job(args, 8)
    model = load_pretrained("smollm2_135m", head="causal_lm")
    result = decode_and_score(job, model, args.zeroshot_beam)
    print(f"[measure] zero-shot: {result}", flush=True)
    return result


def measure_train(args) -> dict:
    job = make_job(args, args.train_rows)
    model = load_pretrained("smollm2_135m", head="causal_lm")
    lora.inject(model, targets=("q", "v"), rank=args.rank, alpha=args.alpha, dropout=0.1, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_epoch = -(-len(job.train_lengths) // args.batch)
    total = per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    model.train()
    started, cpu_started, losses = time.perf_counter(), time.process_time(), []
    for epoch in range(args.epochs):
        for step, indices in enumerate(epoch_batches(job.train_lengths, args.batch, 0, epoch)):
            batch = job.collate([job.train_set[i] for i in indices])
            with bf16():
                loss = job.loss(model, batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if step % 10 == 0:
                print(f"[measure] epoch {epoch + 1} step {step}/{per_epoch} loss {loss.item():.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    train_s, train_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    out = {"rows": len(job.train_set), "epochs": args.epochs, "steps": total, "lr": args.lr,
           "rank": args.rank, "alpha": args.alpha, "batch": args.batch, "train_s": train_s,
           "train_cpu_s": train_cpu_s, "s_per_step": train_s / total, "cpu_s_per_step": train_cpu_s / total,
           "first_losses": losses[:3], "last_losses": losses[-3:],
           "decoding": []}
    for beam in args.beams:
        result = decode_and_score(job, model, beam)
        print(f"[measure] LoRA beam {beam}: {result}", flush=True)
        out["decoding"].append(result)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="load,step,zeroshot,train")
    parser.add_argument("--task", choices=("e2e", "webnlg"), default="e2e")
    parser.add_argument("--data-dir", type=Path, help="default: ../shared/data/{e2e,webnlg_2017}")
    parser.add_argument("--spread", action="store_true",
                        help="random training rows and strided dev sources instead of the first ones "
                             "(WebNLG's files run from 1-triple to 7-triple entries)")
    parser.add_argument("--length-penalty", type=float, default=0.9, help="Table 11: E2E 0.9, WebNLG 0.8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (step section)")
    parser.add_argument("--max-seq-length", type=int, default=96)
    parser.add_argument("--train-rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--eval-items", type=int, default=64, help="first dev MRs decoded")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--beams", default="1,4,10")
    parser.add_argument("--zeroshot-beam", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    args.beams = [int(b) for b in args.beams.split(",")]
    torch.set_num_threads(1)
    results = {"threads": torch.get_num_threads(), "cpu": _cpu(), "torch": torch.__version__}
    measure = {"load": measure_load, "step": measure_steps, "zeroshot": measure_zeroshot,
               "train": measure_train}
    for section in SECTIONS:
        if section in sections:
            started = time.perf_counter()
            results[section] = measure[section]() if section == "load" else measure[section](args)
            print(f"[measure] {section} done in {time.perf_counter() - started:.0f} s", flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
