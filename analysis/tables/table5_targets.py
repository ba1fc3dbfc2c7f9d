"""Table 5: which weights to adapt under one parameter budget, ours beside GPT-3 175B (WikiSQL,
MultiNLI), and its plot (results/figures/table5_targets.png). The head-only runs of the experiment
(no adapter, the task head alone trains) make the control row."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.tables.formats import MISSING, Table, save_figure
from analysis.tables.ours import (
    PRIMARY_METRIC,
    SCALE_NOTE,
    cells,
    format_cell,
    format_params,
    model_name,
    ours_label,
    runs_frame,
    settings,
    task_name,
    tidy_frame,
    tidy_ours,
    tier_note,
)
from analysis.tables.paper import paper_cell, paper_numbers, tidy_paper

# the paper's seven (targets, rank) configurations, all at 18M trainable parameters on GPT-3
CONTROL = "none (head only: control)"  # the row of the head-only runs
BUDGET_CONFIGS = (("q", 8), ("k", 8), ("v", 8), ("o", 8), ("q,k", 4), ("q,v", 4), ("q,k,v,o", 2))


def targets_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_targets", tier)
    lora = frame[frame["method"] == "lora"] if not frame.empty else frame
    control = frame[frame["method"] == "head_only"] if not frame.empty else frame
    stats = cells(lora, ["model", "task", "tier", "targets", "rank"])
    heads = cells(control, ["model", "task", "tier"])
    configs = list(BUDGET_CONFIGS) + sorted({(k[3], k[4]) for k in stats} - set(BUDGET_CONFIGS))
    ours = sorted(set(settings(lora)) | set(settings(control)))
    paper = paper_numbers("table5_targets")
    rows = []
    for targets, rank in configs:
        row = {"weights": "{" + targets + "}", "r": str(rank)}
        for model, task, tier_ in ours:
            cell = stats.get((model, task, tier_, targets, rank))
            row[ours_label(model, task, tier_)] = format_cell(cell)
            params = cell.lora_params if cell else None
            row[f"# LoRA params ({model_name(model)})"] = format_params(params)
        for dataset in ("WikiSQL", "MultiNLI"):
            match = paper[(paper["dataset"] == dataset) & (paper["targets"] == targets)
                          & (paper["rank"] == str(rank))]
            row[f"paper: GPT-3 175B, {dataset}"] = paper_cell(match.iloc[0] if len(match) else None)
        row["paper # params"] = "18M" if (targets, rank) in BUDGET_CONFIGS else MISSING
        rows.append(row)
    row = {"weights": CONTROL, "r": MISSING}  # the task head alone trains: what adapters must beat
    for model, task, tier_ in ours:
        cell = heads.get((model, task, tier_))
        row[ours_label(model, task, tier_)] = format_cell(cell)
        row[f"# LoRA params ({model_name(model)})"] = "0" if cell and cell.n else MISSING
    rows.append(row | {f"paper: GPT-3 175B, {d}": "" for d in ("WikiSQL", "MultiNLI")}
                | {"paper # params": ""})
    notes = [
        tier_note(frame, "table_targets"),
        "Ours: the primary validation metric, best epoch, mean ± std over seeds; # LoRA params "
        "counts the A and B factors only (as the paper's 18M does; the classifier head is also "
        "trained). " + SCALE_NOTE,
        f"{CONTROL}: runs of method head_only in the same experiment (no adapter; the task head "
        "alone trains): the control every weight configuration must beat.",
        "Paper: Table 5 of arXiv:2106.09685, GPT-3 175B on WikiSQL and MultiNLI, all seven "
        "configurations at 18M trainable parameters; its ± is the per-dataset typical std over "
        "seeds (±0.5 WikiSQL, ±0.1 MultiNLI).",
    ]
    control_rows = tidy_ours(heads, ["model", "task", "tier"], "primary")
    tidy = tidy_frame(tidy_ours(stats, ["model", "task", "tier", "targets", "rank"], "primary")
                      + [{**row, "method": "head_only"} for row in control_rows]
                      + tidy_paper(paper))
    table = Table("table5_targets", "table_targets",
                  "Table 5: which weights to adapt under one parameter budget — ours beside "
                  "GPT-3 175B (WikiSQL, MultiNLI)", pd.DataFrame(rows), tidy, notes)
    if figures_dir is not None:
        table.figures = [targets_figure(stats, heads, ours, paper, configs,
                                        Path(figures_dir) / "table5_targets.png")]
    return table


def targets_figure(stats, heads, ours, paper, configs, path: Path) -> Path:
    """Bars per weight configuration: ours (error bars = std over seeds; the head-only control
    as a dotted line) and the paper's GPT-3."""
    labels = ["{" + t + "}\nr=" + str(r) for t, r in configs]
    panels = [("ours", s) for s in ours] or [("none", None)]
    panels += [("paper", "WikiSQL"), ("paper", "MultiNLI")]
    fig = Figure(figsize=(5.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = range(len(configs))
    for ax, (kind, what) in zip(axes, panels):
        if kind == "none":
            ax.text(0.5, 0.5, "ours: not yet run", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("ours")
            continue
        control = []
        if kind == "ours":
            chosen = [stats.get((*what, t, r)) for t, r in configs]
            heights = [c.mean * 100 if c and c.n else math.nan for c in chosen]
            errors = [c.std * 100 if c and c.n > 1 else 0 for c in chosen]
            model, task, tier_ = what
            head = heads.get(what)
            if head and head.n:
                ax.axhline(head.mean * 100, color="0.3", linestyle=":",
                           label=f"head only (control, n={head.n})")
                ax.legend(fontsize=7)
                control = [head.mean * 100]
            ax.set_title(f"ours: {model_name(model)}\n{task_name(task)}, {tier_} tier", fontsize=10)
            ax.set_ylabel(f"{PRIMARY_METRIC.get(task, 'accuracy')} (%)")
        else:
            heights, errors = [], []
            for t, r in configs:
                match = paper[(paper["dataset"] == what) & (paper["targets"] == t)
                              & (paper["rank"] == str(r))]
                heights.append(float(match["value"].iloc[0]) if len(match) else math.nan)
                errors.append(float(match["pm"].iloc[0]) if len(match) else 0)
            ax.set_title(f"paper: GPT-3 175B\n{what} (Table 5)", fontsize=10)
            ax.set_ylabel("validation accuracy (%)")
        ax.bar(x, heights, yerr=errors, capsize=3,
               color="tab:blue" if kind == "ours" else "tab:gray")
        finite = [h for h in heights + control if not math.isnan(h)]
        if finite:
            ax.set_ylim(min(finite) - 3, max(finite) + 2)
        for i, height in enumerate(heights):  # missing stays visibly missing
            if math.isnan(height):
                ax.text(i, 0.02, "not run", transform=ax.get_xaxis_transform(), rotation=90,
                        ha="center", va="bottom", fontsize=8, color="tab:red")
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Same parameter budget, different weights (error bars: ours, std over seeds; "
                 "paper, its typical std per dataset)", fontsize=11)
    return save_figure(fig, path)
