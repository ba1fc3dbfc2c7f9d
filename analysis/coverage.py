"""What regenerates: each table and figure, the command that makes it, and at each tier how many of
the runs that command's sweep needs are done (the sweep expanded exactly as `make table-*` does,
each job's record looked up, runs reused across experiments counted as done).

    python -c "from analysis.coverage import coverage_section; print(coverage_section())"

A table regenerates in full at the quick tier when every run of its sweep is done; partly when
some are (its cells without runs show —). The paper tier is not counted (hundreds of jobs, each
composed by Hydra in ~0.2 s): none of it runs here, as it needs the paper's pretrained models from
the hub and a GPU cluster (`TIER=paper LAUNCHER=slurm`; `lora-repro plan ... tier=paper` lists it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Artefact:
    name: str
    command: str
    experiment: str | None = None     # its sweep (None: not a sweep of runs)
    extra: list[str] = field(default_factory=list)  # the command's overrides beyond the experiment
    note: str = ""                    # for an artefact that is not a sweep: what it needs


ARTEFACTS = [
    Artefact("Table 2 (GLUE)", "make table-glue", "table_glue"),
    Artefact("Table 3 and 14 (E2E, WebNLG)", "make table-e2e", "table_e2e"),
    Artefact("Table 5 (which weights)", "make table-targets", "table_targets"),
    Artefact("Table 6 (rank)", "make table-rank", "table_rank"),
    Artefact("Table 6, rsLoRA rows", 'make table-rank EXTRA="method.scaling=rslora method.targets=[q,v]"',
             "table_rank", ["method.scaling=rslora", "method.targets=[q,v]"]),
    Artefact("Table 7, Figures 3, 4, 6, 7, 8", "make table-amplification", "subspace"),
    Artefact("Table 1, Figure 5 (latency)", "make table-latency",
             note="no runs: a benchmark (CPU: reduced settings; LATENCY_ARGS=--device cuda: the paper's)"),
    Artefact("Follow-up figures (intruders, ΔW spectrum), forgetting", "make report",
             note="Table 2's LoRA and full-FT runs that kept their weights; forgetting: "
                  "`lora-repro analyze forgetting RUN`"),
]
PAPER_TIER = ("not run here: the paper's models (hub) and GPUs; `{command} TIER=paper "
              "LAUNCHER=slurm` on a cluster")


def sweep_status(experiment: str, tier: str, extra: list[str], runs_root: str) -> tuple[int, int]:
    """(done, total) runs of the experiment's sweep at this tier; (0, 0) if it has no such tier."""
    from lora_repro import plan

    overrides = [f"experiment={experiment}", f"tier={tier}", f"run_root={runs_root}", *extra]
    try:
        jobs = plan.jobs(overrides)
    except ValueError:  # the experiment has no sweep for this tier
        return 0, 0
    return sum(plan.status_of(job) == "done" for job in jobs), len(jobs)


def status_text(done: int, total: int) -> str:
    if total == 0:
        return "no sweep at this tier"
    if done == total:
        return f"regenerates: all {total} runs done"
    if done == 0:
        return f"not run: 0 of {total} runs"
    return f"partly: {done} of {total} runs done"


def coverage_frame(runs_root: str = "results/runs") -> pd.DataFrame:
    rows = []
    for artefact in ARTEFACTS:
        row = {"table / figure": artefact.name, "command": f"`{artefact.command}`"}
        if artefact.experiment is None:
            row["quick tier"] = row["paper tier"] = artefact.note
        else:
            row["quick tier"] = status_text(*sweep_status(artefact.experiment, "quick", artefact.extra,
                                                          runs_root))
            row["paper tier"] = PAPER_TIER.format(command=artefact.command.split(" EXTRA")[0])
        rows.append(row)
    return pd.DataFrame(rows)


def coverage_section(runs_root: str = "results/runs") -> str:
    frame = coverage_frame(runs_root)
    return (frame.to_markdown(index=False) + "\n\nCounts come from the sweep each command runs "
            "(`lora-repro plan experiment=... tier=quick` lists its jobs and their status); a table "
            "renders whatever runs are done, its missing cells shown as —.\n")
