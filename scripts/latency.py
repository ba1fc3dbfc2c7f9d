#!/usr/bin/env python
"""Table 1 and Figure 5 of Hu et al. (2021): the inference latency adapters add, and LoRA merged
does not. One forward pass of GPT-2 medium (random weights: latency does not depend on their values).

    make table-latency                                   # this CPU: reduced settings, ~10 min, 1 thread
    .venv/bin/python scripts/latency.py --device cuda    # the paper's settings, 100 trials
    .venv/bin/python scripts/latency.py --model tiny_gpt2 --settings 2x8 --trials 3 \
        --fig-batches 1 --fig-seqs 8 --fig-bottlenecks 2 4 --out-dir /tmp/latency   # a smoke run

Variants, each sharing the base model's weight tensors (no copies): the base model, which is also
LoRA merged (W + BA is stored in W: the same modules, the same work); LoRA unmerged (q, v, our
lora_repro.lora, the rank whose |Θ| is nearest the setting's); Adapter^L and Adapter^H
(lora_repro/methods/adapters.py, the bottleneck whose |Θ| is nearest the setting's |Θ|). Every
variant is warmed up, then timed round-robin (each trial runs every variant once, the order rotated
each trial) so machine noise hits all alike; each cell is the median and the standard deviation of
its trials, the slow-down is median(variant) / median(base) - 1. Inference mode, use_cache=False,
fp32 unless --dtype says otherwise; on CUDA every forward is bracketed by synchronize().

Table 1 settings (batch x sequence, |Θ|): the paper's 32x512 (0.5M), 16x256 (11M), 1x128 (11M) on
CUDA; on a CPU, by default 4x128, 2x64, 1x32 with the same |Θ| (named in the table). Figure 5: the
adapters' slow-down against their bottleneck size, one panel per (adapter, sequence length), one
line per batch size. Writes results/tables/table1_latency.{md,tex,csv} (the paper's numbers from
results/paper/table1_latency.csv beside ours) and results/figures/fig5_adapter_latency.{png,csv}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP workers distort CPU timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.tables.formats import Table, save_figure, write  # noqa: E402
from analysis.tables.paper import paper_numbers  # noqa: E402
from lora_repro import methods  # noqa: E402
from lora_repro.models import build_random  # noqa: E402

# batch, sequence, |Θ| (Table 1 prints 11M: read as Table 3's 11.09M adapters, r = 224 / 112)
PAPER_SETTINGS = ((32, 512, 0.5e6), (16, 256, 11.09e6), (1, 128, 11.09e6))
CPU_SETTINGS = ((4, 128, 0.5e6), (2, 64, 11.09e6), (1, 32, 11.09e6))
VARIANTS = ("base", "lora_unmerged", "adapter_l", "adapter_h")
LABELS = {"base": "FT/LoRA (base = LoRA merged)", "lora_unmerged": "LoRA unmerged (ours, extra row)",
          "adapter_l": "Adapter^L", "adapter_h": "Adapter^H"}
PAPER_METHOD = {"base": "FT/LoRA", "adapter_l": "AdapterL", "adapter_h": "AdapterH"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda (cuda: the paper's settings by default)")
    p.add_argument("--model", default="gpt2_medium", help="a project GPT-2 model (tiny_gpt2 for a smoke run)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the CPU defaults fit ~10 min on 1)")
    p.add_argument("--settings", nargs="+", default=None,
                   help="Table 1's batch x sequence settings, e.g. 4x128 2x64 1x32 (default: the paper's on "
                        "cuda, reduced on cpu); their |Θ| stay 0.5M, 11.09M, 11.09M in order")
    p.add_argument("--trials", type=int, default=None, help="timed trials per variant (default: cuda 100, cpu 11)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards per variant first")
    p.add_argument("--fig-batches", type=int, nargs="+", default=None, help="Figure 5 batch sizes")
    p.add_argument("--fig-seqs", type=int, nargs="+", default=None, help="Figure 5 sequence lengths")
    p.add_argument("--fig-bottlenecks", type=int, nargs="+", default=None, help="Figure 5 adapter bottlenecks r")
    p.add_argument("--fig-trials", type=int, default=None, help="Figure 5 trials (default: cuda 20, cpu 4)")
    p.add_argument("--no-figure", action="store_true", help="Table 1 only")
    p.add_argument("--clock", choices=CLOCKS, default=None,
                   help="wall (perf_counter) | cpu (this thread's CPU time: on a shared machine the time the "
                        "process waits for a core does not count; needs --threads 1). Default: cuda wall, cpu cpu")
    p.add_argument("--out-dir", default=str(ROOT / "results"), help="tables/ and figures/ go under it")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.settings:
        if len(args.settings) > len(PAPER_SETTINGS):
            p.error(f"--settings: at most {len(PAPER_SETTINGS)} (one per column of Table 1)")
        sizes = [s.lower().split("x") for s in args.settings]
        args.table = [(int(b), int(s), PAPER_SETTINGS[i][2]) for i, (b, s) in enumerate(sizes)]
    else:
        args.table = list(PAPER_SETTINGS if cuda else CPU_SETTINGS)
    args.trials = args.trials or (100 if cuda else 11)
    args.clock = args.clock or ("wall" if cuda else "cpu")
    if args.clock == "cpu" and (cuda or args.threads != 1):
        p.error("--clock cpu times one CPU thread: use it with --device cpu --threads 1")
    args.fig_batches = args.fig_batches or ([1, 2, 4, 8, 16, 32] if cuda else [1, 4])
    args.fig_seqs = args.fig_seqs or ([128, 256, 512] if cuda else [32, 128])
    args.fig_bottlenecks = args.fig_bottlenecks or ([4, 16, 64, 256] if cuda else [8, 64, 256])
    args.fig_trials = args.fig_trials or (20 if cuda else 4)
    return args


# -- the variants ---------------------------------------------------------------------------------
def twin(base: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose parameters are the base model's own tensors (no memory)."""
    return copy.deepcopy(base, memo={id(p): p for p in base.parameters()})


@functools.cache
def sized(model_name: str, method: str, field: str, target: float, **fixed) -> tuple[int, int]:
    """(size, |Θ|) of `method` whose |Θ| is nearest `target`: |Θ| (lora_repro.params, counted on the
    meta device) is affine in the bottleneck or rank, so the counts at 1 and 2 give it everywhere."""
    from lora_repro.models import model_config
    from lora_repro.params import count

    fixed = {k: list(v) if isinstance(v, tuple) else v for k, v in fixed.items()}
    one, two = (count(model_name, method, {field: v, **fixed}, tier="quick") for v in (1, 2))
    per, offset = two - one, 2 * one - two
    size = min(max(1, round((target - offset) / per)), model_config(model_name).hidden_size)  # r <= d
    return size, offset + per * size


def variant(base, model_name: str, name: str, size: int) -> torch.nn.Module:
    if name == "base":
        return base
    model = twin(base)
    if name == "lora_unmerged":
        method = methods.get("lora")
        cfg = method.config(targets=["q", "v"], rank=size, alpha=float(size), dropout=0.0)
    else:
        method = methods.get(name)
        cfg = method.config(bottleneck=size)
    return method.apply(model, cfg, [], 0).eval()


# -- timing ---------------------------------------------------------------------------------------
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter  # set by main from --clock


def forward_ms(model, ids: torch.Tensor) -> float:
    cuda = ids.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = clock()
    model(input_ids=ids, use_cache=False)
    if cuda:
        torch.cuda.synchronize()
    return (clock() - start) * 1000


def round_robin(models: dict, ids: torch.Tensor, warmup: int, trials: int) -> dict[str, list[float]]:
    """Each trial runs every model once, the order rotated by one each trial."""
    names = list(models)
    times = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                forward_ms(models[name], ids)
        for trial in range(trials):
            k = trial % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(forward_ms(models[name], ids))
    return times


def stats(values: list[float]) -> dict:
    return {"median_ms": statistics.median(values), "std_ms": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min_ms": min(values), "max_ms": max(values), "trials": len(values)}


def token_ids(model, batch: int, seq: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch * 10_000 + seq)
    return torch.randint(model.config.vocab_size, (batch, seq), generator=generator).to(device)


def base_model(args):
    model = build_random(args.model, head="causal_lm", seed=0).eval()
    return model.to(args.device, DTYPES[args.dtype])


def measure_table(args, base) -> list[dict]:
    rows = []
    for batch, seq, target in args.table:
        sizes = {"base": (0, 0),
                 "lora_unmerged": sized(args.model, "lora", "rank", target, targets=("q", "v"), alpha=8.0),
                 "adapter_l": sized(args.model, "adapter_l", "bottleneck", target),
                 "adapter_h": sized(args.model, "adapter_h", "bottleneck", target)}
        models = {name: variant(base, args.model, name, sizes[name][0]) for name in VARIANTS}
        print(f"[latency] {batch}x{seq}: {args.trials} trials of {', '.join(VARIANTS)}", file=sys.stderr, flush=True)
        times = round_robin(models, token_ids(base, batch, seq, args.device), args.warmup, args.trials)
        for name in VARIANTS:
            rows.append({"batch_size": batch, "seq_len": seq, "target_params": target, "variant": name,
                         "size": sizes[name][0], "params": sizes[name][1], **stats(times[name])})
        del models
    base_ms = {(r["batch_size"], r["seq_len"]): r["median_ms"] for r in rows if r["variant"] == "base"}
    for r in rows:
        r["slowdown_pct"] = 100 * (r["median_ms"] / base_ms[(r["batch_size"], r["seq_len"])] - 1)
    return rows


def measure_figure(args, base) -> list[dict]:
    rows = []
    for seq in args.fig_seqs:
        for batch in args.fig_batches:
            models = {("base", 0): base}
            for name in ("adapter_h", "adapter_l"):
                for r in args.fig_bottlenecks:
                    models[(name, r)] = variant(base, args.model, name, r)
            print(f"[latency] figure 5, {batch}x{seq}: {args.fig_trials} trials of {len(models)} models",
                  file=sys.stderr, flush=True)
            times = round_robin(models, token_ids(base, batch, seq, args.device), args.warmup, args.fig_trials)
            base_ms = statistics.median(times[("base", 0)])
            for (name, r), values in times.items():
                if name != "base":
                    rows.append({"variant": name, "bottleneck": r, "batch_size": batch, "seq_len": seq,
                                 "slowdown_pct": 100 * (statistics.median(values) / base_ms - 1),
                                 **stats(values), "base_median_ms": base_ms})
            del models
    return rows


# -- the table and the figure ---------------------------------------------------------------------
def _size(count: float) -> str:
    if count < 1e4:
        return f"{int(count):,}"
    return f"{count / 1e6:.2f}M" if count < 1e6 else f"{count / 1e6:.1f}M"


def build_table(rows: list[dict], args, device_words: str) -> Table:
    paper = paper_numbers("table1_latency")
    frame_rows = []
    header = ["", *[f"paper {b}x{s}" for b, s, _ in PAPER_SETTINGS], *[f"ours {b}x{s}" for b, s, _ in args.table]]
    frame_rows.append(["|Θ|", *[_size(t) for _, _, t in PAPER_SETTINGS], *[_size(t) for _, _, t in args.table]])
    for name in VARIANTS:
        cells = [LABELS[name]]
        for b, s, _ in PAPER_SETTINGS:
            found = paper[(paper["method"] == PAPER_METHOD.get(name, "")) & (paper["batch_size"] == str(b))
                          & (paper["seq_len"] == str(s))]
            if found.empty:
                cells.append("—")
                continue
            ms = found[found["metric"] == "latency"].iloc[0]
            slow = found[found["metric"] == "slowdown"]
            cells.append(f"{ms['value']} ± {ms['pm']}" + (f" (+{slow.iloc[0]['value']}%)" if not slow.empty else ""))
        for b, s, _ in args.table:
            r = next(r for r in rows if (r["variant"], r["batch_size"], r["seq_len"]) == (name, b, s))
            cell = f"{r['median_ms']:.1f} ± {r['std_ms']:.1f}"
            if name != "base":
                cell += f" ({r['slowdown_pct']:+.1f}%, {_size(r['params'])})"
            cells.append(cell)
        frame_rows.append(cells)
    frame = pd.DataFrame(frame_rows, columns=header)
    reduced = [(b, s) for b, s, _ in args.table] != [(b, s) for b, s, _ in PAPER_SETTINGS]
    short = {"lora_unmerged": "LoRA", "adapter_l": "Adapter^L", "adapter_h": "Adapter^H"}
    sizes = "; ".join(f"{b}x{s}: " + ", ".join(f"{short[n]} r={_pick(rows, n, b, s)}" for n in short)
                      for b, s, _ in args.table)
    notes = [
        "Paper: GPT-2 medium, one forward pass, mean ± std of 100 trials on an NVIDIA Quadro RTX8000 (ms); "
        "in parentheses the slow-down against FT/LoRA.",
        f"Ours: {args.model} with random weights on {device_words}, {args.dtype}, median ± std of {args.trials} "
        f"round-robin trials after {args.warmup} warm-up forwards (ms, "
        + ("the thread's CPU time: waits for a core on a shared machine do not count" if args.clock == "cpu"
           else "wall clock") + "); in parentheses the slow-down of the "
        "median against the base model's and the variant's |Θ|.",
        "FT/LoRA is the base model: LoRA merged stores W + BA in W, the same modules and the same work.",
        f"Sizes nearest each column's |Θ|: {sizes}.",
    ]
    if reduced:
        notes.append("Ours ran at reduced batch x sequence settings (named in the header) to fit a CPU; "
                     "`scripts/latency.py --device cuda` runs the paper's.")
    tidy = [{"source": "ours", "device": device_words, "dtype": args.dtype, **r} for r in rows]
    tidy += [{"source": "paper", "device": "NVIDIA Quadro RTX8000", "batch_size": int(r["batch_size"]),
              "seq_len": int(r["seq_len"]), "target_params": float(r["trainable_params_m"]) * 1e6,
              "variant": {v: k for k, v in PAPER_METHOD.items()}[r["method"]],
              **({"median_ms": None, "mean_ms": float(r["value"]), "std_ms": float(r["pm"])}
                 if r["metric"] == "latency" else {"slowdown_pct": float(r["value"])})}
             for _, r in paper.iterrows()]
    return Table(name="table1_latency", experiment="latency",
                 title="Table 1: inference latency of one forward pass of GPT-2 medium (ms)",
                 frame=frame, tidy=pd.DataFrame(tidy), notes=notes)


def _pick(rows, name, b, s) -> int:
    return next(r["size"] for r in rows if (r["variant"], r["batch_size"], r["seq_len"]) == (name, b, s))


def figure(rows: list[dict], args, device_words: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("adapter_h", "adapter_l")
    fig, axes = plt.subplots(len(names), len(args.fig_seqs), figsize=(3.2 * len(args.fig_seqs), 5.2),
                             squeeze=False, sharey=True)
    for i, name in enumerate(names):
        for j, seq in enumerate(args.fig_seqs):
            ax = axes[i][j]
            for batch in args.fig_batches:
                points = sorted((r["bottleneck"], r["slowdown_pct"]) for r in rows
                                if (r["variant"], r["seq_len"], r["batch_size"]) == (name, seq, batch))
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"batch {batch}")
            ax.set_xscale("log", base=2)
            ax.axhline(0, color="grey", linewidth=0.6)
            ax.set_title(f"{LABELS[name]}, seq {seq}", fontsize=9)
            ax.set_xlabel("bottleneck r")
            if j == 0:
                ax.set_ylabel("slow-down vs base (%)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Figure 5: adapter slow-down, {args.model} on {device_words}", fontsize=10)
    return save_figure(fig, path)


def device_description(args) -> str:
    if args.device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(args.device))
    return f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread{'s' * (args.threads > 1)})"


def main(argv=None) -> int:
    global clock
    args = parse_args(argv)
    clock = CLOCKS[args.clock]
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = base_model(args)
    words = device_description(args)
    out = Path(args.out_dir)
    table = write(build_table(measure_table(args, base), args, words), out / "tables")
    print(table.paths[0].read_text())
    if not args.no_figure:
        rows = measure_figure(args, base)
        path = figure(rows, args, words, out / "figures" / "fig5_adapter_latency.png")
        pd.DataFrame(rows).to_csv(path.with_suffix(".csv"), index=False)
        print(f"[latency] wrote {path} and its numbers, {path.with_suffix('.csv').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
