"""The paper's Section 7 heat maps (Figs. 3, 4, 6, 7, 8) as PNG and PDF.

Every map shows phi(i, j) on a colour scale fixed to [0, 1], i down the rows and j along the
columns (both from 1), under a title that says what produced it. Figs. 3, 4, 6 and 7 show beside
the trained factors the control: the same phi of the initial A's (lora_repro.lora.initial_factors),
i.e. what initialisation alone gives. Matplotlib is used through
Figure objects (Agg canvas), never pyplot, so nothing depends on a display or global state.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.inputs import Adapter
from analysis.subspace import (
    expected_random_phi,
    orthonormal_basis,
    phi_grid,
    random_baseline,
    similarity_grids,
    weight_vs_delta,
)

FACTOR_OF_USE = {"right": "A", "left": "B"}


@dataclass
class Panel:
    grid: torch.Tensor  # (r1, r2) phi values
    title: str
    i_label: str = "i"
    j_label: str = "j"
    triangle: bool = False  # keep only j <= i: the paper's zoom on the lower-left triangle


PANEL_INCHES = (3.3, 3.0)  # one heat map with its labels
MARGIN_INCHES = {"left": 0.8, "right": 1.3, "bottom": 0.6, "title_line": 0.22}


def draw(rows: list[list[Panel]], title: str, out_stem) -> list[Path]:
    """Heat maps in a grid of panels, one shared colour bar on [0, 1]; writes stem.png, stem.pdf.

    Margins are fixed in inches rather than left to constrained layout, which took most of the
    drawing time.
    """
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    width = PANEL_INCHES[0] * n_cols + MARGIN_INCHES["left"] + MARGIN_INCHES["right"]
    title = textwrap.fill(title, width=int(13 * width))
    top = MARGIN_INCHES["title_line"] * (title.count("\n") + 1) + 0.6
    height = PANEL_INCHES[1] * n_rows + MARGIN_INCHES["bottom"] + top
    fig = Figure(figsize=(width, height))
    box = {"left": MARGIN_INCHES["left"] / width, "right": 1 - MARGIN_INCHES["right"] / width,
           "bottom": MARGIN_INCHES["bottom"] / height, "top": 1 - top / height}
    axes = fig.subplots(n_rows, n_cols, squeeze=False,
                        gridspec_kw={**box, "wspace": 0.45, "hspace": 0.6})
    image = None
    for row, row_axes in zip(rows, axes):
        for ax in row_axes[len(row):]:
            ax.set_axis_off()
        for panel, ax in zip(row, row_axes):
            image = _heat_map(ax, panel)
    bar = fig.add_axes((box["right"] + 0.3 / width, box["bottom"], 0.15 / width,
                        box["top"] - box["bottom"]))
    fig.colorbar(image, cax=bar, label="φ(i, j)")
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=120)
    return paths


def _heat_map(ax, panel: Panel):
    grid = panel.grid.double().numpy().copy()
    if panel.triangle:
        grid[np.triu_indices_from(grid, k=1)] = np.nan
    r1, r2 = grid.shape
    image = ax.imshow(
        grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest",
        extent=(0.5, r2 + 0.5, r1 + 0.5, 0.5),
    )
    ax.set_title(panel.title, fontsize=8)
    ax.set_xlabel(panel.j_label)
    ax.set_ylabel(panel.i_label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    return image


def initial_adapter(adapter: Adapter) -> Adapter | None:
    """The adapter's A's as initialised (lora_repro.lora.initial_factors, from its recorded seed
    and shapes), its trained B's and scalings beside them: the control of Figs. 3, 4, 6, 7, whose
    phi says what initialisation alone gives. None where they cannot be recomputed (a PEFT or
    loralib file, or factors shown under another target's name)."""
    from lora_repro.lora import initial_factors

    if adapter.labels.get("shown_target"):
        return None
    try:
        initial = initial_factors(adapter.path)
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return None
    factors = {key: (initial[key], B, scaling) for key, (_, B, scaling) in adapter.factors.items()
               if key in initial}
    if len(factors) != len(adapter.factors):
        return None
    return Adapter(adapter.path, factors, {**adapter.labels, "initial": True})


def control_grids(first: Adapter, second: Adapter, keys, use: str) -> tuple | None:
    """(phi of the two adapters' initial A's for every key, the two initial adapters), or None:
    no control for B's (they start at 0) or for adapters whose initial A's are unknown."""
    if use != "right":
        return None
    start1, start2 = initial_adapter(first), initial_adapter(second)
    if start1 is None or start2 is None:
        return None
    return grids(start1, start2, keys, use), start1, start2


def factor(adapter: Adapter, layer: int, target: str, use: str) -> torch.Tensor:
    """The factor whose singular vectors are compared: A (use="right") or B (use="left")."""
    return adapter.A(layer, target) if use == "right" else adapter.B(layer, target)


def grids(first: Adapter, second: Adapter, keys, use: str = "right") -> dict:
    """phi grids of two adapters for every (layer, target) key, in one batched SVD."""
    return similarity_grids(
        {key: factor(first, *key, use) for key in keys},
        {key: factor(second, *key, use) for key in keys},
        use,
    )


def _labels(*adapters: Adapter) -> dict:
    """model / task / tier shared by the adapters (joined with ' vs ' where they differ)."""
    out = {}
    for key in ("model", "task", "tier"):
        defaults = [{"model": a.path.name, "task": "task ?", "tier": "?"}[key] for a in adapters]
        values = list(dict.fromkeys(str(a.labels.get(key) or d) for a, d in zip(adapters, defaults)))
        out[key] = " vs ".join(values)
    out["seeds"] = "/".join(str(a.labels.get("seed", "?")) for a in adapters)
    return out


def _where(layers, n_layers: int) -> str:
    name = "layer" if len(layers) == 1 else "layers"
    return f"{name} {', '.join(map(str, layers))} of {n_layers} (from 0)"


def axis_label(axis: str, adapter: Adapter, layer: int, target: str, use: str) -> str:
    """e.g. "i (A of ΔWq, r=8, seed 1)": which factor the rows or columns come from."""
    shown = adapter.labels.get("shown_target", target)
    seed = adapter.labels.get("seed")
    seed = "" if seed is None else f", seed {seed}"
    name = FACTOR_OF_USE[use] + ("₀ (init)" if adapter.labels.get("initial") else "")
    return f"{axis} ({name} of ΔW{shown}, r={adapter.rank(layer, target)}{seed})"


def rank_comparison(low: Adapter, high: Adapter, layers, targets=("q", "v"), use="right",
                    out_stem="results/figures/fig3", figure="Fig. 3") -> list[Path]:
    """Figs. 3 (one layer) and 6 (several): phi(A_high, A_low, i, j) for each target, full grid
    and the zoom on its lower-left triangle, one row per layer. As in the paper's Fig. 3, i runs
    over the higher rank's directions (rows) and j over the lower rank's (columns). Beside them,
    the control: the same phi of the two adapters' initial A's (where they can be recomputed)."""
    keys = [(layer, target) for layer in layers for target in targets]
    phi = grids(high, low, keys, use)
    control = control_grids(high, low, keys, use)
    M = FACTOR_OF_USE[use]
    rows = []
    for layer in layers:
        full, zoom, start = [], [], []
        for target in targets:
            grid = phi[(layer, target)]
            i_label = axis_label("i", high, layer, target, use)
            j_label = axis_label("j", low, layer, target, use)
            name = f"ΔW{target}, layer {layer}"
            full.append(Panel(grid, name, i_label, j_label))
            size = min(grid.shape)
            zoom.append(Panel(grid[:size, :size], f"{name}, j ≤ i", i_label, j_label, True))
            if control is not None:
                grid0, high0, low0 = control
                start.append(Panel(grid0[(layer, target)], f"control: initial A's, {name}\n"
                                   f"φ(1,1) = {float(grid0[(layer, target)][0, 0]):.3f}",
                                   axis_label("i", high0, layer, target, use),
                                   axis_label("j", low0, layer, target, use)))
        rows.append(full + zoom + start)
    ranks = f"{M}_r={high.ranks()[0]}, {M}_r={low.ranks()[0]}"
    labels = _labels(high, low)
    title = (
        f"{figure}: φ({ranks}, i, j) of ΔW{'/ΔW'.join(targets)} — {labels['model']}, "
        f"{labels['task']}, {_where(layers, low.n_layers)}, seeds {labels['seeds']}, "
        f"tier {labels['tier']}"
        + ("; right: the control, φ of the initial A's" if control is not None else
           "; no control (initial A's unknown)")
    )
    return draw(rows, title, out_stem)


def pair_comparison(first: Adapter, second: Adapter, layers, targets=("q", "v"), use="right",
                    seed: int = 0, out_stem="results/figures/similarity", title="") -> list[Path]:
    """phi between two adapters' factors for each target (one row per layer), beside the control
    (the same phi of their initial A's, where they can be recomputed) and the same grid for two
    seeded random Gaussian matrices of the same shapes."""
    keys = [(layer, target) for layer in layers for target in targets]
    phi = grids(first, second, keys, use)
    control = control_grids(first, second, keys, use) if first is not second else None
    rows = []
    for layer in layers:
        row = [Panel(phi[(layer, target)], f"ΔW{target}, layer {layer}",
                     axis_label("i", first, layer, target, use),
                     axis_label("j", second, layer, target, use)) for target in targets]
        if control is not None:
            grid0, first0, second0 = control
            row += [Panel(grid0[(layer, target)], f"control: initial A's, ΔW{target}, "
                          f"layer {layer}\nmean φ {float(grid0[(layer, target)].mean()):.3f}",
                          axis_label("i", first0, layer, target, use),
                          axis_label("j", second0, layer, target, use)) for target in targets]
        shape1 = factor(first, layer, targets[0], use).shape
        shape2 = factor(second, layer, targets[0], use).shape
        row.append(random_panel(shape1, shape2, use, seed + layer))
        rows.append(row)
    labels = _labels(first, second)
    if not title:
        shown = second.labels.get("shown_target")
        against = f", columns from ΔW{shown} of the same layer" if shown else ""
        title = f"Subspace similarity φ(i, j) vs random Gaussian{against}"
    title += (
        f" — {labels['model']}, {labels['task']}, {_where(layers, first.n_layers)}, "
        f"r={first.ranks()[-1]}/{second.ranks()[-1]}, seeds {labels['seeds']}, tier {labels['tier']}"
    )
    return draw(rows, title, out_stem)


def seed_comparison(first: Adapter, second: Adapter, layers, targets=("q", "v"), use="right",
                    seed: int = 0, out_stem="results/figures/fig4", figure="Fig. 4") -> list[Path]:
    """Figs. 4 (one layer) and 7 (several): phi between two seeds' factors at one rank, beside
    the random-Gaussian baseline."""
    M = FACTOR_OF_USE[use]
    title = f"{figure}: φ between two seeds' {M} of ΔW{'/ΔW'.join(targets)} vs random Gaussian"
    return pair_comparison(first, second, layers, targets, use, seed, out_stem, title)


def random_panel(shape1, shape2, use: str, seed: int) -> Panel:
    """The random-Gaussian baseline with its expected value max(i, j) / d in the title."""
    grid = random_baseline(shape1, shape2, seed=seed, use=use)
    dim = shape1[1] if use == "right" else shape1[0]
    expected = expected_random_phi(*grid.shape, dim)
    return Panel(
        grid,
        f"random N(0,1), seed {seed}: mean {grid.mean():.3f}\n"
        f"E[φ] = max(i, j)/{dim}: mean {expected.mean():.3f}",
        f"i (random, r={grid.shape[0]})", f"j (random, r={grid.shape[1]})",
    )


def weight_vs_delta_figure(W: torch.Tensor, deltas: list[tuple[Adapter, torch.Tensor]],
                           layer: int, target: str, n_top: int, use: str = "right",
                           seed: int = 0, out_stem="results/figures/fig8") -> list[Path]:
    """Fig. 8: phi between W's top n_top singular directions (i) and dW's top r (j), for each
    adapter (one per r), beside a random matrix of the largest rank in dW's place."""
    W_basis = orthonormal_basis(W, use, n_top)
    panels = []
    for adapter, delta in deltas:
        r = adapter.rank(layer, target)
        panels.append(Panel(weight_vs_delta(W, delta, r, n_top, use),
                            f"ΔW{target} r={r} vs W{target}",
                            f"i (W{target}, top {n_top})", f"j (ΔW{target}, r={r})"))
    r_max = max(adapter.rank(layer, target) for adapter, _ in deltas)
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(tuple(W.shape), generator=generator, dtype=torch.float64)
    random_grid = phi_grid(W_basis, orthonormal_basis(random, use, r_max))
    dim = W.shape[1] if use == "right" else W.shape[0]
    panels.append(Panel(random_grid,
                        f"random N(0,1), seed {seed}, vs W{target}\n"
                        f"E[φ] = max(i, j)/{dim}: mean {expected_random_phi(n_top, r_max, dim).mean():.3f}",
                        f"i (W{target}, top {n_top})", f"j (random, r={r_max})"))
    adapters = [adapter for adapter, _ in deltas]
    labels = _labels(*adapters)
    ranks = ", ".join(str(adapter.rank(layer, target)) for adapter in adapters)
    side = "right" if use == "right" else "left"
    title = (
        f"Fig. 8: φ between top {side} singular directions of W{target} and of ΔW{target}, "
        f"r = {ranks} — {labels['model']}, {labels['task']}, "
        f"{_where([layer], adapters[0].n_layers)}, seeds {labels['seeds']}, tier {labels['tier']}"
    )
    return draw([panels], title, out_stem)
