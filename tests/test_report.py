"""analysis.report on synthetic records and adapters: every claim listed with a verdict decided by
its rule, "not yet run" when the runs are absent, and the tables and figures embedded."""
import json

import pytest
import torch
import transformers

from analysis import report
from analysis.cli import main
from lora_repro import lora
from lora_repro.records import write_record

VERDICTS = {report.REPRODUCED, report.NOT_REPRODUCED, report.NOT_YET_RUN}


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


def build(tmp_path, runs, bench=None):
    out = tmp_path / "results" / "REPORT.md"
    report.build_report(runs, out, tmp_path / "results" / "tables",
                        tmp_path / "results" / "figures", bench or tmp_path / "no_bench")
    return out, out.read_text()


def test_without_records_every_claim_is_not_yet_run(tmp_path):
    found = report.claims(tmp_path / "runs", tmp_path / "bench")
    assert len(found) == 7
    assert all(claim.verdict == report.NOT_YET_RUN for claim in found)
    out, text = build(tmp_path, tmp_path / "runs")
    for claim in found:
        assert claim.statement in text
    assert text.count("**Verdict: not yet run.**") == 7
    assert "reproduced |" not in text.replace("not reproduced |", "")  # never without data
    for section in ("## Claims at a glance", "## What produced it", "## Tables", "### table6_rank",
                    "## Section 7 figures", "## Table 7", "## Claims", "## The paper's numbers"):
        assert section in text
    assert "![table6_rank](figures/table6_rank.png)" in text  # relative to the report


def test_rank_and_budget_verdicts_follow_their_rules(tmp_path):
    runs = tmp_path / "runs"
    for seed, (one, eight) in enumerate([(0.850, 0.855), (0.860, 0.865)]):
        write_run(runs, "table_rank", f"r1s{seed}", one, rank=1, seed=seed)
        write_run(runs, "table_rank", f"r8s{seed}", eight, rank=8, seed=seed)
    for seed in (0, 1):  # quick: {q,v} clearly ahead; paper tier: behind
        write_run(runs, "table_targets", f"qs{seed}", 0.80 + seed / 100, targets=["q"], seed=seed)
        write_run(runs, "table_targets", f"qvs{seed}", 0.85 + seed / 100, rank=4, seed=seed)
        write_run(runs, "table_targets", f"pqs{seed}", 0.90, targets=["q"], seed=seed,
                  tier="paper", model="roberta_base", task="mnli")
        write_run(runs, "table_targets", f"pqvs{seed}", 0.88, rank=4, seed=seed,
                  tier="paper", model="roberta_base", task="mnli")
    rank_one = report.claim_rank_one(runs)
    assert rank_one.verdict == report.REPRODUCED
    assert "gap 0.50 points" in rank_one.findings[0].ours
    budget = report.claim_qv_beats_q(runs)
    verdicts = {f.setting: f.verdict for f in budget.findings}
    assert verdicts == {"all-MiniLM-L6-v2, SST-2, quick tier": report.REPRODUCED,
                        "RoBERTa-base, MNLI, paper tier": report.NOT_REPRODUCED}
    assert "reproduced (all-MiniLM-L6-v2, SST-2, quick tier)" in budget.verdict


def test_a_lone_rank_is_not_yet_run(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "table_rank", "r8", rank=8)
    (finding,) = report.claim_rank_one(runs).findings
    assert finding.verdict == report.NOT_YET_RUN


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


def test_subspace_claims_compute_phi_and_amplification(subspace_runs):
    top = report.claim_top_direction(subspace_runs)
    (finding,) = top.findings
    assert finding.verdict == report.REPRODUCED
    assert "ΔWq phi(1,1) = 1.000" in finding.ours and "E[phi(1,1)] = 1/64" in finding.ours
    amplification = report.claim_amplification(subspace_runs)
    (finding,) = amplification.findings
    assert finding.verdict in (report.REPRODUCED, report.NOT_REPRODUCED)
    assert "r=8 (layer 1 of 2)" in finding.ours and "r=64" in finding.ours
    assert "factor" in finding.ours


def test_latency_claim_reads_the_benchmark(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()

    def write(name, merged):
        rows = [{"variant": v, "precision": "fp32", "vs_base": x}
                for v, x in (("base", 1.0), ("merged", merged), ("unmerged", 1.3))]
        (bench / name).write_text(json.dumps({
            "model": "minilm_l6", "batch": 32, "seq": 64, "inference": rows,
            "machine": {"device": "cpu", "processor": "x86_64"}}))

    write("a.json", 1.004)
    claim = report.claim_merge_latency(bench)
    assert claim.verdict == report.REPRODUCED
    assert "merged/base 1.004 (unmerged/base 1.300)" in claim.findings[0].ours
    write("b.json", 1.2)
    assert {f.verdict for f in report.claim_merge_latency(bench).findings} == {
        report.REPRODUCED, report.NOT_REPRODUCED}


def test_report_cli_lists_every_claim_with_a_verdict(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "table_glue", "lora", 0.85)
    write_run(runs, "table_glue", "ft", 0.86, method="full_ft", targets=None, rank=None)
    out = tmp_path / "REPORT.md"
    assert main(["report", "--out", str(out), "--runs-dir", str(runs), "--tables-dir",
                 str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"),
                 "--bench-dir", str(tmp_path / "bench")]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    verdicts = [line.split("**Verdict: ")[1].rstrip(".*") for line in text.splitlines()
                if "**Verdict: " in line]
    assert len(verdicts) == 7 and set(verdicts) <= VERDICTS
    assert "LoRA − FT per task: SST-2 -1.0" in text  # more than 0.5 points behind
    assert verdicts[5] == report.NOT_REPRODUCED
    assert "CPU x86_64, 2 cores, 1 torch threads (2 runs)" in text


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
