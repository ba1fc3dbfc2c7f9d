"""scripts/latency.py (Table 1, Figure 5) on tiny GPT-2 with tiny settings: its files, the paper's
numbers beside ours, the variants sharing the base model's weights, the sizes nearest a |Θ|."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "latency.py"
spec = importlib.util.spec_from_file_location("latency_script", SCRIPT)
latency = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latency)


def test_a_tiny_run_writes_table1_and_figure5(tmp_path):
    argv = ["--model", "tiny_gpt2", "--settings", "2x8", "1x4", "--trials", "3", "--warmup", "1",
            "--fig-batches", "1", "2", "--fig-seqs", "8", "--fig-bottlenecks", "2", "8", "--fig-trials", "2",
            "--out-dir", str(tmp_path)]
    assert latency.main(argv) == 0
    md = (tmp_path / "tables" / "table1_latency.md").read_text()
    assert "1449.4 ± 0.8" in md and "25.8 ± 2.2 (+30.3%)" in md and "ours 2x8" in md and "ours 1x4" in md
    assert "reduced batch x sequence settings" in md
    assert (tmp_path / "tables" / "table1_latency.tex").read_text().startswith(r"\begin{table}")
    tidy = pd.read_csv(tmp_path / "tables" / "table1_latency.csv")
    ours = tidy[tidy["source"] == "ours"]
    assert len(ours) == 2 * 4 and set(ours["variant"]) == set(latency.VARIANTS)
    assert (ours["trials"] == 3).all() and (ours[ours["variant"] == "base"]["slowdown_pct"] == 0).all()
    paper = tidy[tidy["source"] == "paper"]
    assert sorted(paper["slowdown_pct"].dropna()) == [2.2, 3.0, 5.0, 8.4, 20.7, 30.3]
    fig = pd.read_csv(tmp_path / "figures" / "fig5_adapter_latency.csv")
    assert len(fig) == 2 * 2 * 2  # adapters x bottlenecks x batch sizes
    assert (tmp_path / "figures" / "fig5_adapter_latency.png").stat().st_size > 0


def test_variants_share_the_base_weights_and_change_nothing_at_init():
    base = latency.build_random("tiny_gpt2", head="causal_lm", seed=0).eval()
    ids = torch.randint(100, (2, 6))
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        for name in latency.VARIANTS:
            model = latency.variant(base, "tiny_gpt2", name, 4)
            assert model.transformer.wte.weight is base.transformer.wte.weight
            torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=1e-5)
    assert not any(hasattr(m, "bottleneck_adapter") for m in base.modules())  # the base stays bare


def test_sizes_are_the_nearest_to_the_papers_budgets():
    assert latency.sized("gpt2_medium", "adapter_l", "bottleneck", 11.09e6) == (224, 11_089_152)
    assert latency.sized("gpt2_medium", "adapter_h", "bottleneck", 11.09e6) == (112, 11_064_576)
    assert latency.sized("gpt2_medium", "adapter_h", "bottleneck", 0.5e6) == (5, 540_912)
    assert latency.sized("gpt2_medium", "lora", "rank", 0.5e6, targets=("q", "v"), alpha=8.0) == (5, 491_520)


def test_round_robin_times_every_model_each_trial():
    calls = []

    class Probe(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, input_ids, use_cache):
            calls.append(self.name)

    times = latency.round_robin({n: Probe(n) for n in "abc"}, torch.zeros(1, 2), warmup=1, trials=3)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
