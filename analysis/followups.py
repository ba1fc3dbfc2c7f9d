"""Follow-up claims: the paper's conclusions against its best-known follow-ups, on our runs, each
with its source, our numbers, the rule and a verdict under the same rules as the paper's claims
(analysis.verdicts).

    python -c "from analysis.followups import followup_claims; print(followup_claims('results/runs'))"

- rsLoRA (Kalajdzievski 2023): under rank-stable scaling alpha / sqrt(r), higher ranks learn
  more: does "rank 1 suffices" survive? (`table_rank` runs with method.scaling=rslora)
- intruder dimensions (Shuttleworth et al. 2024): LoRA's fine-tuned weights have singular vectors
  unlike any of the pretrained weight's; full fine-tuning's have few (analysis.intruders)
- effective rank of ΔW (Biderman et al. 2024): full fine-tuning's ΔW has a far higher rank than
  LoRA's (analysis.spectrum)
- forgetting (Biderman et al. 2024): LoRA forgets less of the pretrained behaviour on held-out
  text than full fine-tuning (analysis.forgetting; `lora-repro analyze forgetting RUN` writes it)

The weight analyses need the runs' weights: LoRA's adapter.safetensors and full fine-tuning's
model.safetensors, both kept beside the record locally and not in git (except the `subspace`
adapters). Their measures are written once beside the record (weight_measures.json, committed), so
the claims regenerate without the weights; where neither is there the claim says `not run`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis import verdicts as v
from analysis.tables.ours import done, runs_frame, select, setting_label, settings
from analysis.verdicts import Claim, Finding
from lora_repro.records import atomic_write_json, portable_path

INTRUDER_K, INTRUDER_EPS = 10, 0.5  # Shuttleworth et al.'s top-k and cosine threshold
ENERGY = 0.9  # share of ||ΔW||_F^2 the effective rank holds
WEIGHT_FILES = {"lora": "adapter.safetensors", "full_ft": "model.safetensors"}
# beside each run: its measures, written once from the weights and committed with the record, so
# that the report regenerates from a clone that has no weights (they stay local, not in git)
MEASURES_FILE = "weight_measures.json"
FORGETTING_EXPERIMENTS = ("table_glue", "table_e2e")


# -- rsLoRA ----------------------------------------------------------------------------------------

def claim_rslora(runs_dir) -> Claim:
    """Under rsLoRA, r=64 beats r=1 ({q,v}); the rank-one rule under both scalings beside it."""
    from analysis.claims import rank_comparison, rank_one_finding

    claim = Claim(
        "Under rank-stable scaling (α/√r), larger ranks learn more: {Wq, Wv} at r=64 beats r=1, "
        "so 'a rank as small as 1 suffices' is an artefact of α/r scaling.",
        "Kalajdzievski 2023 (rsLoRA, arXiv:2312.03732): with α/r the updates of high-rank adapters "
        "collapse (their learning slows as r grows), so ranks look interchangeable; with α/√r, "
        "fine-tuning perplexity improves with rank (LLaMA 7B, ranks 4 to 2048).",
        "From `table_rank` runs with method.scaling=rslora (`make table-rank "
        "EXTRA=method.scaling=rslora`), {q,v}: the difference r=64 − r=1, rule "
        f"{v.BEATS.describe(what='r=64 − r=1')}. Beside it, the paper's rank-one rule (claim 1) under "
        "each scaling.",
        absent="no `table_rank` runs with method.scaling=rslora yet",
        source="Kalajdzievski 2023, arXiv:2312.03732")
    frame = runs_frame(runs_dir, "table_rank")
    rslora = select(frame, method="lora", scaling="rslora")
    for setting in settings(rslora):
        found = rank_comparison(frame, setting, "rslora")
        label = setting_label(*setting) + ", rsLoRA"
        if "top" not in found:
            claim.findings.append(Finding(label, f"{{q,v}} ranks finished: {found['ranks'] or 'none'}",
                                          v.NOT_RUN))
            continue
        top, one, high = found["top"], found["one"], found["high"]
        diff = v.compare(high, one, v.metric_of(setting[1]))
        rules = "; ".join(f"rank-one rule, {name}: {rank_one_finding(frame, setting, scaling).verdict}"
                          for scaling, name in (("standard", "α/r"), ("rslora", "α/√r")))
        claim.findings.append(Finding(
            label, f"{{q,v}} r=1 {v.arm_text(one)}, r={top} {v.arm_text(high)}",
            v.tier_verdict(v.BEATS.decide(diff), setting[2]),
            f"r={top} − r=1: {diff.text()}; {rules}"))
    return claim


# -- intruder dimensions and the effective rank of ΔW --------------------------------------------

def weight_runs(runs_dir, experiment: str = "table_glue") -> dict:
    """{(model, task, tier): {"lora": [run_dir, ...], "full_ft": [...]}}: the finished runs that
    kept their weights (LoRA's adapter, full FT's model.safetensors), by seed."""
    frame = done(runs_frame(runs_dir, experiment))
    out = {}
    for setting in settings(frame):
        runs = select(frame, model=setting[0], task=setting[1], tier=setting[2])
        out[setting] = {method: [row["run_dir"] for _, row in select(runs, method=method)
                                 .sort_values("seed").iterrows()
                                 if (Path(row["run_dir"]) / name).is_file()
                                 or (Path(row["run_dir"]) / MEASURES_FILE).is_file()]
                        for method, name in WEIGHT_FILES.items()}
    return out


def weight_measures(run_dirs: list) -> list[dict]:
    """Per run: labels, and per (layer, target) matrix its intruder dimensions (top 10, eps 0.5),
    the effective rank of ΔW (90% of its energy) and ΔW's normalised singular values; read from
    the run's weight_measures.json when it has one, else measured and written there."""
    return [read_measures(run_dir) or write_measures(run_dir) for run_dir in run_dirs]


def write_measures(run_dir) -> dict:
    from analysis.intruders import intruder_dimensions, run_weights
    from analysis.spectrum import delta_spectra, effective_rank

    W0s, W1s, labels = run_weights(run_dir)
    deltas = {key: W1 - W0s[key] for key, W1 in W1s.items()}
    measured = {"labels": labels,
                "intruders": {key: intruder_dimensions(W0s[key], W1, INTRUDER_K, INTRUDER_EPS)
                              for key, W1 in W1s.items()},
                "effective_rank": {key: effective_rank(d, ENERGY) for key, d in deltas.items()},
                "spectra": delta_spectra(deltas)}
    stored = {"k": INTRUDER_K, "eps": INTRUDER_EPS, "energy": ENERGY,
              "labels": {**labels, "run": portable_path(labels["run"])},
              **{measure: {f"{layer}:{target}": np.asarray(value).tolist()
                           for (layer, target), value in measured[measure].items()}
                 for measure in ("intruders", "effective_rank", "spectra")}}
    atomic_write_json(Path(run_dir) / MEASURES_FILE, stored)
    return measured


def read_measures(run_dir) -> dict | None:
    """The measures written by write_measures at the same k, eps and energy; None otherwise."""
    path = Path(run_dir) / MEASURES_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if (stored.get("k"), stored.get("eps"), stored.get("energy")) != (INTRUDER_K, INTRUDER_EPS, ENERGY):
        return None

    def keyed(values: dict, convert) -> dict:
        return {(int(key.split(":")[0]), key.split(":")[1]): convert(value) for key, value in values.items()}

    return {"labels": stored["labels"], "intruders": keyed(stored["intruders"], int),
            "effective_rank": keyed(stored["effective_rank"], int),
            "spectra": keyed(stored["spectra"], np.asarray)}


def unit_arm(measured: list[dict], measure: str, keys: list) -> list[tuple]:
    """(values over `keys`, the keys' indices) per run: a bootstrap arm over matrices and runs."""
    return [(np.array([m[measure][key] for key in keys], dtype=float), np.arange(len(keys)))
            for m in measured]


def weight_findings(runs_dir, figures_dir=None) -> dict:
    """Per setting of `table_glue`: the LoRA and full-FT measures on the matrices both changed,
    and the figures of one run of each; None where either kind kept no weights."""
    from analysis.intruders import describe, intruder_figure, slug
    from analysis.spectrum import spectrum_figure

    out = {}
    for setting, runs in weight_runs(runs_dir).items():
        if not runs["lora"] or not runs["full_ft"]:
            out[setting] = {"missing": {m: len(r) for m, r in runs.items()}}
            continue
        lora, ft = weight_measures(runs["lora"]), weight_measures(runs["full_ft"])
        keys = sorted(set.intersection(*[set(m["intruders"]) for m in lora + ft]))
        figures = []
        if figures_dir is not None:
            first = {describe(m["labels"]): m for m in (lora[0], ft[0])}
            name = slug(lora[0]["labels"])
            figures = [
                intruder_figure({k: m["intruders"] for k, m in first.items()},
                                Path(figures_dir) / f"intruders_{name}", INTRUDER_K, INTRUDER_EPS,
                                f"Intruder dimensions (Shuttleworth et al. 2024): {setting_label(*setting)}"),
                spectrum_figure({k: m["spectra"] for k, m in first.items()},
                                Path(figures_dir) / f"spectrum_{name}",
                                f"Singular values of ΔW, LoRA vs full FT: {setting_label(*setting)}")]
        out[setting] = {"lora": lora, "full_ft": ft, "keys": keys, "figures": figures}
    return out


def _dev(measured: list[dict]) -> str:
    scores = [m["labels"]["dev"] for m in measured if m["labels"].get("dev") is not None]
    return f"dev {100 * np.mean(scores):.1f} (n={len(scores)})" if scores else "dev n/a"


def _weight_claim(claim: Claim, found: dict, measure: str, lora_minus_ft: bool, unit: str) -> Claim:
    """Findings of one weight measure: LoRA − FT (or FT − LoRA) per matrix, rule beats."""
    if found and all("missing" in result for result in found.values()):
        claim.absent = (f"no `table_glue` setting has runs of both kinds with their weights "
                        f"({len(found)} settings: LoRA's adapter.safetensors, full FT's "
                        "model.safetensors, both kept locally and not in git)")
        return claim
    for setting, result in sorted(found.items()):
        label = setting_label(*setting)
        if "missing" in result:
            missing = result["missing"]
            claim.findings.append(Finding(
                label, f"runs with weights: LoRA {missing['lora']} (adapter.safetensors), full FT "
                f"{missing['full_ft']} (model.safetensors, kept locally, not in git)", v.NOT_RUN))
            continue
        keys = result["keys"]
        lora, ft = unit_arm(result["lora"], measure, keys), unit_arm(result["full_ft"], measure, keys)
        a, b = (lora, ft) if lora_minus_ft else (ft, lora)
        diff = v.paired_bootstrap(a, b, "mean", units="matrices", runs="runs")
        means = {name: np.mean([values.mean() for values, _ in arm]) for name, arm in
                 (("LoRA", lora), ("full FT", ft))}
        ours = (f"{len(keys)} matrices ({', '.join(sorted({t for _, t in keys}))} of every layer); "
                + "; ".join(f"{name} {value:.2f} {unit} ({_dev(result[kind])})" for (name, value), kind
                            in zip(means.items(), ("lora", "full_ft"))))
        what = "LoRA − full FT" if lora_minus_ft else "full FT − LoRA"
        claim.findings.append(Finding(
            label, ours, v.tier_verdict(v.BEATS.decide(diff), setting[2]),
            f"{what}: {diff.text(scale=1, unit=' ' + unit)}"))
        claim.figures += result["figures"]
    return claim


def claim_intruders(found: dict) -> Claim:
    claim = Claim(
        "LoRA's fine-tuned weights have intruder dimensions; full fine-tuning's have few.",
        "Shuttleworth et al. 2024 ('LoRA vs Full Fine-tuning: An Illusion of Equivalence', "
        "arXiv:2410.21228): at equal accuracy, LoRA's W1 has high-ranking singular vectors with "
        "cosine < 0.5 to every singular vector of W0 (RoBERTa-base, LLaMA); full fine-tuning's "
        "has far fewer.",
        f"From `table_glue` runs that kept their weights, per matrix both changed: intruder "
        f"dimensions among W1's top {INTRUDER_K} left singular vectors (max |cosine| with W0's < "
        f"{INTRUDER_EPS}, analysis.intruders); the difference LoRA − full FT of the mean per "
        "matrix, paired bootstrap over matrices and runs, rule "
        + v.BEATS.describe(what="LoRA − full FT") + ". Dev scores are shown: the claim is at "
        "comparable quality.",
        absent="no finished `table_glue` runs", source="Shuttleworth et al. 2024, arXiv:2410.21228")
    return _weight_claim(claim, found, "intruders", True, "intruders per matrix")


def claim_effective_rank(found: dict) -> Claim:
    claim = Claim(
        "Full fine-tuning's ΔW has a far higher effective rank than LoRA's.",
        "Biderman et al. 2024 ('LoRA Learns Less and Forgets Less', arXiv:2405.09673): the "
        "weight perturbation of full fine-tuning has a rank 10-100x higher than typical LoRA "
        "configurations (the rank needed to explain 90% of its variance).",
        f"From `table_glue` runs that kept their weights, per matrix both changed: the effective "
        f"rank of ΔW (the fewest singular values holding {ENERGY:.0%} of ||ΔW||_F², "
        "analysis.spectrum.effective_rank); the difference full FT − LoRA of the mean per matrix, "
        "paired bootstrap over matrices and runs, rule " + v.BEATS.describe(what="full FT − LoRA")
        + ".",
        absent="no finished `table_glue` runs", source="Biderman et al. 2024, arXiv:2405.09673")
    return _weight_claim(claim, found, "effective_rank", False, "effective rank")


# -- forgetting ----------------------------------------------------------------------------------

def forgotten(result: dict) -> float:
    """How much was forgotten: the rise of the LM loss, or the fall of the embedding cosine."""
    return -result["change"] if result["measure"] == "embedding_cosine" else result["change"]


def claim_forgetting(runs_dir) -> Claim:
    from analysis.forgetting import read_forgetting

    claim = Claim(
        "LoRA forgets less of the pretrained model's behaviour than full fine-tuning.",
        "Biderman et al. 2024 ('LoRA Learns Less and Forgets Less', arXiv:2405.09673): on "
        "held-out benchmarks of the source domain, LoRA degrades the base model less than full "
        "fine-tuning (LLaMA-2 7B/13B, code and math).",
        "From forgetting.json beside the `table_glue` and `table_e2e` runs (`lora-repro analyze "
        "forgetting RUN`: for a GLUE encoder, the cosine of the fine-tuned and pretrained "
        "sentence embeddings of another task's dev sentences; for a causal LM, its loss on the "
        "other NLG data set): forgotten = the fall of the cosine, or the rise of the loss; the "
        "difference full FT − LoRA over seeds (t-interval), rule "
        + v.BEATS.describe(what="full FT − LoRA") + ".",
        absent="no run has a forgetting.json yet (`lora-repro analyze forgetting RUN` writes it)",
        source="Biderman et al. 2024, arXiv:2405.09673")
    for experiment in FORGETTING_EXPERIMENTS:
        frame = done(runs_frame(runs_dir, experiment))
        for setting in settings(frame):
            runs = select(frame, model=setting[0], task=setting[1], tier=setting[2])
            arms, measures = {}, set()
            for method in ("lora", "full_ft"):
                arms[method] = {}
                for _, row in select(runs, method=method).iterrows():
                    result = read_forgetting(row["run_dir"])
                    if result and row["seed"] not in arms[method]:
                        arms[method][row["seed"]] = forgotten(result)
                        measures.add(f"{result['measure']} on {result['held_out']['task']}")
            if not arms["lora"] and not arms["full_ft"]:
                continue
            label = setting_label(*setting)
            ours = (f"{', '.join(sorted(measures))}; forgotten: " + "; ".join(
                f"{name} {v.arm_text(v.Arm(arms[m]), 1, 4)}" for m, name in
                (("lora", "LoRA"), ("full_ft", "full FT"))))
            if not arms["lora"] or not arms["full_ft"]:
                claim.findings.append(Finding(label, ours, v.NOT_RUN))
                continue
            diff = v.seed_interval(arms["full_ft"], arms["lora"])
            claim.findings.append(Finding(label, ours, v.tier_verdict(v.BEATS.decide(diff), setting[2]),
                                          f"full FT − LoRA: {diff.text(scale=1, unit='', decimals=4)}"))
    return claim


def followup_claims(runs_dir, figures_dir=None) -> list[Claim]:
    """The follow-up claims, in the report's order; figures (intruders, spectra) into figures_dir."""
    found = weight_findings(runs_dir, figures_dir)
    return [claim_rslora(runs_dir), claim_intruders(found), claim_effective_rank(found),
            claim_forgetting(runs_dir)]
