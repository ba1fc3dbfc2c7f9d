"""Table 2: GLUE, ours beside RoBERTa-base/large and DeBERTa-XXL; ours as a 'mean ± std' and a
'median' row per model, method and tier (the paper reports the median of 5 seeds)."""
from __future__ import annotations

import pandas as pd

from analysis.tables.formats import MISSING, Table
from analysis.tables.ours import (
    METHOD_NAMES,
    PATH_START,
    SCALE_NOTE,
    cells,
    format_cell,
    format_params,
    model_name,
    runs_frame,
    task_name,
    tidy_frame,
    tidy_ours,
    tier_note,
)
from analysis.tables.paper import paper_cell, paper_numbers, short_aggregate, tidy_paper
from lora_repro.data.glue import GLUE_TASKS

TABLE2_TASKS = tuple(task for task in GLUE_TASKS if task != "wnli")  # the paper leaves WNLI out


def glue_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_glue", tier)
    stats = cells(frame, ["model", "method", "tier", "task"])
    tasks = list(TABLE2_TASKS) + sorted({k[3] for k in stats} - set(TABLE2_TASKS))
    rows = []
    for model, method, tier_ in sorted({k[:3] for k in stats}):
        row_cells = {t: stats.get((model, method, tier_, t)) for t in tasks}
        done = [c for c in row_cells.values() if c and c.n]
        params = None
        if done:
            params = done[0].trainable if method == "full_ft" else done[0].lora_params  # the method's own
        for stat in ("mean", "median"):
            row = {"source": "ours", "model": model_name(model),
                   "method": METHOD_NAMES.get(method, method),
                   "tier / aggregate":
                       f"{tier_}, {'mean ± std' if stat == 'mean' else 'median'} over seeds",
                   "# trainable": format_params(params)}
            for t in tasks:
                row[task_name(t)] = format_cell(row_cells[t], stat=stat)
            complete = all(row_cells[t] and row_cells[t].n for t in TABLE2_TASKS)
            values = [getattr(row_cells[t], stat) for t in TABLE2_TASKS] if complete else []
            row["Avg."] = f"{100 * sum(values) / len(values):.1f}" if complete else MISSING
            rows.append(row)
    paper = paper_numbers("table2_glue")
    for (model, method, setup, params), group in paper.groupby(
            ["paper_model", "method", "setup", "trainable_params_m"], sort=False):
        by_task = {r["task"]: r for _, r in group.iterrows()}
        row = {"source": "paper", "model": model, "method": method + (" †" if setup else ""),
               "tier / aggregate": short_aggregate(group), "# trainable": f"{params}M"}
        for t in tasks:
            row[task_name(t)] = paper_cell(by_task.get(t))
        row["Avg."] = paper_cell(by_task.get("avg"))
        rows.append(row)
    notes = [
        tier_note(frame, "table_glue"),
        "Ours: the best epoch's primary validation metric per run; a 'mean ± std' row and a "
        "'median' row (the paper reports the median of 5 seeds for RoBERTa and DeBERTa). "
        "# trainable: LoRA factors only for LoRA (the paper's convention; the classifier head is "
        "trained too), every weight for FT. Avg. only when all 8 GLUE tasks are present. "
        + SCALE_NOTE,
        "Metrics: MNLI accuracy (ours: matched; the paper: 'overall (matched and mismatched)'), "
        "CoLA Matthews correlation, STS-B Pearson, accuracy for the others.",
        "Paper: Table 2 of arXiv:2106.09685 (RoBERTa-base/large, DeBERTa-XXL); "
        "'published in prior work' marks its * rows; † = its Houlsby et al. setup. "
        "A model that is not in the paper (e.g. the quick tier's all-MiniLM-L6-v2) is shown in its "
        "own rows, never mixed into the paper's.",
    ]
    notes += start_notes(frame)
    tidy = tidy_frame(tidy_ours(stats, ["model", "method", "tier", "task"], "primary")
                        + tidy_paper(paper))
    return Table("table2_glue", "table_glue",
                 "Table 2: GLUE — ours beside RoBERTa-base/large and DeBERTa-XXL",
                 pd.DataFrame(rows), tidy, notes)


def start_notes(frame: pd.DataFrame) -> list[str]:
    """One note per (tier, task, source) naming the methods whose runs started from another task's
    run of the same method and seed (the paper's MNLI stage) rather than from the pretrained model."""
    if frame.empty or "started_from" not in frame:
        return []
    started = frame[frame["started_from"].notna()]
    notes = []
    for (tier, task, source), group in started.groupby(["tier", "task", "started_from"]):
        methods = ", ".join(METHOD_NAMES.get(m, m) for m in sorted(set(group["method"])))
        start = ("a run folder given by init_from" if source == PATH_START else
                 f"the same method's {task_name(source)} run of the same seed")
        notes.append(f"Ours ({tier}): {task_name(task)} {methods} started from {start} (its "
                     "weights, a fresh task head), as the paper starts MRPC, RTE and STS-B from MNLI "
                     "(Appendix D.1); the other cells start from the pretrained model.")
    return notes
