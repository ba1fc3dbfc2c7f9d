"""analysis.tables on synthetic records: ours as mean ± std over seeds, missing cells missing,
runs not done (failed, running, interrupted) counted, the paper's numbers beside ours and
labelled, every file written by the one renderer."""
import math

import pandas as pd
import pytest

from analysis import tables
from analysis.cli import main
from analysis.tables.formats import markdown
from analysis.tables.paper import PAPER_DIR, paper_numbers
from analysis.tables.table7_amplification import table7
from lora_repro.records import write_record


def write_run(root, experiment, name, status="done", primary=None, best=None, **fields):
    """One record.json as lora_repro.train writes it (only the fields the tables read)."""
    record = {
        "run_id": name, "experiment": experiment, "status": status,
        "error": "RuntimeError: out of memory" if status == "failed" else None,
        "model": "minilm_l6", "task": "sst2", "method": "lora", "targets": ["q", "v"],
        "rank": 8, "alpha": 8, "seed": 0, "tier": "quick",
        "parameters": {"trainable": 150_000, "total": 22_700_000, "lora": 73_728},
        "best": best if best is not None else (
            {"primary": primary, "accuracy": primary} if status == "done" else None),
        "device": {"device": "cpu", "cpu": "x86_64", "cpu_count": 2, "torch_threads": 1},
        "hyperparameters": {"train_limit": 8000, "eval_limit": None, "epochs": 2,
                            "precision": "bf16"},
        "git_commit": "0123abc",
    }
    record.update(fields)
    write_record(root / experiment / name, record)


def render(runs, tmp_path, experiment, tier=None):
    (table,) = tables.render(experiment, runs, tmp_path / "tables", tmp_path / "figures", tier)
    return table


def row_of(frame, **labels):
    match = frame
    for column, value in labels.items():
        match = match[match[column] == value]
    assert len(match) == 1, (labels, frame)
    return match.iloc[0]


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "table_rank", "qv1s0", targets=["v", "q"], rank=1, seed=0, primary=0.80)
    write_run(root, "table_rank", "qv1s1", targets=["q", "v"], rank=1, seed=1, primary=0.84)
    write_run(root, "table_rank", "qv8s0", targets=["q", "v"], rank=8, seed=0, primary=0.85)
    write_run(root, "table_rank", "q64s0", targets=["q"], rank=64, seed=0, status="failed")
    write_run(root, "table_rank", "q64s1", targets=["q"], rank=64, seed=1, status="failed")
    write_run(root, "table_rank", "q4s0", targets=["q"], rank=4, seed=0, status="running")
    write_run(root, "table_rank", "p1", targets=["q", "v"], rank=1, seed=0, primary=0.9,
              tier="paper", model="roberta_base", task="mnli")
    return root


def test_rank_cells_are_mean_and_std_of_the_seeds(runs, tmp_path):
    table = render(runs, tmp_path, "table_rank", tier="quick")
    row = row_of(table.frame, source="ours", weights="{q,v}")
    std = pd.Series([80.0, 84.0]).std()  # sample std (n - 1), in points
    assert row["r=1"] == f"82.0 ± {std:.1f} (n=2)"
    assert row["r=8"] == "85.0 (n=1)"  # one seed: no spread to show
    ours = table.tidy[(table.tidy["source"] == "ours") & (table.tidy["targets"] == "q,v")
                      & (table.tidy["rank"] == 1)].iloc[0]
    assert math.isclose(ours["mean"], 82.0) and math.isclose(ours["std"], std)
    assert ours["n"] == 2 and ours["seeds"] == "0 1"


def test_a_cell_mixing_two_training_settings_says_so(runs, tmp_path):
    """Records of an older protocol (2 epochs) beside newer ones (3 epochs) in one cell: flagged."""
    write_run(runs, "table_rank", "qv8s1", targets=["q", "v"], rank=8, seed=1, primary=0.86,
              hyperparameters={"train_limit": 8000, "eval_limit": None, "epochs": 3,
                               "precision": "bf16", "num_threads": 1})
    row = row_of(render(runs, tmp_path, "table_rank", tier="quick").frame, source="ours", weights="{q,v}")
    assert row["r=8"].endswith("(n=2; 2 different training settings)")
    assert row["r=1"] == f"82.0 ± {pd.Series([80.0, 84.0]).std():.1f} (n=2)"  # alike: no flag


def test_missing_cells_are_missing_and_failed_runs_counted(runs, tmp_path):
    table = render(runs, tmp_path, "table_rank", tier="quick")
    q = row_of(table.frame, source="ours", weights="{q}")
    assert q["r=64"] == "— (2 failed)"
    assert q["r=4"] == "— (1 running)"
    assert q["r=2"] == "—"  # never run: missing, not filled in
    assert row_of(table.frame, source="ours", weights="{q,k,v,o}")["r=1"] == "—"
    assert "2 failed" in table.notes[0]


def test_interrupted_runs_are_counted_not_dropped(runs, tmp_path):
    write_run(runs, "table_rank", "qv64s0", targets=["q", "v"], rank=64, status="interrupted")
    write_run(runs, "table_rank", "qv64s1", targets=["q", "v"], rank=64, seed=1, status="running")
    write_run(runs, "table_rank", "qv8s1", targets=["q", "v"], rank=8, seed=1, status="interrupted")
    table = render(runs, tmp_path, "table_rank", tier="quick")
    qv = row_of(table.frame, source="ours", weights="{q,v}")
    assert qv["r=64"] == "— (1 running, 1 interrupted)"
    assert qv["r=8"] == "85.0 (n=1; 1 interrupted)"  # the finished seed still makes the number
    assert "0 finished" not in table.notes[0]
    assert "2 running, 2 failed, 2 interrupted runs" in table.notes[0]
    ours = table.tidy[(table.tidy["source"] == "ours") & (table.tidy["targets"] == "q,v")]
    assert ours["interrupted"].sum() == 2 and ours["running"].sum() == 1


def test_tier_filter_and_labels(runs, tmp_path):
    quick = render(runs, tmp_path, "table_rank", tier="quick")
    assert set(quick.frame.loc[quick.frame["source"] == "ours", "tier"]) == {"quick"}
    both = render(runs, tmp_path, "table_rank")
    ours = both.frame[both.frame["source"] == "ours"]
    assert set(zip(ours["model"], ours["task"], ours["tier"])) == {
        ("all-MiniLM-L6-v2", "SST-2", "quick"), ("RoBERTa-base", "MNLI", "paper")}
    assert row_of(ours, model="RoBERTa-base", weights="{q,v}")["r=1"] == "90.0 (n=1)"


def test_paper_columns_are_present_and_labelled(runs, tmp_path):
    rank = render(runs, tmp_path, "table_rank")
    paper = rank.frame[rank.frame["source"] == "paper"]
    assert set(paper["model"]) == {"GPT-3 175B"} and set(paper["task"]) == {"WikiSQL", "MultiNLI"}
    assert row_of(paper, task="WikiSQL", weights="{q,v}")["r=1"] == "73.4 ± 0.5"
    assert row_of(paper, task="MultiNLI", weights="{q,k,v,o}")["r=64"] == "91.4 ± 0.1"
    text = rank.paths[0].read_text()
    assert "GPT-3 175B on WikiSQL and MultiNLI" in text and "x100" in text

    budget = render(runs, tmp_path, "table_targets")
    assert "paper: GPT-3 175B, WikiSQL" in budget.frame.columns
    qv = row_of(budget.frame, weights="{q,v}", r="4")
    assert qv["paper: GPT-3 175B, MultiNLI"] == "91.3 ± 0.1"
    assert len(budget.frame) == 8  # the seven budget configurations, run or not, and the control
    assert budget.frame["weights"].iloc[-1] == "none (head only: control)"


def test_head_only_runs_are_the_control_of_tables_5_and_6(tmp_path):
    root = tmp_path / "runs"
    for experiment in ("table_rank", "table_targets"):
        write_run(root, experiment, "qv", targets=["q", "v"], rank=4, primary=0.85)
        for seed, primary in ((0, 0.70), (1, 0.74)):
            write_run(root, experiment, f"head{seed}", method="head_only", targets=None, rank=None,
                      seed=seed, primary=primary, parameters={"trainable": 770, "total": 22_700_000,
                                                              "method": 0})
    rank = render(root, tmp_path, "table_rank")
    ours = rank.frame[rank.frame["source"] == "ours"]
    std = pd.Series([70.0, 74.0]).std()
    assert set(ours["head only (control)"]) == {f"72.0 ± {std:.1f} (n=2)"}  # beside every row
    assert row_of(ours, weights="{q,v}")["r=4"] == "85.0 (n=1)"
    assert set(ours["weights"]) == {"{q}", "{q,v}", "{q,k,v,o}"}  # no LoRA row made of the control
    control = rank.tidy[rank.tidy["method"] == "head_only"].iloc[0]
    assert control["mean"] == pytest.approx(72.0) and control["n"] == 2
    budget = render(root, tmp_path, "table_targets")
    row = row_of(budget.frame, weights="none (head only: control)")
    assert row["ours: all-MiniLM-L6-v2, SST-2 [quick]"] == f"72.0 ± {std:.1f} (n=2)"
    assert row["# LoRA params (all-MiniLM-L6-v2)"] == "0"


def test_rslora_rows_are_split_by_scaling_and_shown_beside_the_standard_ones(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "table_rank", f"std{seed}", rank=64, seed=seed, primary=0.80 + seed / 100,
                  method_config={"name": "lora", "scaling": "standard"})
        write_run(root, "table_rank", f"rs{seed}", rank=64, seed=seed, primary=0.90 + seed / 100,
                  method_config={"name": "lora", "scaling": "rslora"})
    write_run(root, "table_rank", "old", rank=1, primary=0.5)  # no method_config: standard
    table = render(root, tmp_path, "table_rank")
    ours = table.frame[table.frame["source"] == "ours"]
    qv = ours[ours["weights"] == "{q,v}"]
    assert list(qv["scaling"]) == ["α/r", "α/√r (rsLoRA)"]  # the rsLoRA row right below
    assert row_of(qv, scaling="α/r")["r=64"].startswith("80.5 ± 0.7 (n=2)")
    assert row_of(qv, scaling="α/r")["r=1"] == "50.0 (n=1)"
    assert row_of(qv, scaling="α/√r (rsLoRA)")["r=64"].startswith("90.5 ± 0.7 (n=2)")
    assert row_of(qv, scaling="α/√r (rsLoRA)")["r=1"] == "—"
    assert set(table.tidy.loc[table.tidy["source"] == "ours", "scaling"]) == {"standard", "rslora"}
    # rsLoRA ran on {q,v} only: the other weight sets get no empty rsLoRA row
    assert list(ours.loc[ours["weights"] == "{q}", "scaling"]) == ["α/r"]
    assert r"$\alpha$/$\sqrt{r}$ (rsLoRA)" in table.paths[1].read_text()
    assert table.figures[0].stat().st_size > 1000
    plain = render(tmp_path / "runs_plain", tmp_path, "table_rank")
    assert "α/√r (rsLoRA)" not in set(plain.frame["scaling"])


def test_every_file_is_written_even_without_runs(tmp_path):
    written = tables.render("all", tmp_path / "none", tmp_path / "tables", tmp_path / "figures")
    assert [t.name for t in written] == ["table2_glue", "table3_e2e", "table5_targets",
                                         "table6_rank", "table7_amplification"]
    for table in written:
        for path in table.paths:
            assert path.is_file() and path.stat().st_size > 100, path
        assert [p.suffix for p in table.paths] == [".md", ".tex", ".csv"]
    for name in ("table6_rank.png", "table5_targets.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000
    rank = next(t for t in written if t.name == "table6_rank")
    assert "not yet run" in rank.paths[0].read_text()
    assert (rank.frame["source"] == "paper").all()  # only the paper's rows: nothing invented


def test_sweep_plot_is_written(runs, tmp_path):
    table = render(runs, tmp_path, "table_rank")
    (figure,) = table.figures
    assert figure == tmp_path / "figures" / "table6_rank.png" and figure.stat().st_size > 1000


def test_glue_keeps_models_apart_and_gives_the_median(tmp_path):
    root = tmp_path / "runs"
    for seed, value in enumerate([0.80, 0.82, 0.90]):
        write_run(root, "table_glue", f"l{seed}", seed=seed, primary=value)
    write_run(root, "table_glue", "ft0", method="full_ft", targets=None, rank=None,
              task="cola", primary=0.41, parameters={"trainable": 22_700_000, "total": 22_700_000})
    table = render(root, tmp_path, "table_glue")
    ours = table.frame[table.frame["source"] == "ours"]
    lora_mean = row_of(ours, method="LoRA", **{"tier / aggregate": "quick, mean ± std over seeds"})
    lora_median = row_of(ours, method="LoRA", **{"tier / aggregate": "quick, median over seeds"})
    assert lora_mean["SST-2"].startswith("84.0 ± 5.3 (n=3)")
    assert lora_median["SST-2"] == "82.0 (n=3)"
    assert lora_mean["# trainable"] == "73,728" and lora_mean["Avg."] == "—"
    assert row_of(ours, method="FT", **{"tier / aggregate": "quick, mean ± std over seeds"})[
        "CoLA"] == "41.0 (n=1)"
    paper = table.frame[table.frame["source"] == "paper"]
    roberta_lora = row_of(paper, model="RoBERTa-base", method="LoRA")
    assert roberta_lora["MNLI"] == "87.5 ± 0.3" and roberta_lora["Avg."] == "87.2"
    assert roberta_lora["# trainable"] == "0.3M"
    assert "all-MiniLM-L6-v2" not in set(paper["model"])


def test_glue_names_runs_started_from_another_task_and_flags_a_cell_mixing_starts(tmp_path):
    """RTE started from the MRPC run (the quick tier's stand-in for the paper's MNLI stage)."""
    root = tmp_path / "runs"
    mrpc = {"task": "mrpc", "run_id": "m0", "run_dir": "results/runs/table_glue/m0"}
    write_run(root, "table_glue", "r0", task="rte", seed=0, primary=0.60, init_from=mrpc)
    write_run(root, "table_glue", "r1", task="rte", seed=1, primary=0.62, init_from=mrpc)
    write_run(root, "table_glue", "s0", task="sst2", seed=0, primary=0.84)
    table = render(root, tmp_path, "table_glue")
    assert [n for n in table.notes if "started from" in n] == [
        "Ours (quick): RTE LoRA started from the same method's MRPC run of the same seed (its "
        "weights, a fresh task head), as the paper starts MRPC, RTE and STS-B from MNLI (Appendix "
        "D.1); the other cells start from the pretrained model."]
    write_run(root, "table_glue", "r2", task="rte", seed=2, primary=0.53)  # from the pretrained model
    lora = row_of(render(root, tmp_path, "table_glue").frame, source="ours", method="LoRA",
                  **{"tier / aggregate": "quick, mean ± std over seeds"})
    assert lora["RTE"].endswith("(n=3; 2 different training settings)")
    assert lora["SST-2"] == "84.0 (n=1)"
    write_run(root, "table_glue", "f0", task="rte", method="full_ft", targets=None, rank=None,
              primary=0.55, init_from={"task": None, "run_id": None, "run_dir": "some/folder"})
    notes = render(root, tmp_path, "table_glue").notes
    assert any(n.startswith("Ours (quick): RTE FT started from a run folder given by init_from (")
               for n in notes)


def test_e2e_scales_like_the_paper(tmp_path):
    root = tmp_path / "runs"
    for seed, bleu in enumerate([0.70, 0.72]):
        write_run(root, "table_e2e", f"e{seed}", model="gpt2_medium", task="e2e", rank=4,
                  seed=seed, tier="paper",
                  best={"primary": -1.2, "eval_loss": 1.2, "bleu": bleu, "nist": 8.5,
                        "meteor": 0.46, "rouge_l": 0.71, "cider": 2.5})
    table = render(root, tmp_path, "table_e2e")
    ours = row_of(table.frame, source="ours")
    assert ours["BLEU"] == f"71.0 ± {pd.Series([70.0, 72.0]).std():.1f} (n=2)"
    assert ours["NIST"] == "8.50 ± 0.00 (n=2)" and ours["MET"] == "46.0 ± 0.0 (n=2)"
    paper_lora = row_of(table.frame, source="paper (Table 3)", model="GPT-2 M", method="LoRA")
    assert paper_lora["BLEU"] == "70.4 ± 0.1" and paper_lora["NIST"] == "8.85 ± 0.02"
    bleu = table.tidy[(table.tidy["source"] == "ours") & (table.tidy["metric"] == "bleu")].iloc[0]
    assert bleu["model"] == "gpt2_medium" and math.isclose(bleu["mean"], 71.0)
    assert not table.figures and "Table 18" not in set(table.frame["source"])


def test_webnlg_rows_carry_table_14s_seen_and_unseen_bleu(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "table_e2e", "w0", model="smollm2_135m", task="webnlg", rank=4,
              best={"primary": -1.0, "bleu": 0.40, "bleu_seen": 0.50, "bleu_unseen": 0.30,
                    "nist": 7.0, "meteor": 0.3, "rouge_l": 0.5, "cider": 2.0})
    frame = render(root, tmp_path, "table_e2e").frame
    ours = row_of(frame, source="ours")
    assert (ours["BLEU"], ours["BLEU S"], ours["BLEU U"]) == ("40.0 (n=1)", "50.0 (n=1)", "30.0 (n=1)")
    assert {"WebNLG (S)", "WebNLG (U)", "WebNLG (A)"} <= set(frame["task"])  # Table 14 beside it


def test_e2e_rank_sweep_shows_table18_and_its_plot(tmp_path):
    root = tmp_path / "runs"
    for rank, bleu in [(1, 0.68), (4, 0.70)]:
        write_run(root, "table_e2e", f"r{rank}", model="gpt2_medium", task="e2e", rank=rank,
                  tier="paper", best={"primary": -1.2, "bleu": bleu, "nist": 8.5,
                                      "meteor": 0.46, "rouge_l": 0.71, "cider": 2.5})
    table = render(root, tmp_path, "table_e2e")
    table18 = table.frame[table.frame["source"] == "paper (Table 18)"]
    assert row_of(table18, r="4")["MET"] == "46.89"  # printed 0.4689, shown x100 like Table 3
    assert row_of(table18, r="1")["val loss"] == "1.23"
    assert table.figures[0].name == "table18_e2e_rank.png"
    assert table.figures[0].stat().st_size > 1000


def test_table7_is_written_by_the_one_renderer(tmp_path):
    row = {"source": "ours", "model": "minilm_l6", "task": "sst2", "layer": "3 of 6", "target": "q",
           "rank": 8, "tier": "quick", "proj_delta": 0.69, "proj_W": 12.2, "proj_random": 0.67,
           "norm_W": 31.4, "norm_delta": 1.82, "factor": 2.64, "reference": "runs/x"}
    table = table7([row], ["a note"])
    text = markdown(table)
    assert text.startswith("**Table 7: ||U^T W V^T||_F")
    assert "| ours | minilm_l6 | sst2 | 3 of 6 | q | 8 | quick | 0.69 | 12.2 |" in text
    assert text.endswith("- a note\n")
    (md, tex, csv) = tables.write(table, tmp_path).paths
    assert r"$\|\Delta W\|_F$" in tex.read_text() and r"{lllllllrrrrrrrr}" in tex.read_text()
    assert list(pd.read_csv(csv)["reference"])[-1] == "runs/x"  # the csv keeps what the md leaves out


def test_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(tables.TableError, match="valid experiments are table_glue, table_e2e"):
        tables.render("table_nope", tmp_path)
    assert main(["tables", "table_nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown experiment 'table_nope'" in capsys.readouterr().err
    assert main(["tables", "table_rank", "--tier", "huge", "--runs-dir", str(tmp_path)]) == 2


def test_cli_writes_the_tables(runs, tmp_path, capsys):
    out = tmp_path / "cli_tables"
    assert main(["tables", "table_rank", "--runs-dir", str(runs), "--out-dir", str(out),
                 "--figures-dir", str(tmp_path / "cli_figures")]) == 0
    assert (out / "table6_rank.tex").read_text().startswith(r"\begin{table}")
    assert "table6_rank: wrote" in capsys.readouterr().out


def test_paper_numbers_are_consistent_and_labelled():
    glue = pd.read_csv(PAPER_DIR / "table2_glue.csv", keep_default_na=False)
    for _, group in glue.groupby(["paper_model", "method", "setup", "trainable_params_m"]):
        tasks = group[group["task"] != "avg"]["value"].astype(float)
        assert len(tasks) == 8
        assert abs(tasks.mean() - float(group[group["task"] == "avg"]["value"].iloc[0])) < 0.051
    for name in ("table2_glue", "table3_e2e", "table5_targets", "table6_rank",
                 "table13_14_dart_webnlg", "table18_e2e_rank"):
        paper = paper_numbers(name)
        assert (paper["paper_model"] != "").all() and (paper["dataset"] != "").all(), name
        assert paper["value"].astype(float).notna().all(), name
    assert set(paper_numbers("table5_targets")["paper_model"]) == {"GPT-3 175B"}
    assert len(paper_numbers("table6_rank")) == 2 * 3 * 5
