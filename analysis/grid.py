"""The quick tier's learning-rate grid, summarised: one row per run of `experiment=lr_grid`.

    lora-repro analyze grid [--runs-dir results/runs/lr_grid] [--csv PATH]

For each (model, method, task) the learning rate with the best dev metric is marked `chosen`;
`still improving` flags a run whose best epoch is its last (the epoch budget was too short to
see the dev metric stop improving, so issue 13's protocol needs more epochs there).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lora_repro.records import find_records

GRID_DIR = Path("results/runs/lr_grid")


def grid_rows(records: list[dict]) -> pd.DataFrame:
    """One row per finished grid run: its setting, dev metric per epoch, best epoch and choice."""
    rows = []
    for record in records:
        curve = [epoch.get("primary") for epoch in record.get("epochs") or []]
        if not curve:
            continue
        hp = record.get("hyperparameters") or {}
        rows.append({
            "model": record.get("model"), "task": record.get("task"),
            "method": record.get("method"), "lr": hp.get("lr"), "epochs": hp.get("epochs"),
            "seed": record.get("seed"), "best": (record.get("best") or {}).get("primary"),
            "best_epoch": record.get("best_epoch"),
            "dev per epoch": " ".join(f"{value:.3f}" for value in curve),
            "still improving": record.get("best_epoch") == len(curve),
            "git_commit": (record.get("git_commit") or "")[:8],
            "run_id": record.get("run_id"),
        })
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).sort_values(["model", "task", "method", "lr"], ignore_index=True)
    top = table.groupby(["model", "task", "method"])["best"].transform("max")
    table.insert(table.columns.get_loc("best_epoch") + 1, "chosen", table["best"] == top)
    return table


def summarise(runs_dir=GRID_DIR, csv: Path | None = None) -> pd.DataFrame:
    """The grid table of every finished run under runs_dir (also written to csv when given)."""
    if not Path(runs_dir).exists():
        raise FileNotFoundError(f"{runs_dir}: no grid runs yet (lora-repro train -m "
                                "experiment=lr_grid method=... task=... train.lr=a,b,c)")
    table = grid_rows(find_records(runs_dir))
    if table.empty:
        raise ValueError(f"{runs_dir}: no finished grid run with a dev metric")
    if csv:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    return table
