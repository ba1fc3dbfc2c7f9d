"""The one renderer of every table: markdown, LaTeX and CSV files from a Table, and the one helper
that saves the tables' plots. Builders (table2_glue.py, ...) make Tables; nothing else writes one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MISSING = "—"


@dataclass
class Table:
    name: str  # file stem: table6_rank
    experiment: str
    title: str
    frame: pd.DataFrame  # the cells as printed, all strings
    tidy: pd.DataFrame  # the numbers behind them (ours and the paper's): the csv
    notes: list[str]
    latex_headers: dict[str, str] = field(default_factory=dict)  # column -> LaTeX, for math
    align: str | None = None  # LaTeX column spec; default: every column left-aligned
    figures: list[Path] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def markdown_table(frame: pd.DataFrame) -> str:
    def escape(text) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(map(escape, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown(table: Table) -> str:
    return (f"**{table.title}**\n\n" + markdown_table(table.frame) + "\n"
            + "".join(f"- {note}\n" for note in table.notes))


def tex(text) -> str:
    text = str(text).replace("\\", r"\textbackslash{}")
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    for char, math in (("±", r"$\pm$"), ("†", r"$\dagger$"), ("√r", r"$\sqrt{r}$"),
                       ("α", r"$\alpha$"), ("φ", r"$\phi$")):
        text = text.replace(char, math)
    return text.replace("—", "---")


def latex(table: Table) -> str:
    columns = table.frame.columns
    headers = [table.latex_headers.get(c) or tex(c) for c in columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + (table.align or "l" * len(columns)) + "}", r"\toprule",
             " & ".join(headers) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\"
              for row in table.frame.itertuples(index=False)]
    caption = table.title + ". " + " ".join(table.notes)
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + tex(caption) + "}",
              r"\label{tab:" + table.name.replace("_", "-") + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write(table: Table, out_dir) -> Table:
    """<out_dir>/<name>.md, .tex, .csv; their paths in table.paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / table.name
    table.paths = [stem.with_suffix(ext) for ext in (".md", ".tex", ".csv")]
    table.paths[0].write_text(markdown(table))
    table.paths[1].write_text(latex(table))
    table.tidy.to_csv(table.paths[2], index=False)
    return table


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
