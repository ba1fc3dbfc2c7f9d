"""The singular-value spectrum of ΔW = W1 - W0 (Biderman et al. 2024, "LoRA Learns Less and
Forgets Less"): full fine-tuning's ΔW is of high rank, LoRA's of rank r at most.

    lora-repro analyze spectrum results/runs/table_glue/<lora_run> results/runs/table_glue/<ft_run>

`effective_rank` counts the singular values that hold a share of ΔW's spectral energy (the sum of
its squared singular values, i.e. ||ΔW||_F^2). The figure shows each matrix type's spectrum
normalised by its largest singular value, the median over layers, one line per run.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from analysis.intruders import describe, per_layer, run_weights, slug

FLOOR = 1e-6  # normalised singular values below this are drawn at it (LoRA's beyond rank r)


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of ΔW (float64, descending)."""
    return torch.linalg.svdvals(delta.double())


def effective_rank(delta: torch.Tensor, energy: float = 0.9) -> int:
    """The fewest singular values whose squares sum to at least `energy` of all of them
    (0 for ΔW = 0). A rank-r matrix with equal singular values gives ceil(energy * r)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy={energy!r} must lie in (0, 1]")
    power = singular_values(delta) ** 2
    total = power.sum()
    if total == 0:
        return 0
    share = power.cumsum(0) / total
    return int((share < energy * (1 - 1e-12)).sum()) + 1


def spectra(W0s: dict, W1s: dict) -> dict:
    """(layer, target) -> singular values of W1 - W0, normalised by the largest."""
    return delta_spectra({key: W1.double() - W0s[key].double() for key, W1 in W1s.items()})


def delta_spectra(deltas: dict) -> dict:
    """(layer, target) -> singular values of ΔW, normalised by the largest (a LoRA adapter's ΔW
    straight from its factors: no pretrained weights needed)."""
    out = {}
    for key, delta in sorted(deltas.items()):
        s = singular_values(delta)
        out[key] = s / s[0] if s[0] > 0 else s
    return out


def spectrum_figure(results: dict, out_path, title: str = "") -> Path:
    """One panel per target: the median over layers of ΔW's normalised singular values against
    their index, one line per run (LoRA vs full FT), log scale. results: {label: spectra(...)}."""
    targets = [t for t in ("q", "k", "v", "o") if any(t == key[1] for r in results.values() for key in r)]
    fig = Figure(figsize=(3.2 * len(targets) + 0.6, 3.4))
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    handles = {}
    for ax, target in zip(axes, targets):
        for i, (label, by_key) in enumerate(results.items()):  # one colour per run throughout
            rows = [s for (_, t), s in by_key.items() if t == target]
            if rows:
                median = torch.stack([torch.as_tensor(r) for r in rows]).median(dim=0).values.clamp(min=FLOOR)
                handles[label], = ax.plot(range(1, len(median) + 1), median.numpy(),
                                          color=f"C{i}", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 2, 1.5)
        ax.set_title(f"ΔW{target}", fontsize=9)
        ax.set_xlabel("index i of singular value")
    axes[0].set_ylabel("σ_i / σ_1 (median over layers)")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 3),
               fontsize=7)
    fig.suptitle(title or "Singular values of ΔW", fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * math.ceil(len(handles) / 3), 1, 1))
    out_path = Path(out_path).with_suffix(".png")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    return out_path


def analyze(run_dirs, energy: float = 0.9, base: str | None = None, figure: Path | None = None,
            out_dir: Path = Path("results/figures")) -> tuple:
    """Effective rank of ΔW per run, layer and matrix, and the spectrum figure of the runs.

    Returns (pandas table, figure path).
    """
    results, rows, first = {}, [], None
    for run_dir in run_dirs:
        W0s, W1s, labels = run_weights(run_dir, base)
        first = first or labels
        results[describe(labels)] = spectra(W0s, W1s)
        rows += [{"run": describe(labels), "layer": layer, "target": target,
                  "effective rank": effective_rank(W1 - W0s[(layer, target)], energy)}
                 for (layer, target), W1 in sorted(W1s.items())]
    table = per_layer(rows, "effective rank")
    title = (f"Singular values of ΔW: {first['model']} {first['task'] or ''} "
             f"[{first['tier'] or 'tier ?'}]")
    path = spectrum_figure(results, figure or out_dir / f"spectrum_{slug(first)}", title)
    return table, path
