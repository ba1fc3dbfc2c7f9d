"""results/REPORT.md: every table and figure, what produced them, and the paper's claims and their
best-known follow-ups, each with the evidence, our numbers, its rule, the statistic and a verdict.

    python -m analysis.cli report [--out results/REPORT.md]

Tables are re-rendered from the records first (analysis.tables). A claim's verdict is one of
`consistent`, `inconclusive`, `contradicted` or `not run` per setting (model, task, tier) of ours,
by a rule kept in analysis.verdicts (printed in the report with its statistic); `reproduced` only
for a consistent result at the paper tier. The paper's claims are in analysis.claims, the
follow-up claims in analysis.followups. What
produced the numbers (commits, machines, data, copies; records from uncommitted code) comes from
analysis.provenance; the report prints no absolute path.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis import verdicts as v
from analysis.claims import baseline_checks, paper_claims
from analysis.provenance import provenance, shown_path, uncommitted_section, without_absolute_paths
from analysis.tables import render
from analysis.tables.formats import markdown_table
from analysis.verdicts import Claim

SECTION7_FIGURES = ("fig3", "fig4", "fig6", "fig7", "fig8", "spectrum_ranks")


def rules_section() -> str:
    """How verdicts are decided: the statistic and the three rules, as analysis.verdicts has them."""
    return "\n".join([
        "Each claim is `consistent`, `inconclusive` or `contradicted` with our runs, or `not run`, "
        "per setting (model, task, tier) of ours, by a rule kept in code (analysis/verdicts.py) "
        "and printed with its statistic. `reproduced` is kept for a consistent result at the "
        "paper tier; a quick-tier verdict says whether the paper's pattern holds for a small model "
        "on a small task, not whether its numbers reproduce.", "",
        f"- {v.STATISTIC}",
        f"- {v.NON_INFERIOR_1PT.describe()}.",
        f"- {v.EQUIVALENT_1PT.describe()} (kept for strict equivalence; each on-par claim below "
        "reads 'on par or better' and uses the rule above).",
        f"- {v.BEATS.describe()}; the same for 'beats the constant baseline' (the majority class "
        "on every dev example; the mean for a regression).",
        "- A comparison where one of its arms does not beat the constant baseline (the method did "
        "not learn the task) can be neither consistent nor contradicted: inconclusive.", ""])


def baselines_section(checks: pd.DataFrame) -> str:
    if checks.empty:
        return "No finished GLUE runs yet: not run.\n"
    shown = checks.drop(columns=["_key"])
    failing = shown[shown["verdict"] != v.CONSISTENT]
    lines = [f"Every method should beat the constant predictor on every task it reports (issue 13's "
             f"fair protocol); {len(shown) - len(failing)} of {len(shown)} cells clearly do. Rule: "
             f"{v.BEATS.describe(what='cell − constant baseline')}. The constant baseline predicts "
             "the majority dev label for every example (the mean for STS-B); in points.\n",
             markdown_table(shown)]
    if shown["statistic"].str.startswith("no per-example predictions").any():
        lines.append("- 'no per-example predictions': older records kept no predictions.json, so "
                     "their accuracy cannot be set against the dev set's majority rate; Matthews "
                     "and Pearson need none (a constant scores 0) and are tested at seed level.")
    return "\n".join(lines) + "\n"


# -- the report ----------------------------------------------------------------------------------

def claims_summary(found: list[Claim], prefix: str = "") -> str:
    summary = pd.DataFrame([{"#": f"{prefix}{i}", "claim": c.statement, "verdict": c.verdict}
                            for i, c in enumerate(found, 1)])
    return markdown_table(summary)


def claims_details(found: list[Claim], out: Path, prefix: str = "") -> str:
    parts = []
    for i, claim in enumerate(found, 1):
        parts.append(f"### {prefix}{i}. {claim.statement}\n")
        if claim.source:
            parts.append(f"- **Source:** {claim.source}")
        parts += [f"- **{'Evidence' if claim.source else 'Paper'}:** {claim.paper}",
                  f"- **Rule:** {claim.rule}"]
        if not claim.findings:
            parts.append(f"- **Ours:** {claim.absent}. **Verdict: {v.NOT_RUN}.**")
        for f in claim.findings:
            statistic = f" **Statistic:** {f.statistic}." if f.statistic else ""
            parts.append(f"- **Ours ({f.setting}):** {f.ours}.{statistic} **Verdict: {f.verdict}.**")
        parts += [f"\n![{Path(p).stem}]({link(p, out)})" for p in claim.figures]
        parts.append("")
    return "\n".join(parts) + "\n"


def link(path: Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve().parent)).as_posix()


def build_report(runs_dir="results/runs", out="results/REPORT.md", tables_dir="results/tables",
                 figures_dir="results/figures", bench_dir="results/bench", tier=None,
                 coverage: bool = True) -> Path:
    """Re-render every table, evaluate every claim and follow-up, write the report; its path.
    coverage: count the quick tier's sweeps for "What regenerates" (~0.2 s a job)."""
    from analysis.coverage import coverage_section
    from analysis.followups import followup_claims

    out = Path(out)
    rendered = render("all", runs_dir, tables_dir, figures_dir, tier)
    found = paper_claims(runs_dir, bench_dir)
    followups = followup_claims(runs_dir, figures_dir)
    parts = ["# LoRA reproduction report\n",
             "Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models* (arXiv:2106.09685), "
             "reproduced by lora-repro. Everything below is computed from the run records under "
             f"`{shown_path(runs_dir)}` and the paper's numbers stored in `results/paper/`.\n",
             "## Claims at a glance\n", claims_summary(found),
             "\nFollow-up claims (later work, on the same runs):\n", claims_summary(followups, "F"),
             "\nDetails, numbers, statistics and rules: the Claims and Follow-up claims sections.\n",
             "## How verdicts are decided\n", rules_section(),
             "## What regenerates\n", coverage_section(runs_dir) if coverage else
             "Not counted in this report (`coverage=False`).\n",
             "## What produced it\n", provenance(runs_dir),
             "## Records from uncommitted code\n", uncommitted_section(runs_dir)]
    parts.append("## Tables\n")
    for table in rendered:
        if table.name == "table7_amplification":
            continue
        parts.append(f"### {table.name}\n")
        parts.append(table.paths[0].read_text())
        parts += [f"![{figure.stem}]({link(figure, out)})\n" for figure in table.figures]
        files = ", ".join(f"[{p.name}]({link(p, out)})" for p in table.paths)
        parts.append(f"Files: {files}\n")
    parts.append("## Section 7 figures\n")
    figures = sorted(p for p in Path(figures_dir).glob("*.png")
                     if p.name.startswith(SECTION7_FIGURES))
    if figures:
        parts.append("Figs. 3, 4, 6 and 7 show beside the trained factors the control: the same φ "
                     "of the initial A's. spectrum_ranks: ΔW's singular values per rank.\n")
        parts += [f"![{p.stem}]({link(p, out)})\n" for p in figures]
    else:
        parts.append(f"None in `{shown_path(figures_dir)}` yet (`python -m analysis.cli figures all` "
                     "draws them from the finished runs): not run.\n")
    seven = next(t for t in rendered if t.name == "table7_amplification")
    parts += ["## Table 7\n", seven.paths[0].read_text()]
    parts += ["## Protocol check: every method beats the constant baseline\n",
              baselines_section(baseline_checks(runs_dir))]
    parts += ["## Claims\n", claims_details(found, out)]
    parts += ["## Follow-up claims\n", "Later work's claims about LoRA, on our runs, under the "
              "same rules.\n", claims_details(followups, out, "F")]
    parts += ["## The paper's numbers\n", PAPER_NOTES]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(without_absolute_paths("\n".join(parts)))
    return out


PAPER_NOTES = """Stored as data in `results/paper/` (one row per number, with its ±, unit, the
paper's model and dataset, and how the paper aggregated it), each checked against the text of
arXiv:2106.09685 v2:

- `table2_glue.csv`: Table 2, all 14 rows (RoBERTa-base/large, DeBERTa-XXL; FT, BitFit,
  Adapter^D/^P/^H, LoRA), 8 tasks + average. Every printed average equals the mean of its 8 tasks
  (to rounding). Aggregation: median of 5 seeds (Appendix D.1, D.2) for the paper's own runs.
- `table3_e2e.csv`: Table 3, all 12 rows (GPT-2 M/L on E2E); LoRA and the paper's own runs are the
  mean of 3 seeds (Appendix D.3).
- `table13_14_dart_webnlg.csv`: the FT and LoRA rows of Tables 13 (DART) and 14 (WebNLG, U/S/A).
- `table5_targets.csv`, `table6_rank.csv`: Tables 5 and 6, GPT-3 175B on WikiSQL and MultiNLI; the
  ± is the per-dataset typical std the tables print in their first column.
- `table18_e2e_rank.csv`: Table 18, GPT-2 M on E2E, r = 1 ... 1024.
- `table7_amplification.csv`: Table 7 (read by analysis/tables/table7_amplification.py).

Inconsistencies inside the paper, kept as printed: Table 5's {Wq} r=8 MultiNLI is 91.0 while
Table 6's {Wq} r=8 MultiNLI is 90.7; Table 6's {Wq,Wv} r=64 WikiSQL is 73.5 while Table 15 prints
73.6 for the same configuration. What the paper's ± means in Tables 2 and 3 is not defined
beyond "confidence intervals are shown for experiments we ran" (Table 3's caption).
"""
