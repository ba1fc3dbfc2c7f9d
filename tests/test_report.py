"""analysis.report and analysis.followups on synthetic records, planted predictions and planted
weights: every claim listed with its rule, its statistic and a verdict decided by analysis.verdicts,
"not run" when the runs are absent, "reproduced" only at the paper tier, and the tables, figures and
follow-up claims embedded."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from analysis import claims, followups, report
from analysis import verdicts as v
from analysis.cli import main
from lora_repro import lora
from lora_repro.models import build_random
from lora_repro.records import PREDICTIONS_FILE, atomic_write_json, write_record

VERDICTS = set(v.VERDICTS)
N_CLAIMS, N_FOLLOWUPS = 8, 4
LABELS = np.random.default_rng(0).permutation(np.array([0] * 230 + [1] * 170))  # majority 57.5%


def write_run(root, experiment, name, primary=0.85, **fields):
    record = {
        "run_id": name, "experiment": experiment, "status": "done", "error": None,
        "model": "minilm_l6", "task": "sst2", "method": "lora", "targets": ["q", "v"], "rank": 8,
        "alpha": 8, "seed": 0, "tier": "quick",
        "parameters": {"trainable": 150_000, "total": 22_700_000, "lora": 73_728},
        "best": {"primary": primary, "accuracy": primary},
        "device": {"device": "cpu", "cpu": "x86_64", "cpu_count": 2, "torch_threads": 1},
        "hyperparameters": {"train_limit": 8000, "eval_limit": None, "epochs": 2},
        "git_commit": "0123abc", "versions": {"torch": "2.13.0"},
    }
    record.update(fields)
    write_record(root / experiment / name, record)
    return root / experiment / name


ORDER = np.random.default_rng(1).permutation(len(LABELS))  # how hard each example is


def planted_run(root, experiment, name, accuracy, seed=0, **fields):
    """A run whose dev predictions are right on exactly `accuracy` of LABELS: wrong on the hardest
    examples (errors nested, as models' errors correlate), with predictions.json as
    lora_repro.train writes it."""
    right = ORDER >= round((1 - accuracy) * len(LABELS))
    prediction = np.where(right, LABELS, 1 - LABELS)
    run = write_run(root, experiment, name, float(right.mean()), seed=seed, **fields)
    atomic_write_json(run / PREDICTIONS_FILE, {"epoch": 1, "splits": {"validation": {
        "prediction": prediction.tolist(), "label": LABELS.tolist()}}})
    return run


def majority_run(root, experiment, name, seed=0, **fields):
    """A run that predicts the majority class for every dev example: it learned nothing."""
    run = write_run(root, experiment, name, 230 / 400, seed=seed, **fields)
    atomic_write_json(run / PREDICTIONS_FILE, {"epoch": 1, "splits": {"validation": {
        "prediction": [0] * len(LABELS), "label": LABELS.tolist()}}})
    return run


def build(tmp_path, runs, bench=None):
    out = tmp_path / "results" / "REPORT.md"
    report.build_report(runs, out, tmp_path / "results" / "tables",
                        tmp_path / "results" / "figures", bench or tmp_path / "no_bench",
                        coverage=False)
    return out, out.read_text()


def verdict_lines(text):
    return [line.split("**Verdict: ")[1].rstrip(".*") for line in text.splitlines()
            if "**Verdict: " in line]


def test_without_records_every_claim_is_not_run(tmp_path):
    found = claims.paper_claims(tmp_path / "runs", tmp_path / "bench")
    later = followups.followup_claims(tmp_path / "runs")
    assert len(found) == N_CLAIMS and len(later) == N_FOLLOWUPS
    assert all(claim.verdict == v.NOT_RUN for claim in found + later)
    out, text = build(tmp_path, tmp_path / "runs")
    for claim in found + later:
        assert claim.statement in text
    assert text.count("**Verdict: not run.**") == N_CLAIMS + N_FOLLOWUPS
    assert "| reproduced |" not in text  # never without data
    for section in ("## Claims at a glance", "## How verdicts are decided", "## What produced it",
                    "## Tables", "### table6_rank", "## Section 7 figures", "## Table 7",
                    "## Protocol check: every method beats the constant baseline", "## Claims",
                    "## Follow-up claims", "### F1. Under rank-stable scaling",
                    "## The paper's numbers"):
        assert section in text
    assert "![table6_rank](figures/table6_rank.png)" in text  # relative to the report
    rules = text.split("## How verdicts are decided\n")[1].split("\n## ")[0]
    assert "paired bootstrap over dev examples and seeds" in rules
    assert "lower end ≥ −1 point" in rules and "±1 point" in rules


# -- claim 1: rank 1 suffices, with the head-only control ------------------------------------------

def rank_runs(runs, one=0.85, top=0.85, control=0.60, tier="quick", **fields):
    for seed in (0, 1, 2):
        planted_run(runs, "table_rank", f"r1s{seed}", one, seed=seed, rank=1, tier=tier, **fields)
        planted_run(runs, "table_rank", f"r64s{seed}", top, seed=seed, rank=64, tier=tier, **fields)
        if control is not None:
            same = {k: x for k, x in fields.items() if k != "method_config"}
            planted_run(runs, "table_rank", f"head{seed}", control, seed=seed, method="head_only",
                        targets=None, rank=None, tier=tier, **same)


def test_rank_one_on_par_and_above_the_control_is_consistent(tmp_path):
    rank_runs(tmp_path / "runs")
    (finding,) = claims.claim_rank_one(tmp_path / "runs").findings
    assert finding.verdict == v.CONSISTENT
    assert "r=1 85.0 ± 0.0 (n=3), r=64 85.0 ± 0.0 (n=3), head only 60.0 ± 0.0 (n=3)" in finding.ours
    assert "r=1 − r=64: +0.00 [+0.00, +0.00] points" in finding.statistic
    assert "paired bootstrap over 400 dev examples and seeds (3 vs 3)" in finding.statistic


def test_rank_one_needs_the_control(tmp_path):
    rank_runs(tmp_path / "runs", control=None)
    (finding,) = claims.claim_rank_one(tmp_path / "runs").findings
    assert finding.verdict == v.INCONCLUSIVE and "head-only control is not run" in finding.statistic
    rank_runs(tmp_path / "same", control=0.85)  # the head alone does as well: rank cannot matter
    (finding,) = claims.claim_rank_one(tmp_path / "same").findings
    assert finding.verdict == v.INCONCLUSIVE and "does not clearly beat" in finding.statistic


def test_rank_one_clearly_behind_is_contradicted_and_paper_tier_says_reproduced(tmp_path):
    rank_runs(tmp_path / "behind", one=0.78, top=0.88)
    (finding,) = claims.claim_rank_one(tmp_path / "behind").findings
    assert finding.verdict == v.CONTRADICTED
    rank_runs(tmp_path / "paper", tier="paper", model="roberta_base")
    (finding,) = claims.claim_rank_one(tmp_path / "paper").findings
    assert finding.verdict == v.REPRODUCED and "paper tier" in finding.setting


def test_a_lone_rank_is_not_run(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "r8", rank=8)
    (finding,) = claims.claim_rank_one(runs).findings
    assert finding.verdict == v.NOT_RUN


# -- claims 2 and 6: beats, on par, and the constant baseline --------------------------------------

def test_budget_claim_beats_rule_and_its_baseline_guard(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        planted_run(runs, "table_targets", f"q{seed}", 0.75, seed=seed, targets=["q"], rank=8)
        planted_run(runs, "table_targets", f"qv{seed}", 0.88, seed=seed, rank=4)
        planted_run(runs, "table_targets", f"pq{seed}", 0.90, seed=seed, targets=["q"], rank=8,
                    tier="paper", model="roberta_base")
        planted_run(runs, "table_targets", f"pqv{seed}", 0.80, seed=seed, rank=4, tier="paper",
                    model="roberta_base")
    verdicts = {f.setting: f.verdict for f in claims.claim_qv_beats_q(runs).findings}
    assert verdicts == {"all-MiniLM-L6-v2, SST-2, quick tier": v.CONSISTENT,
                        "RoBERTa-base, SST-2, paper tier": v.CONTRADICTED}
    guarded = tmp_path / "guarded"  # {q} learned nothing: {q,v} "beats" it, but that decides nothing
    for seed in (0, 1, 2):
        majority_run(guarded, "table_targets", f"q{seed}", seed=seed, targets=["q"], rank=8)
        planted_run(guarded, "table_targets", f"qv{seed}", 0.88, seed=seed, rank=4)
    (finding,) = claims.claim_qv_beats_q(guarded).findings
    assert finding.verdict == v.INCONCLUSIVE and "(would be consistent)" in finding.statistic


def test_glue_on_par_averages_tasks_and_flags_a_method_that_did_not_learn(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        for task in ("sst2", "qnli"):
            planted_run(runs, "table_glue", f"lora_{task}{seed}", 0.86, seed=seed, task=task)
            planted_run(runs, "table_glue", f"ft_{task}{seed}", 0.86, seed=seed, task=task,
                        method="full_ft", targets=None, rank=None)
    (finding,) = claims.claim_glue_on_par(runs).findings
    assert finding.verdict == v.CONSISTENT
    assert "mean over 2 task(s): +0.00 [" in finding.statistic
    assert "mean over 2 paired bootstraps, draw by draw" in finding.statistic
    for seed in (0, 1, 2):  # RTE: LoRA at the majority rate (issue 13), FT 20 points above
        majority_run(runs, "table_glue", f"lora_rte{seed}", seed=seed, task="rte")
        planted_run(runs, "table_glue", f"ft_rte{seed}", 0.78, seed=seed, task="rte",
                    method="full_ft", targets=None, rank=None)
    (finding,) = claims.claim_glue_on_par(runs).findings
    assert finding.verdict == v.INCONCLUSIVE and "would be contradicted" in finding.statistic
    checks = claims.baseline_checks(runs)
    rte = checks[(checks["task"] == "RTE") & (checks["cell"].str.startswith("LoRA"))].iloc[0]
    assert rte["verdict"] == v.CONTRADICTED and rte["− constant baseline [95%]"] == "+0.00 [+0.00, +0.00]"


def test_records_without_predictions_fall_back_to_seeds_and_say_so(tmp_path):
    runs = tmp_path / "runs"
    for seed, (lora_, ft) in enumerate([(0.85, 0.86), (0.84, 0.86), (0.86, 0.87)]):
        write_run(runs, "table_glue", f"lora{seed}", lora_, seed=seed)
        write_run(runs, "table_glue", f"ft{seed}", ft, seed=seed, method="full_ft", targets=None,
                  rank=None)
    (finding,) = claims.claim_glue_on_par(runs).findings
    assert "per-example predictions missing (older records)" in finding.statistic
    assert "n=3" in finding.statistic and finding.verdict == v.INCONCLUSIVE
    assert "LoRA − FT per task: SST-2 -1.3 [" in finding.ours


# -- Section 7: the top direction against its control, amplification against chance -------------

@pytest.fixture
def subspace_runs(tmp_path):
    """A random-init 2-layer BERT (hidden 64) as the base, and r=8 / r=64 LoRA runs on {q, v}
    whose A factors share one strong direction (the r=8 top direction lies in the r=64 span)."""
    base = tmp_path / "base"
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, vocab_size=50)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(base)
    shared = torch.nn.functional.normalize(torch.randn(64), dim=0)
    runs = tmp_path / "runs"
    for rank in (8, 64):
        model = transformers.AutoModel.from_pretrained(base)
        lora.inject(model, targets=("q", "v"), rank=rank, alpha=rank, seed=rank)
        generator = torch.Generator().manual_seed(rank)
        with torch.no_grad():
            for wrapper in lora.wrappers(model).values():
                for target, A in wrapper.lora_A.items():
                    A.copy_(0.1 * torch.randn(A.shape, generator=generator))
                    A[0] = 10 * shared
                    wrapper.lora_B[target].copy_(0.1 * torch.randn(
                        wrapper.lora_B[target].shape, generator=generator))
        run = write_run(runs, "subspace", f"r{rank}", model=str(base), rank=rank, alpha=rank)
        lora.save_adapter(model, run)
    return runs


def test_subspace_claims_compare_with_the_control_and_chance(subspace_runs):
    top = claims.claim_top_direction(subspace_runs)
    (finding,) = top.findings
    assert finding.verdict == v.CONSISTENT  # the planted direction, while the initial A's differ
    assert "ΔWq phi(1,1) per seed pair 1.000 vs the control's 0." in finding.statistic
    assert "E[phi(1,1)] = 1/64" in finding.statistic
    amplification = claims.claim_amplification(subspace_runs)
    (finding,) = amplification.findings
    assert finding.verdict in VERDICTS
    assert "r=8: proj ΔW / W / random" in finding.ours and "(chance " in finding.ours
    assert "proj_ΔW / chance projection" in finding.statistic


def test_top_direction_falls_back_to_the_largest_rank_below_8_beside_64(subspace_runs):
    """The decoder's subspace runs are r=4 and r=64 (Table 7's pair): claim 3 compares those."""
    path = subspace_runs / "subspace" / "r8" / "record.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "rank": 4}))
    (finding,) = claims.claim_top_direction(subspace_runs).findings
    assert finding.verdict == v.CONSISTENT and finding.ours.startswith("A at r=4 vs r=64")


def test_latency_claim_reads_the_benchmark(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()

    def write(name, merged, rounds=None):
        rows = [{"variant": v_, "precision": "fp32", "vs_base": x}
                for v_, x in (("base", 1.0), ("merged", merged), ("unmerged", 1.3))]
        if rounds:
            for row, times in zip(rows, rounds):
                row["rounds_ms"] = times
        (bench / name).write_text(json.dumps({
            "model": "minilm_l6", "batch": 32, "seq": 64, "inference": rows,
            "machine": {"device": "cpu", "processor": "x86_64"}}))

    write("a.json", 1.004)
    claim = claims.claim_merge_latency(bench)
    assert claim.verdict == v.CONSISTENT
    assert "merged/base 1.004 (unmerged/base 1.300)" in claim.findings[0].ours
    write("b.json", 1.2)
    assert {f.verdict for f in claims.claim_merge_latency(bench).findings} == {
        v.CONSISTENT, v.CONTRADICTED}
    (bench / "b.json").unlink()
    noisy = [100, 90, 110, 95, 105]  # the same rounds for base and merged, wide spread
    write("a.json", 1.0, rounds=[noisy, noisy, noisy])
    (finding,) = claims.claim_merge_latency(bench).findings
    assert finding.verdict == v.INCONCLUSIVE and "bootstrap over 5 and 5 timing rounds" in finding.statistic


def test_report_cli_lists_every_claim_with_a_verdict(tmp_path, capsys, monkeypatch):
    from analysis import coverage

    monkeypatch.setattr(coverage, "ARTEFACTS", coverage.ARTEFACTS[-2:])  # no sweep to count
    runs = tmp_path / "runs"
    write_run(runs, "table_glue", "lora", 0.85)
    write_run(runs, "table_glue", "ft", 0.86, method="full_ft", targets=None, rank=None)
    out = tmp_path / "REPORT.md"
    assert main(["report", "--out", str(out), "--runs-dir", str(runs), "--tables-dir",
                 str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"),
                 "--bench-dir", str(tmp_path / "bench")]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    verdicts = verdict_lines(text)
    assert len(verdicts) == N_CLAIMS + N_FOLLOWUPS and set(verdicts) <= VERDICTS
    assert "LoRA − FT per task: SST-2 -1.0" in text
    assert verdicts[5] == v.INCONCLUSIVE  # one seed each: no interval
    assert "**Statistic:** mean over 1 task(s)" in text
    assert "CPU x86_64, 2 cores, 1 torch threads (2 runs)" in text


# -- follow-up claims ----------------------------------------------------------------------------

def test_rslora_follow_up_splits_the_scalings(tmp_path):
    runs = tmp_path / "runs"
    rank_runs(runs, one=0.85, top=0.85, method_config={"name": "lora", "scaling": "standard"})
    for seed in (0, 1, 2):
        rs = {"method_config": {"name": "lora", "scaling": "rslora"}}
        planted_run(runs, "table_rank", f"rs1s{seed}", 0.84, seed=seed, rank=1, **rs)
        planted_run(runs, "table_rank", f"rs64s{seed}", 0.90, seed=seed, rank=64, **rs)
    (finding,) = followups.claim_rslora(runs).findings
    assert finding.verdict == v.CONSISTENT and finding.setting.endswith(", rsLoRA")
    assert "r=64 − r=1: +" in finding.statistic
    assert "rank-one rule, α/r: consistent; rank-one rule, α/√r: contradicted" in finding.statistic
    (standard,) = claims.claim_rank_one(runs).findings  # the paper's claim sees α/r runs only
    assert standard.verdict == v.CONSISTENT and "85.0 ± 0.0 (n=3), r=64 85.0" in standard.ours


def planted_intruder(W0: torch.Tensor, size: float = 10.0) -> torch.Tensor:
    """A rank-1 update along a direction spread evenly over W0's singular vectors (|cos| =
    1/sqrt(d) with each, far below 0.5): exactly one intruder dimension."""
    U, _, Vh = torch.linalg.svd(W0.double())
    spread = torch.ones(W0.shape[0], dtype=torch.float64) / math.sqrt(W0.shape[0])
    return size * torch.outer(U @ spread, Vh.T @ spread)


@pytest.fixture
def weight_runs(tmp_path):
    """table_glue: a LoRA run (tiny BERT, q and v of 2 layers) whose ΔW is one planted intruder in
    every matrix, and a full-FT run whose only change is one planted intruder in layer 1's Wq."""
    runs = tmp_path / "runs"
    model = lora.inject(build_random("tiny_bert", seed=0), rank=4, alpha=8, seed=0)
    with torch.no_grad():
        for (layer, target), (A, B, scaling) in lora.factors(model).items():
            delta = planted_intruder(lora.target_weight(model, layer, target))
            U, S, Vh = torch.linalg.svd(delta)
            A.zero_()
            B.zero_()
            A[0] = Vh[0].float()
            B[:, 0] = (U[:, 0] * S[0] / scaling).float()
    run = write_run(runs, "table_glue", "lora", 0.80, model="tiny_bert", rank=4)
    lora.save_adapter(model, run)
    ft = build_random("tiny_bert", head="sequence_classification", seed=0)
    query = ft.bert.encoder.layer[1].attention.self.query
    with torch.no_grad():
        query.weight += planted_intruder(query.weight).float()
    run = write_run(runs, "table_glue", "ft", 0.82, model="tiny_bert", method="full_ft",
                    targets=None, rank=None)
    save_file({k: t.contiguous() for k, t in ft.state_dict().items()}, run / "model.safetensors")
    return runs


def test_intruders_and_effective_rank_from_planted_weights(weight_runs, tmp_path):
    found = followups.weight_findings(weight_runs, tmp_path / "figures")
    (intruders,) = followups.claim_intruders(found).findings
    # LoRA: one intruder in each of its 4 matrices; full FT: one in (1, q) only
    assert "LoRA 1.00 intruders per matrix (dev 80.0 (n=1)); full FT 0.25" in intruders.ours
    assert intruders.verdict == v.CONSISTENT and "LoRA − full FT: +0.75 [" in intruders.statistic
    assert "paired bootstrap over 4 matrices and runs (1 vs 1)" in intruders.statistic
    (rank,) = followups.claim_effective_rank(found).findings
    # full FT's ΔW is zero in 3 of the 4 matrices (effective rank 0), LoRA's of rank 1 in each
    assert rank.verdict == v.CONTRADICTED and "full FT − LoRA: -0.75 [" in rank.statistic
    names = {p.name for p in followups.claim_intruders(found).figures}
    assert names == {"intruders_tiny_bert_sst2_quick.png", "spectrum_tiny_bert_sst2_quick.png"}
    missing = {("minilm_l6", "sst2", "quick"): {"missing": {"lora": 2, "full_ft": 0}}}
    findings = followups.claim_intruders(found | missing).findings
    assert [f.verdict for f in findings] == [v.NOT_RUN, v.CONSISTENT]
    assert "full FT 0 (model.safetensors, kept locally, not in git)" in findings[0].ours
    nothing = followups.claim_intruders(missing)
    assert nothing.verdict == v.NOT_RUN and not nothing.findings
    assert "kept locally and not in git" in nothing.absent


def test_weight_measures_are_kept_beside_the_record_and_serve_without_the_weights(weight_runs, tmp_path):
    """A clone has the records and weight_measures.json, not the weights: same findings."""
    first = followups.weight_findings(weight_runs)
    for weights in weight_runs.glob("table_glue/*/*.safetensors"):
        assert (weights.parent / followups.MEASURES_FILE).is_file()
        weights.unlink()
    again = followups.weight_findings(weight_runs, tmp_path / "figures")  # figures from the file too
    assert all(p.stat().st_size > 1000 for p in again[("tiny_bert", "sst2", "quick")]["figures"])
    for kind in ("lora", "full_ft"):
        key = ("tiny_bert", "sst2", "quick")
        for before, after in zip(first[key][kind], again[key][kind]):
            assert before["intruders"] == after["intruders"]
            assert before["effective_rank"] == after["effective_rank"]
            for key, values in before["spectra"].items():
                np.testing.assert_allclose(after["spectra"][key], values)
    texts = [(f.ours, f.statistic, f.verdict) for f in followups.claim_intruders(again).findings]
    assert texts == [(f.ours, f.statistic, f.verdict) for f in followups.claim_intruders(first).findings]


def test_forgetting_follow_up_reads_each_runs_result(tmp_path):
    runs = tmp_path / "runs"
    for seed, (lora_, ft) in enumerate([(-0.010, -0.10), (-0.020, -0.12), (-0.015, -0.11)]):
        for method, change in (("lora", lora_), ("full_ft", ft)):
            run = write_run(runs, "table_glue", f"{method}{seed}", seed=seed, method=method)
            atomic_write_json(run / "forgetting.json", {
                "measure": "embedding_cosine", "before": 1.0, "after": 1 + change, "change": change,
                "held_out": {"task": "cola", "split": "validation", "rows": 256}})
    (finding,) = followups.claim_forgetting(runs).findings
    assert finding.verdict == v.CONSISTENT
    assert "embedding_cosine on cola" in finding.ours
    assert "full FT − LoRA: +0.0950 [" in finding.statistic and "paired t over seeds, n=3" in finding.statistic


# -- provenance: uncommitted code, absolute paths, reused copies ---------------------------------

def test_records_from_uncommitted_code_are_counted_and_listed(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "clean", rank=1)
    write_run(runs, "table_rank", "dirty1", rank=2, git_commit="abc123+dirty")
    write_run(runs, "table_targets", "dirty2", git_commit="abc123+dirty")
    _, text = build(tmp_path, runs)
    assert "Uncommitted code: 2 of 3 records were made from a tree with uncommitted changes" in text
    section = text.split("## Records from uncommitted code\n")[1].split("\n## ")[0]
    assert "- `abc123+dirty` (2): `table_rank/dirty1`, `table_targets/dirty2`" in section
    assert "clean" not in section


def test_clean_records_say_so(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "clean", rank=1)
    _, text = build(tmp_path, runs)
    assert "Uncommitted code: none; every record names a clean commit." in text


def test_report_prints_no_absolute_path(tmp_path):
    from lora_repro.records import PROJECT_ROOT

    runs = tmp_path / "runs"
    glue_dir = tmp_path / "my_machine" / "glue_data"
    write_run(runs, "table_glue", "outside", config={"task": {"data_dir": str(glue_dir)}})
    write_run(runs, "table_glue", "beside", task="rte",
              config={"task": {"data_dir": str(PROJECT_ROOT / ".." / "shared" / "data" / "glue")}})
    write_run(runs, "table_glue", "oom", task="cola", status="failed", best=None,
              error=f"FileNotFoundError: {glue_dir}/CoLA/dev.tsv not found")
    write_run(runs, "table_rank", "local_model", model=str(tmp_path / "models" / "my_bert"))
    _, text = build(tmp_path, runs)
    assert str(tmp_path) not in text and str(PROJECT_ROOT) not in text
    assert "| $GLUE_DIR |" in text  # named by its variable, as the config named it
    assert "| ../shared/data/glue |" in text  # beside the project: relative to its root
    assert "`table_glue/oom` failed" in text and "FileNotFoundError: $" not in text
    assert "…/CoLA/dev.tsv not found" in text or "…/dev.tsv not found" in text


def test_reused_copies_are_counted_apart_from_runs(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "abc", rank=8)
    write_run(runs, "table_targets", "abc", rank=8, reused_from="results/runs/table_rank/abc")
    write_run(runs, "table_rank", "def", rank=1)
    _, text = build(tmp_path, runs)
    assert "Records: 3 under" in text
    assert "Runs: 2 distinct (by run_id); 1 of the records are reused copies" in text
    assert "1 torch threads (2 runs)" in text  # the copy is not a second run on the machine
    summary = [line for line in text.splitlines() if line.startswith("| table_targets |")]
    assert summary and summary[0].endswith("| 1 | 0 |")  # reused 1, seeds 0


def test_runs_not_done_are_listed_with_their_status(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "done", rank=1)
    write_run(runs, "table_rank", "cut", rank=2, status="interrupted", best=None)
    _, text = build(tmp_path, runs)
    assert "`table_rank/cut` interrupted" in text
    assert "1 done, 1 interrupted" in text


@pytest.mark.parametrize("lora_bleu, verdict", [
    ((0.54, 0.49, 0.52), v.CONSISTENT),    # far above the untrained model
    ((0.00, 0.00, 0.00), v.CONTRADICTED),  # learned nothing: no better than the control
])
def test_claim_7_at_the_quick_tier_is_lora_against_the_zero_shot_constant(tmp_path, lora_bleu, verdict):
    runs = tmp_path / "runs"
    e2e = dict(model="smollm2_135m", task="e2e", targets=["q", "v"], rank=4)
    for seed, bleu in enumerate(lora_bleu):
        write_run(runs, "table_e2e", f"lora{seed}", best={"primary": -1.0, "bleu": bleu}, seed=seed, **e2e)
    write_run(runs, "table_e2e", "zero", best={"primary": -5.0, "bleu": 0.0}, method="zero_shot",
              **{**e2e, "targets": None, "rank": None})
    (finding,) = claims.claim_e2e_bleu(runs).findings
    assert finding.verdict == verdict and "quick tier" in finding.setting
    assert "one-sample t over seeds, n=3" in finding.statistic and "70.4 is GPT-2 M's" in finding.ours


SOURCES = [f"name : Place{i} | area : riverside | food : {food}"
           for i, food in enumerate(["Thai", "French", "Indian", "Chinese"] * 5)]
REFERENCES = [[f"Place{i} serves {s.split(' : ')[-1]} food by the riverside .",
               f"By the riverside , Place{i} has {s.split(' : ')[-1]} food ."] for i, s in enumerate(SOURCES)]


def nlg_run(root, name, method, seed, outputs):
    """An E2E run whose generations.json holds `outputs` (scored as lora_repro.train does)."""
    from lora_repro.metrics.nlg import corpus_bleu
    from lora_repro.records import GENERATIONS_FILE

    fields = dict(model="smollm2_135m", task="e2e", method=method, seed=seed,
                  targets=["q", "v"] if method == "lora" else None, rank=4 if method == "lora" else None)
    run = write_run(root, "table_e2e", name, best={"primary": -1.0, "bleu": corpus_bleu(outputs, REFERENCES)},
                    **fields)
    atomic_write_json(run / GENERATIONS_FILE, {"split": "validation", "items": [
        {"source": s, "output": o, "references": r} for s, o, r in zip(SOURCES, outputs, REFERENCES)]})
    return run


def test_claims_7_and_8_bootstrap_bleu_over_the_dev_inputs_when_runs_kept_their_outputs(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):  # LoRA: the first reference, some words dropped on a few inputs
        nlg_run(runs, f"lora{seed}", "lora", seed,
                [r[0] if (i + seed) % 4 else r[0].replace("food ", "") for i, r in enumerate(REFERENCES)])
        nlg_run(runs, f"ft{seed}", "full_ft", seed, [f"Place{i} is a place ." for i in range(len(SOURCES))])
    nlg_run(runs, "zero", "zero_shot", 0, ["Hello ! How can I help you today ?"] * len(SOURCES))
    (e2e_bleu,) = claims.claim_e2e_bleu(runs).findings
    (beats_ft,) = claims.claim_e2e_beats_ft(runs).findings
    for finding in (e2e_bleu, beats_ft):
        assert finding.verdict == v.CONSISTENT
        assert "paired bootstrap over 20 dev examples and seeds" in finding.statistic
    assert "(3 vs 1)" in e2e_bleu.statistic and "(3 vs 3)" in beats_ft.statistic
    assert "empty outputs" not in e2e_bleu.ours


def test_claim_7_counts_the_untrained_models_empty_outputs(tmp_path):
    runs = tmp_path / "runs"
    nlg_run(runs, "lora0", "lora", 0, [r[0] for r in REFERENCES])
    nlg_run(runs, "zero", "zero_shot", 0, [""] * 15 + ["Hello !"] * 5)
    (finding,) = claims.claim_e2e_bleu(runs).findings
    assert "zero-shot 0.0 (n=1), empty outputs 15 of 20" in finding.ours


def test_git_commit_is_dirty_for_code_changes_but_not_for_results(tmp_path, monkeypatch):
    """A sweep that starts while `make table-*` rewrites results/ still names a clean commit."""
    import subprocess

    from lora_repro import records

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("old\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD")
    monkeypatch.setattr(records, "PROJECT_ROOT", tmp_path)
    assert records.git_commit() == head
    (tmp_path / "results" / "table.md").write_text("new\n")
    (tmp_path / "results" / "record.json").write_text("{}\n")
    assert records.git_commit() == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert records.git_commit() == head + "+dirty"


def test_coverage_counts_the_runs_of_each_commands_sweep(tmp_path, monkeypatch):
    from analysis import coverage
    from lora_repro import plan
    from lora_repro.records import atomic_write_json

    extra = ["method=lora", "task=sst2", "train.lr=1.0e-3,2.0e-3", "train.epochs=5"]
    grid = coverage.Artefact("the grid", "make lr-grid", "lr_grid", extra)
    monkeypatch.setattr(coverage, "ARTEFACTS", [grid, coverage.ARTEFACTS[-1]])
    runs = tmp_path / "runs"
    def row():
        return coverage.coverage_frame(str(runs)).iloc[0]

    assert row()["quick tier"] == "not run: 0 of 2 runs"
    assert "TIER=paper LAUNCHER=slurm" in row()["paper tier"]
    first = plan.jobs(["experiment=lr_grid", "tier=quick", f"run_root={runs}", *extra])[0]
    atomic_write_json(Path(first["run_dir"]) / "record.json", {"status": "done"})
    assert row()["quick tier"] == "partly: 1 of 2 runs done"
    assert coverage.status_text(2, 2) == "regenerates: all 2 runs done"
    text = coverage.coverage_section(str(runs))
    assert "| the grid" in text and "forgetting" in text
