"""Follow-up analyses on cases whose answer is known by construction: intruder dimensions of
planted directions, effective ranks of matrices of known rank, forgetting of tiny models."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from analysis import cli
from analysis.forgetting import forgetting, lm_loss
from analysis.intruders import intruder_dimensions, intruders_by_matrix, max_cosines, run_weights
from analysis.spectrum import effective_rank, spectra
from lora_repro import lora
from lora_repro.models import build_random

D = 32


def orthonormal(d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


def planted():
    """W0 = U diag(s) V^T with well separated singular values, and two unit directions spread
    evenly over all of U's columns (|cos| = 1/sqrt(32) with each), orthogonal to each other."""
    U, V = orthonormal(seed=0), orthonormal(seed=1)
    s = 10 * 0.8 ** torch.arange(D, dtype=torch.float64)
    W0 = U @ torch.diag(s) @ V.T
    even = torch.ones(D, dtype=torch.float64) / math.sqrt(D)
    alternating = even * torch.tensor([(-1) ** i for i in range(D)], dtype=torch.float64)
    return W0, U, V, U @ even, U @ alternating, V @ even, V @ alternating


# -- intruder dimensions -------------------------------------------------------------------------

def test_unchanged_weight_has_no_intruders():
    W0, *_ = planted()
    assert intruder_dimensions(W0, W0.clone()) == 0
    torch.testing.assert_close(max_cosines(W0, W0, k=10), torch.ones(10, dtype=torch.float64))


def test_a_large_update_along_a_spread_direction_is_one_intruder():
    W0, U, V, u, _, v, _ = planted()
    # W1's top left singular vector is u, up to W0's pull (|W0| / 100): |cos| about 1/sqrt(32)
    cosine = max_cosines(W0, W0 + 100 * torch.outer(u, v), k=1).item()
    assert cosine == pytest.approx(1 / math.sqrt(D), abs=0.03)
    assert intruder_dimensions(W0, W0 + 100 * torch.outer(u, v), k=10, eps=0.5) == 1


def test_two_planted_directions_are_two_intruders_and_small_ones_drop_out_of_the_top_k():
    W0, U, V, u, u2, v, v2 = planted()
    W1 = W0 + 100 * torch.outer(u, v) + 50 * torch.outer(u2, v2)
    assert intruder_dimensions(W0, W1, k=10) == 2
    assert intruder_dimensions(W0, W1, k=1) == 1
    # the same directions but far below W0's top singular values are not among its top 10
    assert intruder_dimensions(W0, W0 + 1e-3 * torch.outer(u, v), k=10) == 0


def test_amplifying_an_existing_direction_is_no_intruder():
    W0, U, V, *_ = planted()
    assert intruder_dimensions(W0, W0 + 100 * torch.outer(U[:, 5], V[:, 5])) == 0


def test_intruder_arguments_are_checked():
    W0, *_ = planted()
    with pytest.raises(ValueError, match="not one weight"):
        intruder_dimensions(W0, W0[:, :4])
    with pytest.raises(ValueError, match=r"k=0 must be an integer in 1..32"):
        intruder_dimensions(W0, W0, k=0)
    with pytest.raises(ValueError, match=r"eps=1.5 must lie in \(0, 1\]"):
        intruder_dimensions(W0, W0, eps=1.5)
    with pytest.raises(ValueError, match="no pretrained W0"):
        intruders_by_matrix({}, {(0, "q"): W0})


# -- effective rank ------------------------------------------------------------------------------

def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.diag(torch.tensor([4.0, 3.0])), energy=0.6) == 1  # 16/25 = 0.64
    assert effective_rank(torch.diag(torch.tensor([4.0, 3.0])), energy=0.7) == 2
    U, V = orthonormal(seed=2), orthonormal(seed=3)
    equal10 = 5.0 * U[:, :10] @ V[:, :10].T  # rank 10, ten equal singular values
    assert effective_rank(equal10, energy=1.0) == 10
    assert effective_rank(equal10, energy=0.9) == 9
    assert effective_rank(equal10, energy=0.05) == 1
    g = torch.Generator().manual_seed(0)
    rank5 = torch.randn(32, 5, generator=g) @ torch.randn(5, 24, generator=g)
    assert effective_rank(rank5, energy=1.0) == 5
    assert effective_rank(torch.zeros(8, 8)) == 0
    with pytest.raises(ValueError, match="energy=0 must lie in"):
        effective_rank(rank5, energy=0)


def test_spectra_are_normalised_by_the_largest_singular_value():
    W0 = torch.zeros(4, 4, dtype=torch.float64)
    out = spectra({(0, "q"): W0}, {(0, "q"): torch.diag(torch.tensor([2.0, 1.0, 0.5, 0.0]))})
    torch.testing.assert_close(out[(0, "q")], torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=torch.float64))


# -- run folders: LoRA and full fine-tuning, through the CLI ---------------------------------------

def write_record(run_dir, method, **extra):
    record = {"status": "done", "model": "tiny_bert", "task": "sst2", "method": method,
              "seed": 0, "tier": "test", "best": {"primary": 0.5}, **extra}
    (run_dir / "record.json").write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
    """A LoRA run (rank 4 on q, v) and a full-FT run whose only change is a planted rank-1
    update of layer 1's Wq along a direction spread over W0's left singular vectors."""
    lora_run, ft_run = tmp_path / "lora", tmp_path / "ft"
    lora_run.mkdir()
    ft_run.mkdir()
    model = lora.inject(build_random("tiny_bert", seed=0), rank=4, alpha=8, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for wrapper in lora.wrappers(model).values():
            for B in wrapper.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g))
    lora.save_adapter(model, lora_run)
    write_record(lora_run, "lora", rank=4)

    ft = build_random("tiny_bert", head="sequence_classification", seed=0)
    W0 = ft.bert.encoder.layer[1].attention.self.query.weight.detach().double()
    U, _, Vh = torch.linalg.svd(W0)
    spread = torch.ones(W0.shape[0], dtype=torch.float64) / math.sqrt(W0.shape[0])
    planted_delta = 10 * torch.outer(U @ spread, Vh.T @ spread)
    with torch.no_grad():
        ft.bert.encoder.layer[1].attention.self.query.weight += planted_delta.float()
    save_file({k: v.contiguous() for k, v in ft.state_dict().items()}, ft_run / "model.safetensors")
    write_record(ft_run, "full_ft")
    return lora_run, ft_run, model, planted_delta


def test_run_weights_of_a_lora_run_and_a_full_ft_run(runs):
    lora_run, ft_run, model, planted_delta = runs
    W0s, W1s, labels = run_weights(lora_run)
    assert labels["method"] == "lora" and labels["rank"] == 4 and W1s.keys() == {
        (layer, t) for layer in (0, 1) for t in ("q", "v")}
    for key, delta in lora.delta_weights(model).items():
        torch.testing.assert_close(W1s[key] - W0s[key], delta.double())

    W0s, W1s, labels = run_weights(ft_run)
    assert labels["method"] == "full_ft" and len(W1s) == 2 * 4  # every q, k, v, o of 2 layers
    for key in W1s:
        expected = planted_delta if key == (1, "q") else torch.zeros_like(W1s[key])
        torch.testing.assert_close(W1s[key] - W0s[key], expected, atol=1e-6, rtol=1e-5)
    counts = intruders_by_matrix(W0s, W1s, k=10)
    assert counts[(1, "q")] == 1 and sum(counts.values()) == 1


def test_analyze_intruders_and_spectrum_commands(runs, tmp_path, capsys):
    lora_run, ft_run, *_ = runs
    args = [str(lora_run), str(ft_run), "--figure", str(tmp_path / "fig" / "intruders.png")]
    assert cli.main(["intruders", *args]) == 0
    assert (tmp_path / "fig" / "intruders.png").stat().st_size > 0
    assert "full_ft seed 0 (dev 0.500)" in capsys.readouterr().out

    args[-1] = str(tmp_path / "fig" / "spectrum.png")
    assert cli.main(["spectrum", *args, "--energy", "1.0"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "fig" / "spectrum.png").stat().st_size > 0
    assert "effective rank" in out
    from analysis.spectrum import analyze

    table, _ = analyze([ft_run], energy=1.0, figure=tmp_path / "again.png")
    column = table.xs("q", level="target", axis=1).iloc[:, 0]
    assert column.tolist() == [0, 1]  # ΔWq is zero in layer 0, the planted rank 1 in layer 1
    table, _ = analyze([lora_run], energy=1.0, figure=tmp_path / "again.png")
    assert table.to_numpy().max() <= 4


def test_a_run_without_weights_is_refused(tmp_path, capsys):
    write_record(tmp_path, "full_ft")
    assert cli.main(["intruders", str(tmp_path)]) == 2
    assert "neither LoRA factors" in capsys.readouterr().err


# -- forgetting ----------------------------------------------------------------------------------

def batches(n=2, length=10, vocab=1000):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded row
    return [{"input_ids": ids, "attention_mask": mask}]


def test_forgetting_of_a_causal_lm_is_its_lm_loss_change():
    pretrained = build_random("tiny_gpt2", head="causal_lm", seed=0)
    unchanged = forgetting(pretrained, pretrained, batches())
    assert unchanged["measure"] == "lm_loss" and unchanged["change"] == 0
    blank = build_random("tiny_gpt2", head="causal_lm", seed=0)
    with torch.no_grad():
        blank.lm_head.weight.zero_()  # all logits 0: uniform prediction, loss log(vocab)
    assert lm_loss(blank, batches()) == pytest.approx(math.log(blank.config.vocab_size))
    moved = forgetting(pretrained, blank, batches())
    assert moved["after"] == pytest.approx(math.log(blank.config.vocab_size))
    assert moved["change"] == pytest.approx(moved["after"] - moved["before"])


def test_forgetting_of_an_encoder_is_the_cosine_of_its_sentence_embeddings():
    pretrained = build_random("tiny_bert", seed=0)
    adapted = lora.inject(build_random("tiny_bert", head="sequence_classification", seed=0),
                          rank=4, seed=0)  # B = 0: the same function as the pretrained encoder
    result = forgetting(pretrained, adapted, batches())
    assert result["measure"] == "embedding_cosine" and result["after"] == pytest.approx(1.0)
    for factor, cosine in ((3.0, 1.0), (-1.0, -1.0)):  # scale / flip the last LayerNorm's output
        changed = build_random("tiny_bert", seed=0)
        norm = changed.encoder.layer[-1].output.LayerNorm
        with torch.no_grad():
            norm.weight.mul_(factor)
            norm.bias.mul_(factor)
        assert forgetting(pretrained, changed, batches())["after"] == pytest.approx(cosine, abs=1e-5)


def test_analyze_forgetting_of_a_glue_run_writes_its_result(tmp_path, shared_data, monkeypatch, capsys):
    """An adapter with B = 0 is the pretrained encoder (cosine 1 on CoLA's dev sentences); one
    with B random has moved (cosine < 1). The result lands in the run folder as forgetting.json."""
    from analysis.forgetting import held_out_task, read_forgetting
    from lora_repro import methods
    from lora_repro.models import load_pretrained

    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))
    method = methods.get("lora")
    fields = {"name": "lora", "targets": ["q", "v"], "rank": 4, "alpha": 8}
    g = torch.Generator().manual_seed(0)
    for name, scale in (("still", 0.0), ("moved", 1.0)):
        model = load_pretrained("tiny_bert", head="sequence_classification", num_labels=2)
        model = method.apply(model, method.config(**fields), head_modules=["classifier"], seed=0)
        with torch.no_grad():
            for wrapper in lora.wrappers(model).values():
                for B in wrapper.lora_B.values():
                    B.copy_(scale * torch.randn(B.shape, generator=g))
        (tmp_path / name).mkdir()
        method.save(model, tmp_path / name)
        write_record(tmp_path / name, "lora", method_config=fields, run_id=name)
    assert cli.main(["forgetting", str(tmp_path / "still"), str(tmp_path / "moved"),
                     "--rows", "16"]) == 0
    out = capsys.readouterr().out
    assert "embedding_cosine on 16 cola texts" in out
    still, moved = read_forgetting(tmp_path / "still"), read_forgetting(tmp_path / "moved")
    assert still["after"] == pytest.approx(1.0, abs=1e-5) and moved["after"] < 0.999
    assert moved["held_out"] == {"task": "cola", "split": "validation", "rows": 16}
    assert held_out_task("cola") == "sst2" and held_out_task("e2e") == "webnlg"
    assert cli.main(["forgetting", str(tmp_path / "nothing")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_analyze_forgetting_of_a_causal_lm_reads_the_other_nlg_data_set(tmp_path, shared_data, monkeypatch):
    """A GPT-2 run on E2E is scored on WebNLG references; LoRA with B = 0 forgets nothing."""
    from analysis.forgetting import analyze
    from lora_repro import methods
    from lora_repro.models import load_pretrained

    monkeypatch.setenv("WEBNLG_DIR", str(shared_data / "webnlg_2017"))
    method = methods.get("lora")
    fields = {"name": "lora", "targets": ["q", "v"], "rank": 2, "alpha": 4}
    model = method.apply(load_pretrained("tiny_gpt2", head="causal_lm"), method.config(**fields),
                         head_modules=[], seed=0)
    method.save(model, tmp_path)
    write_record(tmp_path, "lora", model="tiny_gpt2", task="e2e", method_config=fields)
    result = analyze(tmp_path, rows=8)
    assert result["measure"] == "lm_loss" and result["held_out"]["task"] == "webnlg"
    assert result["change"] == pytest.approx(0.0, abs=1e-5) and result["before"] > 0
