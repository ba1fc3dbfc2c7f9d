"""The paper's tables with ours beside them, built from run records only.

    python -m analysis.cli tables all                       # every table and sweep plot
    python -m analysis.cli tables table_rank --tier quick   # one experiment, one tier

Writes results/tables/<name>.{md,tex,csv} and, for the sweeps, results/figures/<name>.png. One
builder per paper table, one renderer (formats.py) for every file:

    table_glue    -> table2_glue.py           GLUE, ours beside RoBERTa / DeBERTa (paper Table 2)
    table_e2e     -> table3_nlg.py            E2E, WebNLG, DART beside GPT-2 M/L (Tables 3, 13, 14, 18)
    table_targets -> table5_targets.py        which weights to adapt at one budget (Table 5, GPT-3)
    table_rank    -> table6_rank.py           accuracy vs rank per target set (Table 6, GPT-3 175B),
                                              rsLoRA rows beside, the head-only control
    subspace      -> table7_amplification.py  ||U^T W V^T||_F vs ||dW||_F (Table 7), chance level

Ours: mean ± sample std (n - 1) over the seeds of each cell, with n; for GLUE also the median, as
the paper reports the median of 5 seeds there. Records hold fractions (0.843); cells show them as
the paper prints them: x100 with one decimal (BLEU, METEOR, ROUGE-L too); NIST and CIDEr on their
own scale. Only finished runs make numbers; a cell without one shows "—" with the count of runs
not done (failed, running, interrupted), and nothing is ever filled in. The paper's numbers come
from results/paper/*.csv, printed as the paper prints them, each row naming the paper's model.
"""
from __future__ import annotations

from analysis.tables.formats import Table, write
from analysis.tables.table2_glue import glue_table
from analysis.tables.table3_nlg import e2e_table
from analysis.tables.table5_targets import targets_table
from analysis.tables.table6_rank import rank_table
from analysis.tables.table7_amplification import amplification_table
from lora_repro.hparams import TIERS

BUILDERS = {
    "table_glue": glue_table,
    "table_e2e": e2e_table,
    "table_targets": targets_table,
    "table_rank": rank_table,
    "subspace": amplification_table,
}
EXPERIMENTS = tuple(BUILDERS)


class TableError(ValueError):
    """Bad input to the tables command; the message names the value and the valid choices."""


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
    if tier is not None and tier not in TIERS:
        raise TableError(f"unknown tier {tier!r}: valid tiers are {', '.join(TIERS)}")
    return [write(BUILDERS[experiment](runs_dir, tier, figures_dir), out_dir)
            for experiment in check_experiment(name)]
