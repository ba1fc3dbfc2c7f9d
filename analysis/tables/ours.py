"""Ours, cell by cell: one experiment's run records as a frame (read through lora_repro.records),
grouped into cells (statistics over the seeds of the finished runs, with the count of the runs not
done: failed, running or interrupted), and the labels and text that every table shares.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.tables.formats import MISSING
from lora_repro.architectures import TARGETS
from lora_repro.data.glue import GLUE_TASKS
from lora_repro.records import STATUSES, load_records

MODEL_NAMES = {
    "minilm_l6": "all-MiniLM-L6-v2", "roberta_base": "RoBERTa-base",
    "roberta_large": "RoBERTa-large", "deberta_v2_xxlarge": "DeBERTa-XXL",
    "gpt2_medium": "GPT-2 M", "gpt2_large": "GPT-2 L", "tiny_gpt2": "tiny GPT-2 (random init)",
    "tiny_bert": "tiny BERT (random init)", "tiny_roberta": "tiny RoBERTa (random init)",
    "tiny_deberta_v2": "tiny DeBERTa-v2 (random init)",
    "smollm2_135m": "SmolLM2-135M-Instruct (Q4_1, dequantized)", "tiny_llama": "tiny Llama (random init)",
}
# the paper's names for our methods (Tables 2 and 3)
METHOD_NAMES = {"lora": "LoRA", "full_ft": "FT", "ft_top2": "FT^Top2", "bitfit": "BitFit", "adapter_h": "Adpt^H",
                "adapter_l": "Adpt^L", "adapter_p": "Adpt^P", "adapter_d": "Adpt^D", "prefix_embed": "PreEmbed",
                "prefix_layer": "PreLayer", "head_only": "head only (control)",
                "zero_shot": "zero-shot (control)"}
# a GLUE task's classic folder name is its official name (SST-2, STS-B, ...)
TASK_NAMES = {name: task.folder for name, task in GLUE_TASKS.items()} | {
    "e2e": "E2E", "webnlg": "WebNLG", "dart": "DART"}
PRIMARY_METRIC = {"mnli": "matched accuracy", "cola": "Matthews correlation", "stsb": "Pearson"}
NOT_DONE = tuple(status for status in STATUSES if status != "done")  # counted, never dropped
SCALE_NOTE = ("Scale: records hold fractions; cells show them x100 with one decimal, as the paper "
              "prints them.")


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def task_name(task: str) -> str:
    return TASK_NAMES.get(task, task)


def ours_label(model: str, task: str, tier: str) -> str:
    return f"ours: {model_name(model)}, {task_name(task)} [{tier}]"


def targets_key(targets) -> str:
    """["v", "q"] -> "q,v" (q, k, v, o order); None (full fine-tuning) -> ""."""
    if not targets:
        return ""
    return ",".join(sorted(targets, key=lambda t: (TARGETS + (t,)).index(t)))


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
            "rank": int(record.get("rank") or 0), "scaling": scaling_of(record),
            "seed": record.get("seed"),
            "tier": record.get("tier"), "train_setting": train_setting(record),
            "started_from": started_from(record),
            "trainable": parameters.get("trainable"),
            "lora_params": parameters.get("lora", parameters.get("method")),
            "run_dir": record.get("run_dir"),
        })
    frame = pd.DataFrame(rows, columns=None if rows else ["status", "tier", "model", "task"])
    if tier is not None and not frame.empty:
        frame = frame[frame["tier"] == tier]
    return frame


def train_setting(record: dict) -> str:
    """The record's training settings that change its result, as one comparable string: runs of
    one cell must share it (a cell mixing two protocols, e.g. 2 and 3 epochs, is flagged)."""
    from lora_repro.settings import EXECUTION_FIELDS

    hp = record.get("hyperparameters") or {}
    setting = {k: v for k, v in hp.items() if k not in EXECUTION_FIELDS}
    return json.dumps({**setting, "started_from": started_from(record)}, sort_keys=True)


PATH_START = "path"  # started_from of a run whose start was given as a folder, not a task


def started_from(record: dict) -> str | None:
    """The task whose run this one started from (the paper's MNLI stage), PATH_START for a start
    given as a folder, None for the pretrained model."""
    source = record.get("init_from")
    if not source:
        return None
    return source.get("task") or PATH_START


def select(frame: pd.DataFrame, **labels) -> pd.DataFrame:
    """The rows of `frame` whose columns equal the given labels (an empty frame stays empty)."""
    if frame.empty:
        return frame
    mask = pd.Series(True, index=frame.index)
    for column, value in labels.items():
        mask &= frame[column] == value
    return frame[mask]


def done(frame: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of a frame."""
    return frame[frame["status"] == "done"] if not frame.empty else frame


def setting_label(model: str, task: str, tier: str) -> str:
    """"all-MiniLM-L6-v2, SST-2, quick tier": one setting of ours, as verdicts name it."""
    return f"{model_name(model)}, {task_name(task)}, {tier} tier"


def scaling_of(record: dict) -> str:
    """A LoRA record's scaling of B A: "standard" (alpha / r) or "rslora" (alpha / sqrt r); records
    from before the option are standard. "" for the other methods."""
    if record.get("method") != "lora":
        return ""
    return (record.get("method_config") or {}).get("scaling") or "standard"


@dataclass
class Cell:
    """Ours for one table cell: the finished runs' statistics and the count of the others."""

    n: int = 0
    mean: float = math.nan
    std: float = math.nan
    median: float = math.nan
    not_done: dict = field(default_factory=dict)  # status -> runs without a number
    trainable: float = math.nan
    lora_params: float = math.nan
    seeds: list = field(default_factory=list)
    settings: int = 0  # distinct training settings among the finished runs (more than 1: flagged)


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
            not_done=not_done_counts(group),
            trainable=_first(done, "trainable"), lora_params=_first(done, "lora_params"),
            seeds=sorted(done.loc[values.index, "seed"].tolist()),
            settings=done.loc[values.index, "train_setting"].nunique() if "train_setting" in done else 0,
        )
    return out


def not_done_counts(frame: pd.DataFrame) -> dict[str, int]:
    """{status: count} of the runs that are not done, in NOT_DONE's order, then any other status."""
    counts = frame.loc[frame["status"] != "done", "status"].astype(str).value_counts()
    order = [s for s in NOT_DONE if s in counts] + sorted(set(counts.index) - set(NOT_DONE))
    return {status: int(counts[status]) for status in order}


def _first(frame: pd.DataFrame, column: str) -> float:
    values = frame[column].dropna() if column in frame else []
    return values.iloc[0] if len(values) else math.nan


def settings(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (model, task, tier) combinations the records hold, in a stable order."""
    if frame.empty:
        return []
    return sorted(set(zip(frame["model"], frame["task"], frame["tier"])))


def format_cell(cell: Cell | None, scale: float = 100, decimals: int = 1,
                stat: str = "mean") -> str:
    """"84.3 ± 0.4 (n=2)"; "84.3 (n=1)"; "—" with "(1 failed)" when no run finished."""
    cell = cell or Cell()
    others = [f"{count} {status}" for status, count in cell.not_done.items()]
    if cell.n == 0:
        return MISSING + (f" ({', '.join(others)})" if others else "")
    value = cell.median if stat == "median" else cell.mean
    text = f"{value * scale:.{decimals}f}"
    if stat == "mean" and cell.n > 1:
        text += f" ± {cell.std * scale:.{decimals}f}"
    if cell.settings > 1:  # never silent: the runs were not trained alike
        others.append(f"{cell.settings} different training settings")
    return text + f" (n={cell.n}{''.join('; ' + o for o in others)})"


def format_params(count) -> str:
    """Our parameter counts exactly ("4,608"); the paper's stay as printed ("0.3M")."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        return MISSING
    return f"{int(count):,}"


def tier_note(frame: pd.DataFrame, experiment: str) -> str:
    if frame.empty:
        return (f"Ours: no runs of `{experiment}` found yet (not yet run); only the paper's rows "
                "are shown.")
    not_done = {status: 0 for status in NOT_DONE} | not_done_counts(frame)
    counts = "".join(f", {count} {status}" for status, count in not_done.items())
    tiers = ", ".join(sorted(set(frame["tier"])))
    return (f"Ours: {int((frame['status'] == 'done').sum())} finished{counts} runs of "
            f"`{experiment}`; tier(s): {tiers}. Each row names the model, task and tier that "
            "produced it.")


def tidy_ours(stats: dict[tuple, Cell], keys: list[str], metric: str,
              scale: float = 100) -> list[dict]:
    rows = []
    for key, cell in stats.items():
        rows.append({"source": "ours", **dict(zip(keys, key)), "metric": metric,
                     "mean": cell.mean * scale, "std": cell.std * scale,
                     "median": cell.median * scale, "n": cell.n,
                     **{status: cell.not_done.get(status, 0) for status in NOT_DONE},
                     "seeds": " ".join(map(str, cell.seeds)),
                     "trainable": cell.trainable, "lora_params": cell.lora_params})
    return rows


def tidy_frame(rows: list[dict]) -> pd.DataFrame:
    """The csv's rows: ours and the paper's in one long frame; counts as integers."""
    frame = pd.DataFrame(rows)
    counts = [c for c in ("n", *NOT_DONE) if c in frame]
    return frame.astype({c: "Int64" for c in counts})
