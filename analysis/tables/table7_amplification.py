"""Table 7: ||U^T W V^T||_F and the amplification factor, the paper's rows (GPT-3 175B, layer 48,
Wq) beside ours (a row per rank of the `subspace` runs: r = 1, 2, 4, 8, 64 in the quick tier),
each with the chance level of a random matrix of dW's norm, as
results/tables/table7_amplification.{md,tex,csv}. Every row says what produced it. Ours come from
the `subspace` runs (`tables subspace`) or from adapters named on the command line (`analyze
amplification`, `figures all`)."""
from __future__ import annotations

import math

import pandas as pd

from analysis.tables.formats import Table
from analysis.tables.ours import runs_frame, tier_note
from analysis.tables.paper import PAPER_DIR

LABELS = ["source", "model", "task", "layer", "target", "rank", "tier"]
NUMBERS = ["proj_delta", "proj_W", "proj_random", "norm_W", "norm_delta", "factor", "chance_proj",
           "chance_factor"]
CHANCE_DRAWS = 8  # random matrices averaged for the chance level
HEADERS = {
    "source": "source", "model": "model", "task": "task", "layer": "layer (from 1)",
    "target": "W", "rank": "r", "tier": "tier",
    "proj_delta": "‖UᵀWVᵀ‖_F, U,V of ΔW", "proj_W": "U,V of W", "proj_random": "U,V random",
    "norm_W": "‖W‖_F", "norm_delta": "‖ΔW‖_F", "factor": "‖ΔW‖_F / ‖UᵀWVᵀ‖_F",
    "chance_proj": "chance: U,V of random R", "chance_factor": "chance: ‖R‖_F / ‖UᵀWVᵀ‖_F",
}
LATEX_HEADERS = {
    "proj_delta": r"$\|U^\top W V^\top\|_F$, $U,V$ of $\Delta W$", "proj_W": r"$U,V$ of $W$",
    "proj_random": r"$U,V$ random", "norm_W": r"$\|W\|_F$", "norm_delta": r"$\|\Delta W\|_F$",
    "factor": r"$\|\Delta W\|_F / \|U^\top W V^\top\|_F$",
    "chance_proj": r"chance: $U,V$ of random $R$",
    "chance_factor": r"chance: $\|R\|_F / \|U^\top W V^\top\|_F$",
}
TITLE = "Table 7: ||U^T W V^T||_F and the amplification factor — ours beside GPT-3 175B"
CAPTION = (
    "Frobenius norm of U^T W V^T where U, V are the top-r left/right singular vectors of dW, of "
    "W, or of a random Gaussian matrix, with ||W||_F, ||dW||_F and the amplification factor. "
    "Paper rows: GPT-3 175B, layer 48 (arXiv:2106.09685). Our rows: the model, task, layer and "
    "tier named in each row. Chance (ours): R a Gaussian matrix of dW's shape scaled to "
    f"||R||_F = ||dW||_F, U, V its top-r singular vectors, the projection and the factor computed "
    f"the same way, averaged over {CHANCE_DRAWS} draws: an amplification factor near the chance "
    "factor says dW relates to W no more than a random matrix of its size does."
)


def paper_rows() -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / "table7_amplification.csv", dtype={"layer": str})


def our_row(result: dict, labels: dict, layer: int, n_layers: int, target: str, rank: int) -> dict:
    """One Table 7 row from analysis.amplification.amplification() and the adapter's labels."""
    return {
        "source": "ours", "model": labels.get("model") or "?", "task": labels.get("task") or "?",
        "layer": f"{layer + 1} of {n_layers}", "target": target, "rank": rank,
        "tier": labels.get("tier") or "?", **{key: result.get(key, math.nan) for key in NUMBERS},
        "reference": labels.get("reference", ""),
    }


def _number(value) -> str:
    return "" if pd.isna(value) else f"{float(value):.4g}"


def table7(ours: list[dict], notes: list[str] = ()) -> Table:
    """The paper's rows first, then ours; the csv keeps the paper CSV's columns, full precision."""
    paper = paper_rows()
    columns = list(paper.columns) + [c for c in NUMBERS if c not in paper.columns]
    tidy = pd.concat([paper, pd.DataFrame(ours, columns=columns)], ignore_index=True)
    shown = pd.DataFrame({HEADERS[c]: tidy[c].astype(str) for c in LABELS}
                         | {HEADERS[c]: tidy[c].map(_number) for c in NUMBERS})
    return Table("table7_amplification", "subspace", TITLE, shown, tidy, [CAPTION, *notes],
                 latex_headers={HEADERS[c]: tex for c, tex in LATEX_HEADERS.items()},
                 align="l" * len(LABELS) + "r" * len(NUMBERS))


def amplification_rows(runs_dir, tier=None, target: str = "q") -> tuple[list[dict], list[str]]:
    """Table 7 rows of ours: per (model, task, tier) of the subspace runs, each rank's lowest
    seed, at the middle layer (the paper's 48 of 96) and `target`. Also the skip messages."""
    from analysis.amplification import amplification, chance_level
    from analysis.inputs import base_weight, load_adapter, middle_layer

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
            delta, rank_ = adapter.delta(layer, target), adapter.rank(layer, target)
            result = amplification(W, delta, rank_) | chance_level(W, delta, rank_, CHANCE_DRAWS)
        except (ValueError, KeyError, FileNotFoundError) as err:  # AnalysisError; no adapter file
            skipped.append(f"{model} {task} [{tier_}] r={rank}: {err}")
            continue
        labels = {**adapter.labels, "reference": run["run_dir"]}
        rows.append(our_row(result, labels, layer, adapter.n_layers, target, rank))
    return rows, skipped


def amplification_table(runs_dir, tier=None, figures_dir=None) -> Table:
    """Table 7 from the `subspace` runs: the paper's rows, then ours."""
    ours, skipped = amplification_rows(runs_dir, tier)
    notes = [tier_note(runs_frame(runs_dir, "subspace", tier), "subspace")]
    return table7(ours, notes + [f"skipped {s}" for s in skipped])
