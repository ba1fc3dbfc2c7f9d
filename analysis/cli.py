"""`lora-repro analyze ...`: Section 7 of the paper on our runs, adapter folders or checkpoints.

    analyze similarity RUN_A RUN_B [--layers 0 5] [--targets q v] [--figure STEM]
    analyze amplification RUN_R4 RUN_R64 [--layer L] [--target q] [--base MODEL_OR_DIR]
    analyze figures {fig3,fig4,fig6,fig7,fig8} ADAPTER... [--layer L | --layers ...]
    analyze figures all [--runs-dir results/runs]
    analyze tables {table_rank,table_targets,table_glue,table_e2e,subspace,all} [--tier quick]
    analyze report [--out results/REPORT.md]
    analyze intruders RUN... [--k 10] [--eps 0.5] [--base MODEL] [--figure PATH]
    analyze spectrum RUN... [--energy 0.9] [--base MODEL] [--figure PATH]
    analyze forgetting RUN... [--against cola] [--rows 256]
    analyze grid [--runs-dir results/runs/lr_grid] [--csv PATH]

Adapters are run directories, adapter.safetensors files, PEFT adapter folders or loralib state
dicts (the latter need --alpha for dW; similarity does not depend on alpha). Layers count from 0.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

from analysis import figures as figs
from analysis.amplification import amplification, chance_level
from analysis.inputs import (
    TARGETS,
    Adapter,
    AnalysisError,
    base_weight,
    check_pair,
    check_selection,
    default_layers,
    discover_runs,
    load_adapter,
    middle_layer,
)
from analysis.subspace import (
    USES,
    expected_random_phi,
    grassmann_distance,
    orthonormal_basis,
    random_baseline,
)
from analysis.tables.formats import markdown, write
from analysis.tables.table7_amplification import CHANCE_DRAWS, our_row, table7
from lora_repro.hparams import TIERS

FIGURES_DIR = Path("results/figures")
TABLES_DIR = Path("results/tables")
FIGURE_KINDS = ("fig3", "fig4", "fig6", "fig7", "fig8", "all")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (AnalysisError, ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-repro analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("similarity", help="phi(i, j) between two adapters' factors (Eq. 4)")
    s.add_argument("first", help="adapter: run dir, adapter file, PEFT folder or loralib .bin")
    s.add_argument("second", nargs="?", help="second adapter (default: the first)")
    s.add_argument("--alpha", type=float, help="alpha of loralib state dicts (scaling only)")
    s.add_argument("--layers", type=int, nargs="+", help="layers, from 0 (default: all)")
    s.add_argument("--targets", nargs="+", help=f"of {', '.join(TARGETS)} (default: adapted)")
    s.add_argument("--against-target", choices=TARGETS,
                   help="compare each target of the first with this target of the second")
    s.add_argument("--use", choices=USES, default="right",
                   help="right: A's right singular vectors; left: B's left ones (footnote)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random Gaussian baseline")
    s.add_argument("--csv", type=Path, help="also write the summary here")
    s.add_argument("--figure", type=Path, help="also draw the grids: STEM.png and STEM.pdf")
    s.set_defaults(run=run_similarity)

    a = sub.add_parser("amplification", help="Table 7: ||U^T W V^T||_F and the amplification")
    a.add_argument("adapters", nargs="+", help="one adapter per rank (e.g. r=4 and r=64 runs)")
    a.add_argument("--layer", type=int, help="from 0 (default: the middle, as the paper's 48/96)")
    a.add_argument("--target", default="q", help="default q (the paper's Wq)")
    a.add_argument("--base", help="base model name or folder (default: the one recorded)")
    a.add_argument("--alpha", type=float, help="alpha of loralib state dicts")
    a.add_argument("--seed", type=int, default=0, help="seed of the random matrix")
    a.add_argument("--out-dir", type=Path, default=TABLES_DIR)
    a.set_defaults(run=run_amplification)

    f = sub.add_parser("figures", help="the paper's Figs. 3, 4, 6, 7, 8 (PNG and PDF)")
    f.add_argument("kind", choices=FIGURE_KINDS)
    f.add_argument("adapters", nargs="*", help="fig3/6: two ranks; fig4/7: two seeds; fig8: r's")
    f.add_argument("--layer", type=int, help="fig3/4/8 layer, from 0 (default: the middle)")
    f.add_argument("--layers", type=int, nargs="+", help="fig6/7 (default: first/quarter/mid/last)")
    f.add_argument("--targets", nargs="+", default=["q", "v"], help="fig3/4/6/7 (default q v)")
    f.add_argument("--target", default="q", help="fig8 target (default q)")
    f.add_argument("--use", choices=USES, default="right")
    f.add_argument("--alpha", type=float, help="alpha of loralib state dicts")
    f.add_argument("--base", help="fig8/all: base model name or folder (default: recorded)")
    f.add_argument("--w-directions", type=int, help="fig8: W's top directions (default 10%%)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random baselines")
    f.add_argument("--runs-dir", type=Path, default=Path("results/runs"), help="for `all`")
    f.add_argument("--out-dir", type=Path, default=FIGURES_DIR)
    f.add_argument("--tables-dir", type=Path, default=TABLES_DIR, help="`all`: Table 7 here")
    f.set_defaults(run=run_figures)

    t = sub.add_parser("tables", help="the paper's tables beside ours, from the run records")
    t.add_argument("experiment", help="table_rank, table_targets, table_glue, table_e2e, "
                                      "subspace (Table 7) or all")
    t.add_argument("--runs-dir", type=Path, default=Path("results/runs"))
    t.add_argument("--out-dir", type=Path, default=TABLES_DIR)
    t.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    t.add_argument("--tier", help=f"{' or '.join(TIERS)} (default: every tier, each row labelled)")
    t.set_defaults(run=run_tables)

    r = sub.add_parser("report", help="results/REPORT.md: every table, figure and claim")
    r.add_argument("--out", type=Path, default=Path("results/REPORT.md"))
    r.add_argument("--runs-dir", type=Path, default=Path("results/runs"))
    r.add_argument("--tables-dir", type=Path, default=TABLES_DIR)
    r.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    r.add_argument("--bench-dir", type=Path, default=Path("results/bench"),
                   help="scripts/bench_lora.py --json output(s), for the latency claim")
    r.add_argument("--tier", help=f"tables of one tier only: {' or '.join(TIERS)} (default: every "
                                  "tier; claims always show each tier apart)")
    r.set_defaults(run=run_report)

    i = sub.add_parser("intruders", help="intruder dimensions of W1 vs W0 (Shuttleworth et al.)")
    i.add_argument("runs", nargs="+", type=Path, help="run folders: LoRA runs and full-FT runs")
    i.add_argument("--k", type=int, default=10, help="top-k singular vectors of W1 (default 10)")
    i.add_argument("--eps", type=float, default=0.5, help="|cosine| threshold (default 0.5)")
    i.add_argument("--base", help="pretrained model name or folder (default: the one recorded)")
    i.add_argument("--figure", type=Path, help="PNG path (default results/figures/intruders_*)")
    i.set_defaults(run=run_followup, module="intruders")

    sp = sub.add_parser("spectrum", help="singular values and effective rank of ΔW (Biderman et al.)")
    sp.add_argument("runs", nargs="+", type=Path, help="run folders: LoRA runs and full-FT runs")
    sp.add_argument("--energy", type=float, default=0.9, help="share of ||ΔW||_F^2 (default 0.9)")
    sp.add_argument("--base", help="pretrained model name or folder (default: the one recorded)")
    sp.add_argument("--figure", type=Path, help="PNG path (default results/figures/spectrum_*)")
    sp.set_defaults(run=run_followup, module="spectrum")

    fo = sub.add_parser("forgetting", help="held-out behaviour before vs after fine-tuning")
    fo.add_argument("runs", nargs="+", type=Path, help="finished run folders (GLUE or NLG)")
    fo.add_argument("--against", help="held-out data set (default: CoLA's dev sentences for GLUE, "
                                      "SST-2's for CoLA; the other NLG data set for a causal LM)")
    fo.add_argument("--rows", type=int, default=256, help="held-out texts (default 256)")
    fo.set_defaults(run=run_forgetting)

    g = sub.add_parser("grid", help="the learning-rate grid (experiment=lr_grid): the choice")
    g.add_argument("--runs-dir", type=Path, default=Path("results/runs/lr_grid"))
    g.add_argument("--csv", type=Path, help="also write the table here")
    g.set_defaults(run=run_grid)
    return p


# -- similarity ----------------------------------------------------------------------------------

def run_similarity(args) -> int:
    # phi depends on the factors' subspaces only, never on alpha / r: any alpha reads a loralib file
    alpha = args.alpha if args.alpha is not None else 1.0
    first = load_adapter(args.first, alpha=alpha)
    second = load_adapter(args.second, alpha=alpha) if args.second else first
    targets = args.targets
    if args.against_target and not targets:
        targets = [t for t in first.targets if t != args.against_target] or None
    layers, targets = check_selection(first, args.layers, targets)
    if args.against_target:
        check_selection(second, layers, [args.against_target])
        second = _relabel_target(second, args.against_target, targets)
    check_pair(first, second, [(layer, t) for layer in layers for t in targets])
    if second is first:
        print("note: one adapter against itself gives phi = 1 everywhere (a sanity check); give a "
              "second adapter or --against-target for a comparison")
    summary = similarity_summary(first, second, layers, targets, args.use, args.seed)
    print(f"phi(i, j) of {first.describe()}  vs  {second.describe()}  ({args.use} singular vectors)")
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.figure:
        rows = layers if args.layers else default_layers(first.n_layers)
        rows = [layer for layer in rows if layer in layers]
        paths = figs.pair_comparison(first, second, rows, targets, args.use, args.seed,
                                     args.figure)
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def _relabel_target(adapter: Adapter, source: str, as_targets) -> Adapter:
    """The adapter's `source` factors under the names of `as_targets`, to compare across targets."""
    factors = {(layer, t): adapter.factors[(layer, source)]
               for layer in adapter.layers if (layer, source) in adapter.factors for t in as_targets}
    return Adapter(adapter.path, factors, {**adapter.labels, "shown_target": source})


def similarity_summary(first, second, layers, targets, use="right", seed=0) -> pd.DataFrame:
    """One row per (layer, target): phi at the corners and on average, the Grassmann distance of
    the smaller full subspace, and the random-Gaussian baseline's mean beside its expectation."""
    keys = [(layer, t) for layer in layers for t in targets]
    grids = figs.grids(first, second, keys, use)
    rows = []
    for layer, target in keys:
        A1, A2 = (figs.factor(a, layer, target, use) for a in (first, second))
        grid = grids[(layer, target)]
        r1, r2 = grid.shape
        p = min(r1, r2)
        U1, U2 = orthonormal_basis(A1, use, p), orthonormal_basis(A2, use, p)
        dim = A1.shape[1] if use == "right" else A1.shape[0]
        random_grid = random_baseline(A1.shape, A2.shape, seed=seed + layer, use=use)
        rows.append({
            "layer": layer, "target": target, "r1": r1, "r2": r2,
            "phi(1,1)": float(grid[0, 0]), f"phi({p},{p})": float(grid[p - 1, p - 1]),
            "phi mean": float(grid.mean()), "grassmann d": grassmann_distance(U1, U2),
            "random mean": float(random_grid.mean()),
            "E[random]": float(expected_random_phi(r1, r2, dim).mean()),
        })
    return pd.DataFrame(rows)


# -- amplification -------------------------------------------------------------------------------

def run_amplification(args) -> int:
    adapters = [load_adapter(path, alpha=args.alpha) for path in args.adapters]
    table = write(table7(_table7_rows(adapters, args)), args.out_dir)
    print(markdown(table))
    print("wrote " + ", ".join(map(str, table.paths)))
    return 0


def _table7_rows(adapters: list[Adapter], args) -> list[dict]:
    """Our Table 7 rows: one per adapter, at --layer (default the middle) and --target."""
    rows = []
    for adapter in adapters:
        layer = middle_layer(adapter.n_layers) if args.layer is None else args.layer
        check_selection(adapter, [layer], [args.target])
        W = base_weight(adapter, layer, args.target, args.base)
        rank = adapter.rank(layer, args.target)
        delta = adapter.delta(layer, args.target)
        result = amplification(W, delta, rank, seed=args.seed) | chance_level(
            W, delta, rank, CHANCE_DRAWS, seed=args.seed)
        labels = {**adapter.labels, "reference": str(adapter.path)}
        rows.append(our_row(result, labels, layer, adapter.n_layers, args.target, rank))
    return rows


# -- figures -------------------------------------------------------------------------------------

def run_figures(args) -> int:
    if args.kind == "all":
        return figures_all(args)
    adapters = [load_adapter(path, alpha=args.alpha) for path in args.adapters]
    wanted = {"fig3": 2, "fig6": 2, "fig4": 2, "fig7": 2}.get(args.kind)
    if (wanted and len(adapters) != wanted) or not adapters:
        what = {"fig3": "two ranks", "fig6": "two ranks", "fig4": "two seeds",
                "fig7": "two seeds", "fig8": "one or more ranks"}[args.kind]
        raise AnalysisError(f"{args.kind} needs {what}: got {len(adapters)} adapter(s)")
    paths = draw_figure(args.kind, adapters, args)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def draw_figure(kind: str, adapters: list[Adapter], args, stem: Path | None = None) -> list[Path]:
    first = adapters[0]
    stem = stem or args.out_dir / f"{kind}_{_slug(first)}"
    if kind in ("fig3", "fig4", "fig8"):
        layer = middle_layer(first.n_layers) if args.layer is None else args.layer
        layers = [layer]
    else:
        layers = args.layers or default_layers(first.n_layers)
    if kind == "fig8":
        return _fig8(adapters, layers[0], args, stem)
    layers, targets = check_selection(first, layers, args.targets)
    keys = [(layer, t) for layer in layers for t in targets]
    if kind in ("fig3", "fig6"):
        low, high = sorted(adapters, key=lambda a: a.ranks()[-1])
        check_pair(low, high, keys)
        name = "Fig. 3" if kind == "fig3" else "Fig. 6"
        return figs.rank_comparison(low, high, layers, targets, args.use, stem, name)
    check_pair(adapters[0], adapters[1], keys, same_rank=True)
    name = "Fig. 4" if kind == "fig4" else "Fig. 7"
    return figs.seed_comparison(adapters[0], adapters[1], layers, targets, args.use, args.seed,
                                stem, name)


def _fig8(adapters: list[Adapter], layer: int, args, stem: Path) -> list[Path]:
    for adapter in adapters:
        check_selection(adapter, [layer], [args.target])
        check_pair(adapters[0], adapter, [(layer, args.target)])
    adapters = sorted(adapters, key=lambda a: a.rank(layer, args.target))
    W = base_weight(adapters[0], layer, args.target, args.base)
    r_max = adapters[-1].rank(layer, args.target)
    n_top = args.w_directions or max(r_max, math.ceil(0.1 * min(W.shape)))
    if not 1 <= n_top <= min(W.shape):
        raise AnalysisError(f"--w-directions {n_top}: valid values are 1..{min(W.shape)}")
    deltas = [(adapter, adapter.delta(layer, args.target)) for adapter in adapters]
    return figs.weight_vs_delta_figure(W, deltas, layer, args.target, n_top, args.use,
                                       args.seed, stem)


def _slug(adapter: Adapter) -> str:
    parts = [adapter.labels.get(k) or "" for k in ("model", "task", "tier")]
    parts[0] = Path(str(parts[0])).name  # a local model folder: its name
    text = "_".join(str(p) for p in parts if p) or adapter.path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def figures_all(args) -> int:
    """Every figure (and Table 7) that the finished runs under --runs-dir allow, per
    (model, task, tier): Figs. 3/6 from two ranks, 4/7 from two seeds at one rank, 8 and Table 7
    from the ranks with the base model's W, and the ΔW spectrum of every rank."""
    runs = discover_runs(args.runs_dir)
    if not runs:
        raise AnalysisError(f"no finished LoRA runs (record.json status done + adapter.safetensors)"
                            f" under {args.runs_dir}: run the Section 7 experiment first")
    groups = defaultdict(list)
    for run in runs:
        adapter = load_adapter(run)
        if len(adapter.ranks()) == 1:
            groups[_slug(adapter)].append(adapter)
    written, rows = [], []
    for slug, adapters in groups.items():
        by_rank = defaultdict(list)
        for adapter in sorted(adapters, key=lambda a: str(a.labels.get("seed"))):
            by_rank[adapter.ranks()[0]].append(adapter)
        ranks = sorted(by_rank)
        if len(ranks) >= 2:
            low = by_rank[8][0] if 8 in by_rank else by_rank[ranks[0]][0]
            high = by_rank[64][0] if 64 in by_rank else by_rank[ranks[-1]][0]
            for kind in ("fig3", "fig6"):
                written += draw_figure(kind, [low, high], args, args.out_dir / f"{kind}_{slug}")
        seeded = [r for r in ranks if len(by_rank[r]) >= 2]
        if seeded:
            pair = by_rank[seeded[-1]][:2]
            for kind in ("fig4", "fig7"):
                written += draw_figure(kind, pair, args, args.out_dir / f"{kind}_{slug}")
        one_per_rank = [by_rank[r][0] for r in ranks]
        written.append(rank_spectra_figure(one_per_rank, args.out_dir / f"spectrum_ranks_{slug}"))
        if args.target in one_per_rank[0].targets:
            try:
                written += draw_figure("fig8", one_per_rank, args, args.out_dir / f"fig8_{slug}")
                rows += _table7_rows(one_per_rank, args)
            except AnalysisError as err:
                print(f"skipped Fig. 8 and Table 7 for {slug}: {err}")
    for path in written:
        print(f"wrote {path}")
    if rows:
        for path in write(table7(rows), args.tables_dir).paths:
            print(f"wrote {path}")
    return 0


def rank_spectra_figure(adapters: list[Adapter], stem: Path) -> Path:
    """The singular values of ΔW (normalised by the largest, median over layers) per target,
    one line per rank: how much of its rank each adapter uses."""
    from analysis.spectrum import delta_spectra, spectrum_figure

    results = {adapter.describe(): delta_spectra({key: adapter.delta(*key) for key in adapter.factors})
               for adapter in adapters}
    labels = adapters[0].labels
    where = " ".join(str(labels.get(k) or "?") for k in ("model", "task"))
    return spectrum_figure(results, stem, f"Singular values of ΔW per rank — {where} "
                                          f"[{labels.get('tier') or 'tier ?'}]")


# -- follow-ups: intruder dimensions, ΔW spectrum -----------------------------------------------

def run_followup(args) -> int:
    if args.module == "intruders":
        from analysis.intruders import analyze

        table, path = analyze(args.runs, args.k, args.eps, args.base, args.figure, FIGURES_DIR)
        print(f"intruder dimensions (top {args.k} of W1, |cos| < {args.eps}) per layer:")
    else:
        from analysis.spectrum import analyze

        table, path = analyze(args.runs, args.energy, args.base, args.figure, FIGURES_DIR)
        print(f"effective rank of ΔW ({args.energy:.0%} of its spectral energy) per layer:")
    print(table.to_string())
    print(f"wrote {path}")
    return 0


def run_forgetting(args) -> int:
    from analysis.forgetting import FORGETTING_FILE, analyze

    for run_dir in args.runs:
        result = analyze(run_dir, args.against, args.rows)
        print(f"{run_dir}: {result['method']} on {result['task']}, {result['measure']} on "
              f"{result['held_out']['rows']} {result['held_out']['task']} texts: before "
              f"{result['before']:.4f}, after {result['after']:.4f} (change {result['change']:+.4f})"
              f"; wrote {Path(run_dir) / FORGETTING_FILE}")
    return 0


def run_grid(args) -> int:
    from analysis.grid import summarise

    table = summarise(args.runs_dir, args.csv)
    print(table.drop(columns=["run_id"]).to_string(index=False))
    return 0


# -- tables and report ---------------------------------------------------------------------------

def run_tables(args) -> int:
    from analysis.tables import render

    for table in render(args.experiment, args.runs_dir, args.out_dir, args.figures_dir, args.tier):
        print(f"{table.name}: wrote " + ", ".join(map(str, table.paths + table.figures)))
        for note in table.notes:
            if note.startswith("skipped"):
                print(f"  {note}")
    return 0


def run_report(args) -> int:
    from analysis.report import build_report

    path = build_report(args.runs_dir, args.out, args.tables_dir, args.figures_dir,
                        args.bench_dir, args.tier)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
