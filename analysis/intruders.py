"""Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
Equivalence"): singular vectors of a fine-tuned weight that no singular vector of the pretrained
weight resembles.

    lora-repro analyze intruders results/runs/table_glue/<lora_run> results/runs/table_glue/<ft_run>

W0 and W1 are dicts keyed by (layer, target), W out x in. `run_weights` builds them from a run
folder of either kind: a LoRA run (W1 = W0 + ΔW from adapter.safetensors and the pretrained model)
or a full fine-tuning run (W1 from the best weights it saved as model.safetensors).
"""
from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lora_repro.architectures import family_of, find_sites
from lora_repro.records import read_record

FINETUNED_FILE = "model.safetensors"


def max_cosines(W0: torch.Tensor, W1: torch.Tensor, k: int = 10) -> torch.Tensor:
    """For each of W1's top-k left singular vectors, its largest |cosine| with any left singular
    vector of W0 (the reduced SVD: W0's column space; all of it for a square or wide W0)."""
    if W0.shape != W1.shape:
        raise ValueError(f"W0 is {tuple(W0.shape)} but W1 is {tuple(W1.shape)}: not one weight")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(W1.shape):
        raise ValueError(f"k={k!r} must be an integer in 1..{min(W1.shape)} for a "
                         f"{tuple(W1.shape)} weight")
    U0 = torch.linalg.svd(W0.double(), full_matrices=False).U
    U1 = torch.linalg.svd(W1.double(), full_matrices=False).U[:, :k]
    return (U1.T @ U0).abs().amax(dim=1)


def intruder_dimensions(W0: torch.Tensor, W1: torch.Tensor, k: int = 10, eps: float = 0.5) -> int:
    """How many of W1's top-k left singular vectors have |cosine| < eps with every left singular
    vector of W0. 0 when W1 = W0; a large update along a direction spread over W0's singular
    vectors adds one."""
    if not 0 < eps <= 1:
        raise ValueError(f"eps={eps!r} must lie in (0, 1]")
    return int((max_cosines(W0, W1, k) < eps).sum())


def intruders_by_matrix(W0s: dict, W1s: dict, k: int = 10, eps: float = 0.5) -> dict:
    """(layer, target) -> intruder dimensions, for every key of W1s (each must be in W0s)."""
    missing = sorted(set(W1s) - set(W0s))
    if missing:
        raise ValueError(f"no pretrained W0 for {missing[:4]}")
    return {key: intruder_dimensions(W0s[key], W1, k, eps) for key, W1 in sorted(W1s.items())}


# -- weights of a run folder ---------------------------------------------------------------------

@cache
def _pretrained(name: str):
    from lora_repro.models import load_pretrained

    return load_pretrained(name).eval()


def _base_name(run_dir: Path, record: dict | None, base: str | None) -> str:
    if base:
        return base
    model = (record or {}).get("config", {}).get("model", {})
    name = model.get("path") or (record or {}).get("model")
    if not name and (run_dir / "adapter.json").is_file():
        from lora_repro.lora import read_adapter_meta

        name = read_adapter_meta(run_dir).get("model")
    if not name:
        raise ValueError(f"{run_dir}: no record.json or adapter.json names the pretrained model; "
                         "pass base= (a project model name or a model folder)")
    return str(name)


def _finetuned(name: str, path: Path):
    """The pretrained model with the weights of a full fine-tuning run's model.safetensors.

    The file may hold a model with a task head, whose names carry a prefix ("bert.",
    "transformer.", "model."): it is found from the first adapted matrix's name.
    """
    from safetensors.torch import load_file

    from lora_repro.models import load_pretrained

    model = load_pretrained(name).eval()
    state = load_file(str(path))
    sites = find_sites(model, family_of(model))
    key = sites[0].module_name + ".weight"
    found = [k for k in state if k == key or k.endswith("." + key)]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one weight named like {key!r}, found {found[:4]}")
    prefix = found[0][: len(found[0]) - len(key)]
    own = model.state_dict()
    mapped = {k: state[prefix + k] for k in own if prefix + k in state}
    lacking = [s.module_name for s in sites if s.module_name + ".weight" not in mapped]
    if lacking:
        raise ValueError(f"{path} lacks the weights of {lacking[:4]}")
    model.load_state_dict(mapped, strict=False)
    return model


def run_weights(run_dir, base: str | None = None) -> tuple[dict, dict, dict]:
    """(W0s, W1s, labels) of a finished run folder, keyed by (layer, target), W out x in, float64.

    LoRA run (adapter.safetensors with LoRA factors): the adapted matrices, W1 = W0 + ΔW.
    Full fine-tuning run (model.safetensors): every q, k, v, o matrix of the model.
    labels: method, model, task, tier, seed, rank and the best dev score, from record.json.
    """
    from lora_repro.lora import read_factors, target_weight

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record is not None and record.get("status") not in (None, "done"):
        raise ValueError(f"{run_dir}: the run's status is {record['status']!r}, not 'done'")
    name = _base_name(run_dir, record, base)
    pretrained = _pretrained(name)
    factors = read_factors(run_dir) if (run_dir / "adapter.safetensors").is_file() else {}
    W0s, W1s = {}, {}
    if factors:
        for (layer, target), (A, B, scaling) in factors.items():
            W0s[(layer, target)] = target_weight(pretrained, layer, target).double()
            W1s[(layer, target)] = W0s[(layer, target)] + scaling * (B.double() @ A.double())
        method = "lora"
    elif (run_dir / FINETUNED_FILE).is_file():
        finetuned = _finetuned(name, run_dir / FINETUNED_FILE)
        for site in find_sites(pretrained, family_of(pretrained)):
            key = (site.layer, site.target)
            W0s[key] = target_weight(pretrained, *key).double()
            W1s[key] = target_weight(finetuned, *key).double()
        method = (record or {}).get("method") or "full_ft"
    else:
        raise ValueError(f"{run_dir}: neither LoRA factors (adapter.safetensors) nor fine-tuned "
                         f"weights ({FINETUNED_FILE}) found")
    record = record or {}
    best = (record.get("best") or {}).get("primary")
    labels = {"method": method, "model": record.get("model") or name, "task": record.get("task"),
              "tier": record.get("tier"), "seed": record.get("seed"),
              "rank": record.get("rank") if method == "lora" else None, "dev": best,
              "run": str(run_dir)}
    return W0s, W1s, labels


def per_layer(rows: list[dict], value: str):
    """A table of `value` with one row per layer and a column per (run, target), in the runs'
    order and q, k, v, o order. rows: dicts with run, layer, target and `value`."""
    import pandas as pd

    table = pd.DataFrame(rows).pivot(index="layer", columns=["run", "target"], values=value)
    runs = list(dict.fromkeys(row["run"] for row in rows))
    order = [(run, t) for run in runs for t in ("q", "k", "v", "o") if (run, t) in table.columns]
    return table[order]


def describe(labels: dict) -> str:
    """e.g. "lora r=8 seed 0 (dev 0.912)": one run in a legend."""
    text = labels["method"] + (f" r={labels['rank']}" if labels.get("rank") else "")
    text += f" seed {labels['seed']}" if labels.get("seed") is not None else ""
    return text + (f" (dev {labels['dev']:.3f})" if labels.get("dev") is not None else "")


def slug(labels: dict) -> str:
    """model_task_tier of a run, safe in a file name."""
    parts = [Path(str(labels.get(k))).name for k in ("model", "task", "tier") if labels.get(k)]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-") or "run"


# -- figure --------------------------------------------------------------------------------------

def intruder_figure(results: dict, out_path, k: int = 10, eps: float = 0.5, title: str = "") -> Path:
    """One panel per target: intruder dimensions per layer, one line per run (LoRA vs full FT).

    results: {run label: {(layer, target): count}}. Writes a PNG and returns its path.
    """
    targets = [t for t in ("q", "k", "v", "o") if any(t == key[1] for r in results.values() for key in r)]
    fig = Figure(figsize=(3.2 * len(targets) + 0.6, 3.4))
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    handles = {}
    for ax, target in zip(axes, targets):
        for i, (label, counts) in enumerate(results.items()):  # one colour per run throughout
            points = sorted((layer, n) for (layer, t), n in counts.items() if t == target)
            if points:
                handles[label], = ax.plot(*zip(*points), marker="o", color=f"C{i}", label=label)
        ax.set_title(f"W{target}", fontsize=9)
        ax.set_xlabel("layer (from 0)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.3, k + 0.3)
    axes[0].set_ylabel(f"intruders among top {k} (eps {eps})")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 3),
               fontsize=7)
    fig.suptitle(title or "Intruder dimensions (Shuttleworth et al. 2024)", fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * math.ceil(len(handles) / 3), 1, 1))
    out_path = Path(out_path).with_suffix(".png")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    return out_path


def analyze(run_dirs, k: int = 10, eps: float = 0.5, base: str | None = None,
            figure: Path | None = None, out_dir: Path = Path("results/figures")) -> tuple:
    """Intruder counts of each run, printed per layer and matrix, and the figure comparing them.

    Returns (pandas table, figure path).
    """
    results, rows, first = {}, [], None
    for run_dir in run_dirs:
        W0s, W1s, labels = run_weights(run_dir, base)
        first = first or labels
        counts = intruders_by_matrix(W0s, W1s, k, eps)
        results[describe(labels)] = counts
        rows += [{"run": describe(labels), "layer": layer, "target": target, "intruders": n}
                 for (layer, target), n in counts.items()]
    table = per_layer(rows, "intruders")
    title = (f"Intruder dimensions (Shuttleworth et al. 2024): {first['model']} {first['task'] or ''}"
             f" [{first['tier'] or 'tier ?'}], top {k} of W1, eps {eps}")
    path = intruder_figure(results, figure or out_dir / f"intruders_{slug(first)}", k, eps, title)
    return table, path
