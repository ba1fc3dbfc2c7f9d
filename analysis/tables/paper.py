"""The paper's numbers, stored as data in results/paper/*.csv, printed as the paper prints them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.tables.formats import MISSING

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"


def paper_numbers(name: str) -> pd.DataFrame:
    """results/paper/<name>.csv as strings, so numbers print exactly as the paper prints them."""
    return pd.read_csv(PAPER_DIR / f"{name}.csv", dtype=str, keep_default_na=False)


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


def tidy_paper(paper: pd.DataFrame) -> list[dict]:
    """The csv's rows of the paper's numbers, beside ours."""
    return [{"source": "paper", "model": row["paper_model"], "task": row["dataset"],
             "tier": "published", "method": row["method"], "targets": row["targets"],
             "rank": row["rank"], "metric": row["metric"], "value": row["value"],
             "pm": row["pm"], "unit": row["unit"], "paper_table": row["table"],
             "aggregate": row["aggregate"]} for _, row in paper.iterrows()]
