"""Table 3: the decoder on E2E (and WebNLG, DART), ours beside the paper's GPT-2 in Tables 3, 13,
14 and, for a rank sweep, Table 18 with its plot (results/figures/table18_e2e_rank.png)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from analysis.tables.formats import MISSING, Table, save_figure
from analysis.tables.ours import (
    METHOD_NAMES,
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

# NLG metrics as Table 3 prints them: (record key, header, scale to print, decimals)
NLG_METRICS = (("bleu", "BLEU", 100, 1), ("nist", "NIST", 1, 2), ("meteor", "MET", 100, 1),
               ("rouge_l", "ROUGE-L", 100, 1), ("cider", "CIDEr", 1, 2))
# WebNLG's BLEU over the seen and the unseen categories apart (Table 14's S and U; A is BLEU)
WEBNLG_METRICS = (("bleu_seen", "BLEU S", 100, 1), ("bleu_unseen", "BLEU U", 100, 1))


def e2e_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_e2e", tier)
    keys = ["model", "task", "method", "rank", "tier"]
    our_tasks = set(frame["task"]) if not frame.empty else set()
    metrics = NLG_METRICS + (WEBNLG_METRICS if "webnlg" in our_tasks else ())
    stats = {metric: cells(frame, keys, metric) for metric, *_ in metrics}
    groups = sorted(stats["bleu"]) if stats["bleu"] else []
    swept = any(len({k[3] for k in groups if k[:3] == g[:3] and k[4] == g[4]}) > 1 for g in groups)
    rows = []
    for key in groups:
        model, task, method, rank, tier_ = key
        first = stats["bleu"][key]
        params = first.trainable if method == "full_ft" else first.lora_params  # the method's own
        row = {"source": "ours", "model": model_name(model), "task": task_name(task),
               "method": METHOD_NAMES.get(method, method),
               "r": str(rank) if rank else "", "tier / aggregate": f"{tier_}, mean ± std",
               "# trainable": format_params(params)}
        for metric, header, scale, decimals in metrics:
            row[header] = format_cell(stats[metric].get(key), scale, decimals)
        rows.append(row)
    paper = paper_numbers("table3_e2e")
    shown = [paper]
    extra = paper_numbers("table13_14_dart_webnlg")
    # WebNLG (U), (S) and (A): every row of a data set we ran, by its name
    shown.append(extra[extra["dataset"].str.split(" ").str[0].isin({task_name(t) for t in our_tasks})])
    if swept:
        shown.append(paper_numbers("table18_e2e_rank"))
    paper_rows = pd.concat(shown, ignore_index=True)
    headers = dict((m, h) for m, h, *_ in NLG_METRICS) | {"ter": "TER", "val_loss": "val loss"}
    by = ["table", "paper_model", "dataset", "method", "rank", "trainable_params_m"]
    for (table, model, dataset, method, rank, params), group in paper_rows.groupby(by, sort=False):
        row = {"source": f"paper ({table})", "model": model, "task": dataset, "method": method,
               "r": rank, "tier / aggregate": short_aggregate(group),
               "# trainable": f"{params}M" if params else MISSING}
        for _, r in group.iterrows():
            row[headers[r["metric"]]] = paper_cell(r)
        rows.append(row)
    table_frame = pd.DataFrame(rows).fillna(MISSING)
    notes = [
        tier_note(frame, "table_e2e"),
        "Ours: each run's scores from its best epoch's adapter (beam search on the evaluation "
        "set), mean ± std over seeds. BLEU, METEOR and ROUGE-L are x100 (records hold 0..1), as "
        "Table 3 prints them; NIST and CIDEr on their own scale. Paper METEOR/TER printed as "
        "fractions (Tables 13, 14, 18) are shown x100 too; TER: lower is better.",
        "Paper: Table 3 of arXiv:2106.09685 (GPT-2 M/L on E2E; mean of 3 seeds for its own rows); "
        "Tables 13/14 (DART; WebNLG unseen (U), seen (S) and all (A) categories) shown when we "
        "have those tasks, Table 18 (GPT-2 M rank sweep) when we have a rank sweep. The quick "
        "tier's decoder is SmolLM2-135M, not GPT-2: its rows test the same comparisons at small "
        "scale, not the paper's numbers.",
    ]
    tidy = tidy_frame(
        [row for metric, *_ in metrics
         for row in tidy_ours(stats[metric], keys, metric,
                              scale=dict((m, s) for m, _, s, _ in metrics)[metric])]
        + tidy_paper(paper_rows))
    table = Table("table3_e2e", "table_e2e",
                  "Table 3: LoRA on E2E (and WebNLG, DART) — ours beside the paper's GPT-2",
                  table_frame, tidy, notes)
    if figures_dir is not None and swept:
        table.figures = [e2e_rank_figure(stats["bleu"], paper_numbers("table18_e2e_rank"),
                                         Path(figures_dir) / "table18_e2e_rank.png")]
    return table


def e2e_rank_figure(bleu: dict, paper: pd.DataFrame, path: Path) -> Path:
    """BLEU vs rank: ours per (model, task, method, tier), and the paper's GPT-2 M (Table 18)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for group in sorted({(k[0], k[1], k[2], k[4]) for k in bleu}):
        points = sorted((k[3], c) for k, c in bleu.items()
                        if (k[0], k[1], k[2], k[4]) == group and c.n)
        if len(points) > 1:
            ax.errorbar([r for r, _ in points], [c.mean * 100 for _, c in points],
                        yerr=[0 if c.n < 2 else c.std * 100 for _, c in points], marker="o",
                        capsize=3,
                        label=f"ours: {model_name(group[0])} {task_name(group[1])} [{group[3]}]")
    rows = paper[paper["metric"] == "bleu"]
    ax.plot(rows["rank"].astype(int), rows["value"].astype(float), "s--",
            label="paper: GPT-2 M, E2E (Table 18)")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set(xlabel="rank r", ylabel="BLEU (x100)", title="E2E BLEU vs LoRA rank")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
