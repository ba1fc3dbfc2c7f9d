"""Table 7: the paper's amplification numbers (GPT-3 175B, layer 48, Wq) beside ours, as
results/tables/table7_amplification.{md,tex,csv}. Every row says what produced it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "results" / "paper" / "table7_amplification.csv"
LABELS = ["source", "model", "task", "layer", "target", "rank", "tier"]
NUMBERS = ["proj_delta", "proj_W", "proj_random", "norm_W", "norm_delta", "factor"]
HEADERS = {
    "source": "source", "model": "model", "task": "task", "layer": "layer (from 1)",
    "target": "W", "rank": "r", "tier": "tier",
    "proj_delta": "‖UᵀWVᵀ‖_F, U,V of ΔW", "proj_W": "U,V of W", "proj_random": "U,V random",
    "norm_W": "‖W‖_F", "norm_delta": "‖ΔW‖_F", "factor": "‖ΔW‖_F / ‖UᵀWVᵀ‖_F",
}
LATEX_HEADERS = {
    **HEADERS,
    "proj_delta": r"$\|U^\top W V^\top\|_F$, $U,V$ of $\Delta W$", "proj_W": r"$U,V$ of $W$",
    "proj_random": r"$U,V$ random", "norm_W": r"$\|W\|_F$", "norm_delta": r"$\|\Delta W\|_F$",
    "factor": r"$\|\Delta W\|_F / \|U^\top W V^\top\|_F$",
}
CAPTION = (
    "Table 7: Frobenius norm of U^T W V^T where U, V are the top-r left/right singular vectors "
    "of dW, of W, or of a random Gaussian matrix, with ||W||_F, ||dW||_F and the amplification "
    "factor. Paper rows: GPT-3 175B, layer 48 (arXiv:2106.09685). Our rows: the model, task, "
    "layer and tier named in each row."
)


def paper_rows() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV, dtype={"layer": str})


def our_row(result: dict, labels: dict, layer: int, n_layers: int, target: str, rank: int) -> dict:
    """One Table 7 row from analysis.amplification.amplification() and the adapter's labels."""
    return {
        "source": "ours", "model": labels.get("model") or "?", "task": labels.get("task") or "?",
        "layer": f"{layer + 1} of {n_layers}", "target": target, "rank": rank,
        "tier": labels.get("tier") or "?", **{key: result[key] for key in NUMBERS},
        "reference": labels.get("reference", ""),
    }


def build_table(ours: list[dict]) -> pd.DataFrame:
    """The paper's rows first, then ours, in one frame with the paper CSV's columns."""
    table = paper_rows()
    return pd.concat([table, pd.DataFrame(ours, columns=table.columns)], ignore_index=True)


def _number(value) -> str:
    return "" if pd.isna(value) else f"{float(value):.4g}"


def _cells(table: pd.DataFrame) -> list[list[str]]:
    return [
        [str(row[c]) for c in LABELS] + [_number(row[c]) for c in NUMBERS]
        for _, row in table.iterrows()
    ]


def to_markdown(table: pd.DataFrame) -> str:
    header = [HEADERS[c] for c in LABELS + NUMBERS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table)]
    return "\n".join(lines) + "\n\n" + CAPTION + "\n"


def _tex_escape(text: str) -> str:
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def to_latex(table: pd.DataFrame) -> str:
    columns = LABELS + NUMBERS
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * len(LABELS) + "r" * len(NUMBERS) + "}", r"\toprule",
        " & ".join(LATEX_HEADERS[c] if c in NUMBERS else _tex_escape(HEADERS[c])
                   for c in columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(_tex_escape, cells)) + r" \\" for cells in _cells(table)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex_escape(CAPTION) + "}",
              r"\label{tab:table7-amplification}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, out_dir="results/tables") -> list[Path]:
    """table7_amplification.{md,tex,csv} under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / "table7_amplification"
    paths = [stem.with_suffix(ext) for ext in (".md", ".tex", ".csv")]
    paths[0].write_text(to_markdown(table))
    paths[1].write_text(to_latex(table))
    table.to_csv(paths[2], index=False)
    return paths
