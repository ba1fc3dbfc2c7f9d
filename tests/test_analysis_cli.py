"""`analyze similarity / amplification / figures` on tiny runs of ours and on the authors' checkpoint;
the import flow (lora_repro never imports analysis when imported; analysis reads records only through
lora_repro.records)."""
import ast
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers

import analysis
import lora_repro
from analysis import figures as figs
from analysis.cli import main
from lora_repro import lora

AUTHORS_CHECKPOINT = "checkpoints/roberta_base_lora_mnli.bin"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A random-init 2-layer BERT saved as the base, and three LoRA runs on it (q, v): r=2 seed 0,
    r=8 seeds 0 and 1, with B randomised to stand in for training (B = 0 at init)."""
    root = tmp_path_factory.mktemp("runs")
    base = root / "base"
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(base)
    paths = {}
    for rank, seed in [(2, 0), (8, 0), (8, 1)]:
        model = transformers.AutoModel.from_pretrained(base)
        lora.inject(model, targets=("q", "v"), rank=rank, alpha=rank, seed=seed)
        generator = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for wrapper in lora.wrappers(model).values():
                for B in wrapper.lora_B.values():
                    B.copy_(0.1 * torch.randn(B.shape, generator=generator))
        run = root / "runs" / "section7" / f"r{rank}_seed{seed}"
        lora.save_adapter(model, run)
        record = {"model": str(base), "task": "sst2", "targets": ["q", "v"], "rank": rank,
                  "alpha": rank, "seed": seed, "tier": "test", "status": "done"}
        (run / "record.json").write_text(json.dumps(record))
        paths[(rank, seed)] = str(run)
    return root, paths


def assert_written(*paths):
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000, path


def test_similarity_of_two_ranks(runs, tmp_path, capsys):
    _, paths = runs
    csv, stem = tmp_path / "phi.csv", tmp_path / "sim"
    assert main(["similarity", paths[(2, 0)], paths[(8, 0)], "--csv", str(csv),
                 "--figure", str(stem)]) == 0
    summary = pd.read_csv(csv)
    assert list(zip(summary["layer"], summary["target"])) == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    assert (summary["r1"] == 2).all() and (summary["r2"] == 8).all()
    assert summary["phi mean"].between(0, 1).all()
    assert "sst2 r=2 seed 0 [test]" in capsys.readouterr().out
    assert_written(stem.with_suffix(".png"), stem.with_suffix(".pdf"))


def test_amplification_writes_table7_beside_the_paper(runs, tmp_path):
    _, paths = runs
    assert main(["amplification", paths[(2, 0)], paths[(8, 0)], "--out-dir", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "table7_amplification.csv")
    assert list(table["source"]) == ["paper", "paper", "ours", "ours"]
    ours = table[table["source"] == "ours"]
    assert list(ours["rank"]) == [2, 8] and set(ours["layer"]) == {"1 of 2"}
    assert (ours["factor"] - ours["norm_delta"] / ours["proj_delta"]).abs().max() < 1e-9
    assert ours["chance_factor"].notna().all() and table["chance_factor"].head(2).isna().all()
    assert "| sst2 | 1 of 2 | q | 2 | test |" in (
        tmp_path / "table7_amplification.md").read_text()


def test_figures_all_draws_every_figure_from_the_runs(runs, tmp_path):
    root, _ = runs
    out, tables = tmp_path / "figures", tmp_path / "tables"
    assert main(["figures", "all", "--runs-dir", str(root / "runs"), "--out-dir", str(out),
                 "--tables-dir", str(tables)]) == 0
    for kind in ("fig3", "fig4", "fig6", "fig7", "fig8"):
        assert_written(out / f"{kind}_base_sst2_test.png", out / f"{kind}_base_sst2_test.pdf")
    assert_written(out / "spectrum_ranks_base_sst2_test.png")
    assert (tables / "table7_amplification.tex").is_file()


def test_the_control_is_phi_of_the_initial_factors(runs):
    """Figs. 3/4/6/7's control: phi of the A's each adapter started from, recomputed from its
    seed; with a stream per adapter, r=2's first direction is not r=8's (no shared rows)."""
    from analysis.inputs import load_adapter
    from analysis.subspace import similarity

    _, paths = runs
    low, high = load_adapter(paths[(2, 0)]), load_adapter(paths[(8, 0)])
    start = figs.initial_adapter(low)
    assert start.labels["initial"] and "A₀ (init)" in figs.axis_label("i", start, 0, "q", "right")
    initial = lora.initial_factors(paths[(2, 0)])
    torch.testing.assert_close(start.A(0, "q"), initial[(0, "q")])
    grids, *_ = figs.control_grids(high, low, [(0, "q"), (1, "v")], "right")
    expected = similarity(lora.initial_factors(paths[(8, 0)])[(1, "v")], initial[(1, "v")])
    torch.testing.assert_close(grids[(1, "v")], expected)
    assert float(grids[(0, "q")][0, 0]) < 0.9  # not the artefact of shared first rows (phi = 1)
    assert figs.control_grids(high, low, [(0, "q")], "left") is None  # B starts at 0: no control


@pytest.mark.parametrize("argv, message", [
    (["similarity", "{missing}"], "no such file or directory"),
    (["similarity", "{r8}", "--targets", "x"], "unknown target 'x': valid targets are q, k, v, o"),
    (["similarity", "{r8}", "--targets", "k"], "target 'k' is not adapted in"),
    (["similarity", "{r8}", "--layers", "2"], "layer 2 out of range for"),
    (["figures", "fig4", "{r8}", "{r2}"], "rank mismatch at layer 0 target 'q': r=8"),
    (["figures", "fig3", "{r8}"], "fig3 needs two ranks: got 1 adapter(s)"),
    (["amplification", "{r8}", "--base", "no_such_model"], "unknown model 'no_such_model'"),
])
def test_bad_input_stops_with_one_clear_message(runs, tmp_path, capsys, argv, message):
    _, paths = runs
    values = {"missing": str(tmp_path / "nope"), "r8": paths[(8, 0)], "r2": paths[(2, 0)]}
    assert main([arg.format(**values) for arg in argv]) == 2
    assert message in capsys.readouterr().err


def test_authors_checkpoint(shared_data, tmp_path, capsys):
    checkpoint = str(shared_data / AUTHORS_CHECKPOINT)
    stem = tmp_path / "authors_q_vs_v"
    assert main(["similarity", checkpoint, "--against-target", "v", "--layers", "0", "11",
                 "--figure", str(stem)]) == 0
    out = capsys.readouterr().out
    assert "roberta_base_lora_mnli.bin r=8" in out and "ΔWv" in out
    assert_written(stem.with_suffix(".png"))
    # its base RoBERTa weights are not available offline: amplification says so
    assert main(["amplification", checkpoint, "--alpha", "16"]) == 2
    assert "does not record its base model" in capsys.readouterr().err
    assert main(["amplification", checkpoint]) == 2
    assert "pass alpha=" in capsys.readouterr().err


def module_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not those imported inside a function)."""
    tree = ast.parse(path.read_text())
    in_functions = {id(node) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for node in ast.walk(f)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in in_functions:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_analysis_when_imported():
    for path in Path(lora_repro.__file__).parent.rglob("*.py"):
        imported = module_level_imports(path)
        assert not {n for n in imported if n == "analysis" or n.startswith("analysis.")}, path


def test_analysis_reads_records_only_through_lora_repro_records():
    for path in Path(analysis.__file__).parent.rglob("*.py"):
        assert not re.search(r"""["']record\.json["']\s*\)""", path.read_text()), path
