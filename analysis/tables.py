"""The paper's tables with ours beside them, built from run records only.

    python -m analysis.cli tables all                       # every table and sweep plot
    python -m analysis.cli tables table_rank --tier quick   # one experiment, one tier

Writes results/tables/<name>.{md,tex,csv} and, for the sweeps, results/figures/<name>.png:

    table_glue    -> table2_glue      GLUE, ours beside RoBERTa / DeBERTa (paper Table 2)
    table_e2e     -> table3_e2e       E2E, WebNLG, DART beside GPT-2 M/L (Tables 3, 13, 14, 18)
    table_targets -> table5_targets   which weights to adapt at one budget (Table 5, GPT-3 175B)
    table_rank    -> table6_rank      accuracy vs rank per target set (Table 6, GPT-3 175B)
    subspace      -> table7_amplification   ||U^T W V^T||_F vs ||dW||_F (Table 7, analysis.table7)

Ours: mean ± sample std (n - 1) over the seeds of each cell, with n; for GLUE also the median, as
the paper reports the median of 5 seeds there. Records hold fractions (0.843); cells show them as
the paper prints them: x100 with one decimal (BLEU, METEOR, ROUGE-L too); NIST and CIDEr on their
own scale. Only finished runs make numbers; a cell without one shows "—" with the count of failed
(or still running) runs, and nothing is ever filled in. The paper's numbers come from
results/paper/*.csv, printed as the paper prints them, each row naming the paper's model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from lora_repro.records import load_records

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "results" / "paper"
MISSING = "—"
TARGET_ORDER = ("q", "k", "v", "o")

MODEL_NAMES = {
    "minilm_l6": "all-MiniLM-L6-v2", "roberta_base": "RoBERTa-base",
    "roberta_large": "RoBERTa-large", "deberta_v2_xxlarge": "DeBERTa-XXL",
    "gpt2_medium": "GPT-2 M", "gpt2_large": "GPT-2 L", "tiny_gpt2": "tiny GPT-2 (random init)",
    "tiny_bert": "tiny BERT (random init)", "tiny_roberta": "tiny RoBERTa (random init)",
    "tiny_deberta_v2": "tiny DeBERTa-v2 (random init)",
}
TASK_NAMES = {
    "mnli": "MNLI", "sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI", "qqp": "QQP",
    "rte": "RTE", "stsb": "STS-B", "e2e": "E2E", "webnlg": "WebNLG", "dart": "DART",
}
PRIMARY_METRIC = {"mnli": "matched accuracy", "cola": "Matthews correlation", "stsb": "Pearson"}
GLUE_TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
RANK_TARGETS = ("q", "q,v", "q,k,v,o")  # Table 6's rows
RANK_RANKS = (1, 2, 4, 8, 64)  # Table 6's columns
BUDGET_CONFIGS = (("q", 8), ("k", 8), ("v", 8), ("o", 8), ("q,k", 4), ("q,v", 4), ("q,k,v,o", 2))
# NLG metrics as Table 3 prints them: (record key, header, scale to print, decimals)
NLG_METRICS = (("bleu", "BLEU", 100, 1), ("nist", "NIST", 1, 2), ("meteor", "MET", 100, 1),
               ("rouge_l", "ROUGE-L", 100, 1), ("cider", "CIDEr", 1, 2))
SCALE_NOTE = ("Scale: records hold fractions; cells show them x100 with one decimal, as the paper "
              "prints them.")


class TableError(ValueError):
    """Bad input to the tables command; the message names the value and the valid choices."""


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def task_name(task: str) -> str:
    return TASK_NAMES.get(task, task)


def targets_key(targets) -> str:
    """["v", "q"] -> "q,v" (q, k, v, o order); None (full fine-tuning) -> ""."""
    if not targets:
        return ""
    return ",".join(sorted(targets, key=lambda t: (TARGET_ORDER + (t,)).index(t)))


# -- records -------------------------------------------------------------------------------------

def runs_frame(runs_dir, experiment: str, tier: str | None = None) -> pd.DataFrame:
    """One row per record of the experiment (any status): labels, parameter counts, best metrics."""
    rows = []
    for record in load_records(runs_dir, experiment, status=None):
        parameters = record.get("parameters") or {}
        best = {k: v for k, v in (record.get("best") or {}).items() if isinstance(v, (int, float))}
        rows.append({
            **best,
            "run_id": record.get("run_id"), "status": record.get("status"),
            "error": record.get("error"), "model": record.get("model"), "task": record.get("task"),
            "method": record.get("method"), "targets": targets_key(record.get("targets")),
            "rank": int(record.get("rank") or 0), "seed": record.get("seed"),
            "tier": record.get("tier"), "trainable": parameters.get("trainable"),
            "lora_params": parameters.get("lora"), "run_dir": record.get("run_dir"),
        })
    frame = pd.DataFrame(rows, columns=None if rows else ["status", "tier", "model", "task"])
    if tier is not None and not frame.empty:
        frame = frame[frame["tier"] == tier]
    return frame


@dataclass
class Cell:
    """Ours for one table cell: the finished runs' statistics and the count of the others."""

    n: int = 0
    mean: float = math.nan
    std: float = math.nan
    median: float = math.nan
    failed: int = 0
    running: int = 0
    trainable: float = math.nan
    lora_params: float = math.nan
    seeds: list = field(default_factory=list)


def cells(frame: pd.DataFrame, keys: list[str], metric: str = "primary") -> dict[tuple, Cell]:
    """{key tuple: Cell} over groups of `keys`; statistics of `metric` over the done runs."""
    out = {}
    if frame.empty:
        return out
    for key, group in frame.groupby(keys, dropna=False):
        done = group[group["status"] == "done"]
        values = done[metric].dropna() if metric in done else pd.Series(dtype=float)
        out[key if isinstance(key, tuple) else (key,)] = Cell(
            n=len(values), mean=values.mean(), std=values.std(), median=values.median(),
            failed=int((group["status"] == "failed").sum()),
            running=int((group["status"] == "running").sum()),
            trainable=_first(done, "trainable"), lora_params=_first(done, "lora_params"),
            seeds=sorted(done.loc[values.index, "seed"].tolist()),
        )
    return out


def _first(frame: pd.DataFrame, column: str) -> float:
    values = frame[column].dropna() if column in frame else []
    return values.iloc[0] if len(values) else math.nan


def settings(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (model, task, tier) combinations the records hold, in a stable order."""
    if frame.empty:
        return []
    return sorted(set(zip(frame["model"], frame["task"], frame["tier"])))


# -- cells as text -------------------------------------------------------------------------------

def format_cell(cell: Cell | None, scale: float = 100, decimals: int = 1,
                stat: str = "mean") -> str:
    """"84.3 ± 0.4 (n=2)"; "84.3 (n=1)"; "—" with "(1 failed)" when no run finished."""
    cell = cell or Cell()
    others = [f"{count} {what}" for count, what in ((cell.failed, "failed"),
                                                     (cell.running, "running")) if count]
    if cell.n == 0:
        return MISSING + (f" ({', '.join(others)})" if others else "")
    value = cell.median if stat == "median" else cell.mean
    text = f"{value * scale:.{decimals}f}"
    if stat == "mean" and cell.n > 1:
        text += f" ± {cell.std * scale:.{decimals}f}"
    return text + f" (n={cell.n}{''.join('; ' + o for o in others)})"


def format_params(count) -> str:
    """Our parameter counts exactly ("4,608"); the paper's stay as printed ("0.3M")."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        return MISSING
    return f"{int(count):,}"


def paper_cell(row) -> str:
    """A paper number as printed, with its ± when it has one; unit "fraction" shown x100."""
    if row is None:
        return MISSING
    value, pm = str(row["value"]), str(row["pm"])
    if row["unit"] == "fraction":
        value, pm = _fraction_to_percent(value), _fraction_to_percent(pm)
    return value + (f" ± {pm}" if pm else "")


def _fraction_to_percent(text: str) -> str:
    if not text:
        return text
    decimals = len(text.split(".")[1]) if "." in text else 0
    return f"{float(text) * 100:.{max(decimals - 2, 0)}f}"


def short_aggregate(paper_rows: pd.DataFrame) -> str:
    """"median of 5 seeds, each from ..." -> "median of 5 seeds"."""
    return paper_rows["aggregate"].iloc[0].split(",")[0].split(" (")[0]


def paper_numbers(name: str) -> pd.DataFrame:
    """results/paper/<name>.csv as strings, so numbers print exactly as the paper prints them."""
    return pd.read_csv(PAPER_DIR / f"{name}.csv", dtype=str, keep_default_na=False)


# -- rendering -----------------------------------------------------------------------------------

@dataclass
class Table:
    name: str  # file stem: table6_rank
    experiment: str
    title: str
    frame: pd.DataFrame  # the rendered cells, all strings
    tidy: pd.DataFrame  # the numbers behind it (ours and the paper's), for the csv
    notes: list[str]
    figures: list[Path] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def markdown(self) -> str:
        return (f"**{self.title}**\n\n" + markdown_table(self.frame) + "\n"
                + "".join(f"- {note}\n" for note in self.notes))


def markdown_table(frame: pd.DataFrame) -> str:
    def escape(text) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(map(escape, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _tex(text) -> str:
    text = str(text).replace("\\", r"\textbackslash{}")
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("±", r"$\pm$").replace("—", "---").replace("†", r"$\dagger$")


def latex_table(table: Table) -> str:
    columns = table.frame.columns
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(columns) + "}", r"\toprule",
             " & ".join(_tex(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\"
              for row in table.frame.itertuples(index=False)]
    caption = table.title + ". " + " ".join(table.notes)
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(caption) + "}",
              r"\label{tab:" + table.name.replace("_", "-") + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write(table: Table, out_dir) -> Table:
    """<out_dir>/<name>.md, .tex, .csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / table.name
    table.paths = [stem.with_suffix(ext) for ext in (".md", ".tex", ".csv")]
    table.paths[0].write_text(table.markdown())
    table.paths[1].write_text(latex_table(table))
    table.tidy.to_csv(table.paths[2], index=False)
    return table


def ours_label(model: str, task: str, tier: str) -> str:
    return f"ours: {model_name(model)}, {task_name(task)} [{tier}]"


def tier_note(frame: pd.DataFrame, experiment: str) -> str:
    if frame.empty:
        return (f"Ours: no runs of `{experiment}` found yet (not yet run); only the paper's rows "
                "are shown.")
    done = frame[frame["status"] == "done"]
    tiers = ", ".join(sorted(set(frame["tier"])))
    return (f"Ours: {len(done)} finished, {int((frame['status'] == 'failed').sum())} failed, "
            f"{int((frame['status'] == 'running').sum())} running runs of `{experiment}`; "
            f"tier(s): {tiers}. Each row names the model, task and tier that produced it.")


def tidy_ours(stats: dict[tuple, Cell], keys: list[str], metric: str,
              scale: float = 100) -> list[dict]:
    rows = []
    for key, cell in stats.items():
        rows.append({"source": "ours", **dict(zip(keys, key)), "metric": metric,
                     "mean": cell.mean * scale, "std": cell.std * scale,
                     "median": cell.median * scale, "n": cell.n, "failed": cell.failed,
                     "running": cell.running, "seeds": " ".join(map(str, cell.seeds)),
                     "trainable": cell.trainable, "lora_params": cell.lora_params})
    return rows


def tidy_frame(rows: list[dict]) -> pd.DataFrame:
    """The csv's rows: ours and the paper's in one long frame; counts as integers."""
    frame = pd.DataFrame(rows)
    counts = [c for c in ("n", "failed", "running") if c in frame]
    return frame.astype({c: "Int64" for c in counts})


def tidy_paper(paper: pd.DataFrame) -> list[dict]:
    return [{"source": "paper", "model": row["paper_model"], "task": row["dataset"],
             "tier": "published", "method": row["method"], "targets": row["targets"],
             "rank": row["rank"], "metric": row["metric"], "value": row["value"],
             "pm": row["pm"], "unit": row["unit"], "paper_table": row["table"],
             "aggregate": row["aggregate"]} for _, row in paper.iterrows()]


# -- Table 6: rank ------------------------------------------------------------------------------

def rank_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_rank", tier)
    lora = frame[frame["method"] == "lora"] if not frame.empty else frame
    stats = cells(lora, ["model", "task", "tier", "targets", "rank"])
    ranks = sorted(set(RANK_RANKS) | {key[4] for key in stats})
    extra_targets = sorted({key[3] for key in stats} - set(RANK_TARGETS))
    paper = paper_numbers("table6_rank")
    rows = []
    for model, task, tier_ in settings(lora):
        for targets in RANK_TARGETS + tuple(extra_targets):
            row = {"source": "ours", "model": model_name(model), "task": task_name(task),
                   "tier": tier_, "weights": "{" + targets + "}"}
            for r in ranks:
                row[f"r={r}"] = format_cell(stats.get((model, task, tier_, targets, r)))
            rows.append(row)
    for dataset in ("WikiSQL", "MultiNLI"):
        for targets in RANK_TARGETS:
            row = {"source": "paper", "model": "GPT-3 175B", "task": dataset, "tier": "published",
                   "weights": "{" + targets + "}"}
            for r in ranks:
                match = paper[(paper["dataset"] == dataset) & (paper["targets"] == targets)
                              & (paper["rank"] == str(r))]
                row[f"r={r}"] = paper_cell(match.iloc[0] if len(match) else None)
            rows.append(row)
    notes = [
        tier_note(frame, "table_rank"),
        "Ours: the task's primary metric on the validation set ("
        + ", ".join(sorted({f"{task_name(t)}: {PRIMARY_METRIC.get(t, 'accuracy')}"
                            for _, t, _ in settings(lora)})) + "), best epoch of each run, "
        "mean ± std over seeds (n = finished seeds). " + SCALE_NOTE,
        "Paper: Table 6 of arXiv:2106.09685 is GPT-3 175B on WikiSQL and MultiNLI (validation "
        "accuracy); its ± is the typical std over seeds the paper gives per dataset (±0.5 WikiSQL, "
        "±0.1 MultiNLI), not a per-cell spread.",
        f"{MISSING}: no finished run for that cell (failed or running runs are counted beside it).",
    ]
    tidy = tidy_frame(tidy_ours(stats, ["model", "task", "tier", "targets", "rank"], "primary")
                        + tidy_paper(paper))
    table = Table("table6_rank", "table_rank",
                  "Table 6: accuracy vs LoRA rank r for each adapted weight set — ours beside "
                  "GPT-3 175B (WikiSQL, MultiNLI)", pd.DataFrame(rows), tidy, notes)
    if figures_dir is not None:
        table.figures = [rank_figure(stats, lora, paper, Path(figures_dir) / "table6_rank.png")]
    return table


def rank_figure(stats: dict, lora: pd.DataFrame, paper: pd.DataFrame, path: Path) -> Path:
    """Metric vs rank (log2 x), one line per weight set, error bars = std over seeds; the paper's
    GPT-3 panels (dashed, error bars = its typical std) beside ours."""
    ours = settings(lora)
    panels = [("ours", s) for s in ours] or [("none", None)]
    panels += [("paper", "WikiSQL"), ("paper", "MultiNLI")]
    ranks = sorted(set(RANK_RANKS) | {key[4] for key in stats})
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, what) in zip(axes, panels):
        if kind == "none":
            ax.text(0.5, 0.5, "ours: not yet run", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("ours")
            continue
        for targets in RANK_TARGETS:
            if kind == "ours":
                points = sorted((key[4], cell) for key, cell in stats.items()
                                if key[:4] == (*what, targets) and cell.n)
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
            model, task, tier_ = what
            ax.set_title(f"ours: {model_name(model)}\n{task_name(task)}, {tier_} tier", fontsize=10)
            ax.set_ylabel(f"{PRIMARY_METRIC.get(task, 'accuracy')} (%)")
        else:
            ax.set_title(f"paper: GPT-3 175B\n{what} (Table 6)", fontsize=10)
            ax.set_ylabel("validation accuracy (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs rank per adapted weight set (error bars: ours, std over seeds; "
                 "paper, its typical std per dataset)", fontsize=11)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


# -- Table 5: which weights ----------------------------------------------------------------------

def targets_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_targets", tier)
    lora = frame[frame["method"] == "lora"] if not frame.empty else frame
    stats = cells(lora, ["model", "task", "tier", "targets", "rank"])
    configs = list(BUDGET_CONFIGS) + sorted({(k[3], k[4]) for k in stats} - set(BUDGET_CONFIGS))
    paper = paper_numbers("table5_targets")
    rows = []
    for targets, rank in configs:
        row = {"weights": "{" + targets + "}", "r": str(rank)}
        for model, task, tier_ in settings(lora):
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
    notes = [
        tier_note(frame, "table_targets"),
        "Ours: the primary validation metric, best epoch, mean ± std over seeds; # LoRA params "
        "counts the A and B factors only (as the paper's 18M does; the classifier head is also "
        "trained). " + SCALE_NOTE,
        "Paper: Table 5 of arXiv:2106.09685, GPT-3 175B on WikiSQL and MultiNLI, all seven "
        "configurations at 18M trainable parameters; its ± is the per-dataset typical std over "
        "seeds (±0.5 WikiSQL, ±0.1 MultiNLI).",
    ]
    tidy = tidy_frame(tidy_ours(stats, ["model", "task", "tier", "targets", "rank"], "primary")
                        + tidy_paper(paper))
    table = Table("table5_targets", "table_targets",
                  "Table 5: which weights to adapt under one parameter budget — ours beside "
                  "GPT-3 175B (WikiSQL, MultiNLI)", pd.DataFrame(rows), tidy, notes)
    if figures_dir is not None:
        table.figures = [targets_figure(stats, lora, paper, configs,
                                        Path(figures_dir) / "table5_targets.png")]
    return table


def targets_figure(stats, lora, paper, configs, path: Path) -> Path:
    """Bars per weight configuration: ours (error bars = std over seeds) and the paper's GPT-3."""
    labels = ["{" + t + "}\nr=" + str(r) for t, r in configs]
    panels = [("ours", s) for s in settings(lora)] or [("none", None)]
    panels += [("paper", "WikiSQL"), ("paper", "MultiNLI")]
    fig = Figure(figsize=(5.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = range(len(configs))
    for ax, (kind, what) in zip(axes, panels):
        if kind == "none":
            ax.text(0.5, 0.5, "ours: not yet run", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("ours")
            continue
        if kind == "ours":
            chosen = [stats.get((*what, t, r)) for t, r in configs]
            heights = [c.mean * 100 if c and c.n else math.nan for c in chosen]
            errors = [c.std * 100 if c and c.n > 1 else 0 for c in chosen]
            model, task, tier_ = what
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
        finite = [h for h in heights if not math.isnan(h)]
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
    return _save(fig, path)


# -- Table 2: GLUE -------------------------------------------------------------------------------

def glue_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_glue", tier)
    stats = cells(frame, ["model", "method", "tier", "task"])
    tasks = list(GLUE_TASKS) + sorted({k[3] for k in stats} - set(GLUE_TASKS))
    rows = []
    for model, method, tier_ in sorted({k[:3] for k in stats}):
        row_cells = {t: stats.get((model, method, tier_, t)) for t in tasks}
        done = [c for c in row_cells.values() if c and c.n]
        params = None
        if done:
            params = done[0].lora_params if method == "lora" else done[0].trainable
        for stat in ("mean", "median"):
            row = {"source": "ours", "model": model_name(model),
                   "method": {"lora": "LoRA", "full_ft": "FT"}.get(method, method),
                   "tier / aggregate":
                       f"{tier_}, {'mean ± std' if stat == 'mean' else 'median'} over seeds",
                   "# trainable": format_params(params)}
            for t in tasks:
                row[task_name(t)] = format_cell(row_cells[t], stat=stat)
            complete = all(row_cells[t] and row_cells[t].n for t in GLUE_TASKS)
            values = [getattr(row_cells[t], stat) for t in GLUE_TASKS] if complete else []
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
    tidy = tidy_frame(tidy_ours(stats, ["model", "method", "tier", "task"], "primary")
                        + tidy_paper(paper))
    return Table("table2_glue", "table_glue",
                 "Table 2: GLUE — ours beside RoBERTa-base/large and DeBERTa-XXL",
                 pd.DataFrame(rows), tidy, notes)


# -- Table 3: E2E (and WebNLG, DART) -------------------------------------------------------------

def e2e_table(runs_dir, tier=None, figures_dir=None) -> Table:
    frame = runs_frame(runs_dir, "table_e2e", tier)
    keys = ["model", "task", "method", "rank", "tier"]
    stats = {metric: cells(frame, keys, metric) for metric, *_ in NLG_METRICS}
    groups = sorted(stats["bleu"]) if stats["bleu"] else []
    our_tasks = {k[1] for k in groups}
    swept = any(len({k[3] for k in groups if k[:3] == g[:3] and k[4] == g[4]}) > 1 for g in groups)
    rows = []
    for key in groups:
        model, task, method, rank, tier_ = key
        first = stats["bleu"][key]
        params = first.lora_params if method == "lora" else first.trainable
        row = {"source": "ours", "model": model_name(model), "task": task_name(task),
               "method": {"lora": "LoRA", "full_ft": "FT"}.get(method, method),
               "r": str(rank) if rank else "", "tier / aggregate": f"{tier_}, mean ± std",
               "# trainable": format_params(params)}
        for metric, header, scale, decimals in NLG_METRICS:
            row[header] = format_cell(stats[metric].get(key), scale, decimals)
        rows.append(row)
    paper = paper_numbers("table3_e2e")
    shown = [paper]
    extra = paper_numbers("table13_14_dart_webnlg")
    shown.append(extra[extra["task"].isin(our_tasks)])
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
        "Tables 13/14 (DART, WebNLG all categories) shown when we have those tasks, Table 18 "
        "(GPT-2 M rank sweep) when we have a rank sweep. The quick tier's random-init tiny GPT-2 "
        "says nothing about the paper's numbers.",
    ]
    tidy = tidy_frame(
        [row for metric, *_ in NLG_METRICS
         for row in tidy_ours(stats[metric], keys, metric,
                              scale=dict((m, s) for m, _, s, _ in NLG_METRICS)[metric])]
        + tidy_paper(paper_rows))
    table = Table("table3_e2e", "table_e2e",
                  "Table 3: GPT-2 with LoRA on E2E (and WebNLG, DART) — ours beside the paper",
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
    return _save(fig, path)


# -- Table 7: amplification (analysis.table7, on the subspace runs) ------------------------------

def amplification_rows(runs_dir, tier=None, target: str = "q") -> tuple[list[dict], list[str]]:
    """Table 7 rows of ours: per (model, task, tier) of the subspace runs, each rank's lowest
    seed, at the middle layer (the paper's 48 of 96) and `target`. Also the skip messages."""
    from analysis.amplification import amplification
    from analysis.cli import middle_layer
    from analysis.inputs import AnalysisError, base_weight, load_adapter
    from analysis.table7 import our_row

    frame = runs_frame(runs_dir, "subspace", tier)
    done = frame[frame["status"] == "done"] if not frame.empty else frame
    rows, skipped = [], []
    for (model, task, tier_, rank), group in (done.groupby(["model", "task", "tier", "rank"])
                                              if not done.empty else []):
        run = group.sort_values("seed").iloc[0]
        try:
            adapter = load_adapter(run["run_dir"])
            layer = middle_layer(adapter.n_layers)
            W = base_weight(adapter, layer, target)
            result = amplification(W, adapter.delta(layer, target), adapter.rank(layer, target))
        except (AnalysisError, KeyError, FileNotFoundError) as err:
            skipped.append(f"{model} {task} [{tier_}] r={rank}: {err}")
            continue
        labels = {**adapter.labels, "reference": run["run_dir"]}
        rows.append(our_row(result, labels, layer, adapter.n_layers, target, rank))
    return rows, skipped


def amplification_table(runs_dir, tier=None, figures_dir=None) -> Table:
    """Table 7 as analysis.table7 builds it: the paper's GPT-3 rows, then ours from the subspace
    runs (written by table7.write_table, so it has one format whoever writes it)."""
    from analysis.table7 import CAPTION, build_table

    ours, skipped = amplification_rows(runs_dir, tier)
    table = build_table(ours)
    notes = [CAPTION, tier_note(runs_frame(runs_dir, "subspace", tier), "subspace")]
    return Table("table7_amplification", "subspace",
                 "Table 7: ||U^T W V^T||_F and the amplification factor — ours beside GPT-3 175B",
                 table, table, notes + [f"skipped {s}" for s in skipped])


def write_amplification(table: Table, out_dir) -> Table:
    """Through analysis.table7's own writer, so Table 7 has one format whoever writes it."""
    from analysis.table7 import write_table

    table.paths = write_table(table.tidy, out_dir)
    return table


# -- entry points --------------------------------------------------------------------------------

BUILDERS = {
    "table_glue": glue_table,
    "table_e2e": e2e_table,
    "table_targets": targets_table,
    "table_rank": rank_table,
    "subspace": amplification_table,
}
EXPERIMENTS = tuple(BUILDERS)


def check_experiment(name: str) -> list[str]:
    """The experiments `name` stands for ("all": every one); a clear error otherwise."""
    if name == "all":
        return list(EXPERIMENTS)
    if name not in BUILDERS:
        raise TableError(f"unknown experiment {name!r}: valid experiments are "
                         f"{', '.join(EXPERIMENTS)} (or all)")
    return [name]


def render(name: str, runs_dir="results/runs", out_dir="results/tables",
           figures_dir="results/figures", tier: str | None = None) -> list[Table]:
    """Build, write and return the table(s) of one experiment, or of all."""
    if tier is not None and tier not in ("quick", "paper"):
        raise TableError(f"unknown tier {tier!r}: valid tiers are quick, paper")
    tables = []
    for experiment in check_experiment(name):
        table = BUILDERS[experiment](runs_dir, tier, figures_dir)
        if experiment == "subspace":
            tables.append(write_amplification(table, out_dir))
        else:
            tables.append(write(table, out_dir))
    return tables
