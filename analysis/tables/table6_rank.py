"""Table 6: accuracy vs LoRA rank r for each adapted weight set, ours beside GPT-3 175B (WikiSQL,
MultiNLI), and its plot (results/figures/table6_rank.png).

Ours per (model, task, tier) and scaling: the paper's alpha / r and, where `table_rank` holds runs
with method.scaling=rslora (rsLoRA's alpha / sqrt(r)), those rows beside them; the head-only runs
of the experiment (the task head alone trains) in a control column."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.tables.formats import MISSING, Table, save_figure
from analysis.tables.ours import (
    PRIMARY_METRIC,
    SCALE_NOTE,
    cells,
    format_cell,
    model_name,
    runs_frame,
    settings,
    task_name,
    tidy_frame,
    tidy_ours,
    tier_note,
)
from analysis.tables.paper import paper_cell, paper_numbers, tidy_paper

RANK_TARGETS = ("q", "q,v", "q,k,v,o")  # Table 6's rows
RANK_RANKS = (1, 2, 4, 8, 64)  # Table 6's columns
SCALINGS = {"standard": "α/r", "rslora": "α/√r (rsLoRA)"}  # how B A is scaled, as rows show it
CONTROL = "head only (control)"  # the column of the head-only runs: the task head alone trains
KEYS = ["model", "task", "tier", "scaling", "targets", "rank"]


def scalings_of(stats: dict, setting: tuple) -> list[str]:
    """The scalings with runs in this (model, task, tier): standard first; standard if none."""
    found = {key[3] for key in stats if key[:3] == setting}
    return sorted(found, key=lambda s: (s != "standard", s)) or ["standard"]


def rank_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_rank", tier)
    lora = frame[frame["method"] == "lora"] if not frame.empty else frame
    control = frame[frame["method"] == "head_only"] if not frame.empty else frame
    stats = cells(lora, KEYS)
    heads = cells(control, ["model", "task", "tier"])
    ranks = sorted(set(RANK_RANKS) | {key[5] for key in stats})
    extra_targets = sorted({key[4] for key in stats} - set(RANK_TARGETS))
    paper = paper_numbers("table6_rank")
    rows = []
    for setting in sorted(set(settings(lora)) | set(settings(control))):
        model, task, tier_ = setting
        for targets in RANK_TARGETS + tuple(extra_targets):
            for scaling in scalings_of(stats, setting):  # rsLoRA beside the standard row
                if scaling != "standard" and not any((*setting, scaling, targets, r) in stats
                                                     for r in ranks):
                    continue  # a variant is shown only for the weight sets it was run on
                row = {"source": "ours", "model": model_name(model), "task": task_name(task),
                       "tier": tier_, "weights": "{" + targets + "}",
                       "scaling": SCALINGS.get(scaling, scaling)}
                for r in ranks:
                    row[f"r={r}"] = format_cell(stats.get((*setting, scaling, targets, r)))
                row[CONTROL] = format_cell(heads.get(setting))
                rows.append(row)
    for dataset in ("WikiSQL", "MultiNLI"):
        for targets in RANK_TARGETS:
            row = {"source": "paper", "model": "GPT-3 175B", "task": dataset, "tier": "published",
                   "weights": "{" + targets + "}", "scaling": SCALINGS["standard"]}
            for r in ranks:
                match = paper[(paper["dataset"] == dataset) & (paper["targets"] == targets)
                              & (paper["rank"] == str(r))]
                row[f"r={r}"] = paper_cell(match.iloc[0] if len(match) else None)
            row[CONTROL] = ""
            rows.append(row)
    notes = [
        tier_note(frame, "table_rank"),
        "Ours: the task's primary metric on the validation set ("
        + ", ".join(sorted({f"{task_name(t)}: {PRIMARY_METRIC.get(t, 'accuracy')}"
                            for _, t, _ in settings(lora)})) + "), best epoch of each run, "
        "mean ± std over seeds (n = finished seeds). " + SCALE_NOTE,
        "scaling: α/r is the paper's h = W x + (α/r) B A x; α/√r is rsLoRA (Kalajdzievski 2023, "
        "rank-stable scaling), run with `make table-rank EXTRA=method.scaling=rslora` into the "
        "same experiment, its rows beside the standard ones.",
        f"{CONTROL}: runs of method head_only in the same experiment (no adapter, the task head "
        "alone trains): what any rank must beat for the adapter to matter.",
        "Paper: Table 6 of arXiv:2106.09685 is GPT-3 175B on WikiSQL and MultiNLI (validation "
        "accuracy); its ± is the typical std over seeds the paper gives per dataset (±0.5 WikiSQL, "
        "±0.1 MultiNLI), not a per-cell spread.",
        f"{MISSING}: no finished run for that cell (runs not done are counted beside it).",
    ]
    control_rows = tidy_ours(heads, ["model", "task", "tier"], "primary")
    tidy = tidy_frame(tidy_ours(stats, KEYS, "primary")
                      + [{**row, "method": "head_only"} for row in control_rows]
                      + tidy_paper(paper))
    table = Table("table6_rank", "table_rank",
                  "Table 6: accuracy vs LoRA rank r for each adapted weight set — ours beside "
                  "GPT-3 175B (WikiSQL, MultiNLI)", pd.DataFrame(rows), tidy, notes)
    if figures_dir is not None:
        table.figures = [rank_figure(stats, heads, lora, control, paper,
                                     Path(figures_dir) / "table6_rank.png")]
    return table


def rank_figure(stats: dict, heads: dict, lora: pd.DataFrame, control: pd.DataFrame,
                paper: pd.DataFrame, path: Path) -> Path:
    """Metric vs rank (log2 x), one line per weight set, error bars = std over seeds, one panel
    per (model, task, tier) and scaling, the head-only control as a grey band (mean ± std); the
    paper's GPT-3 panels (dashed, error bars = its typical std) beside ours."""
    ours = [(s, scaling) for s in sorted(set(settings(lora)) | set(settings(control)))
            for scaling in scalings_of(stats, s)]
    panels = [("ours", s) for s in ours] or [("none", None)]
    panels += [("paper", "WikiSQL"), ("paper", "MultiNLI")]
    ranks = sorted(set(RANK_RANKS) | {key[5] for key in stats})
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, what) in zip(axes, panels):
        if kind == "none":
            ax.text(0.5, 0.5, "ours: not yet run", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("ours")
            continue
        for targets in RANK_TARGETS:
            if kind == "ours":
                points = sorted((key[5], cell) for key, cell in stats.items()
                                if key[:5] == (*what[0], what[1], targets) and cell.n)
                if not points:
                    continue
                ax.errorbar([r for r, _ in points], [c.mean * 100 for _, c in points],
                            yerr=[0 if c.n < 2 else c.std * 100 for _, c in points],
                            marker="o", capsize=3, label="{" + targets + "}")
            else:
                rows = paper[(paper["dataset"] == what) & (paper["targets"] == targets)]
                ax.errorbar(rows["rank"].astype(int), rows["value"].astype(float),
                            yerr=rows["pm"].astype(float), marker="s", capsize=3,
                            linestyle="--", label="{" + targets + "}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlabel("rank r")
        if kind == "ours":
            (model, task, tier_), scaling = what
            head = heads.get((model, task, tier_))
            if head and head.n:
                spread = 0 if head.n < 2 else head.std * 100
                ax.axhspan(head.mean * 100 - spread, head.mean * 100 + spread, color="0.85")
                ax.axhline(head.mean * 100, color="0.4", linestyle=":",
                           label=f"head only (n={head.n})")
            ax.set_title(f"ours: {model_name(model)}, {SCALINGS.get(scaling, scaling)}\n"
                         f"{task_name(task)}, {tier_} tier", fontsize=10)
            ax.set_ylabel(f"{PRIMARY_METRIC.get(task, 'accuracy')} (%)")
        else:
            ax.set_title(f"paper: GPT-3 175B\n{what} (Table 6)", fontsize=10)
            ax.set_ylabel("validation accuracy (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs rank per adapted weight set (error bars: ours, std over seeds; "
                 "paper, its typical std per dataset; grey: the head-only control)", fontsize=11)
    return save_figure(fig, path)
