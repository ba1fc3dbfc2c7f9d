"""Amplification (Table 7, Appendix H.4) on planted weights, and the Table 7 files."""
import math

import pandas as pd
import pytest
import torch

from analysis.amplification import amplification, chance_level, top_singular_vectors
from analysis.tables.formats import write
from analysis.tables.table7_amplification import our_row, paper_rows, table7

OUT, IN, RANK = 40, 30, 3
SPECTRUM = torch.linspace(20.0, 1.0, IN, dtype=torch.float64)


def orthonormal(dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]


@pytest.fixture
def weight():
    """W = U diag(SPECTRUM) V^T with known singular vectors."""
    U, V = orthonormal(OUT, 0)[:, :IN], orthonormal(IN, 1)
    return U @ torch.diag(SPECTRUM) @ V.mT, U, V


def planted(U, V, columns, size: float = 5.0) -> torch.Tensor:
    """dW of Frobenius norm `size` in W's singular directions `columns` (distinct strengths)."""
    strengths = torch.linspace(3.0, 1.0, len(columns), dtype=torch.float64)
    strengths *= size / strengths.norm()
    return U[:, columns] @ torch.diag(strengths) @ V[:, columns].mT


def test_delta_in_weakest_directions_amplifies_far_more(weight):
    W, U, V = weight
    weakest, strongest = list(range(IN - RANK, IN)), list(range(RANK))
    weak = amplification(W, planted(U, V, weakest), RANK)
    strong = amplification(W, planted(U, V, strongest), RANK)
    assert weak["proj_delta"] == pytest.approx(float(SPECTRUM[weakest].norm()))
    assert strong["proj_delta"] == pytest.approx(float(SPECTRUM[strongest].norm()))
    assert weak["norm_delta"] == pytest.approx(5.0) and strong["norm_delta"] == pytest.approx(5.0)
    assert weak["factor"] == pytest.approx(5.0 / float(SPECTRUM[weakest].norm()))
    assert weak["factor"] > 10 * strong["factor"]


def test_own_directions_and_norms(weight):
    W, U, V = weight
    result = amplification(W, planted(U, V, [0, 1, 2]), RANK)
    assert result["proj_W"] == pytest.approx(float(SPECTRUM[:RANK].norm()))
    assert result["proj_delta"] == pytest.approx(result["proj_W"])  # dW in W's top directions
    assert result["norm_W"] == pytest.approx(float(SPECTRUM.norm()))
    assert set(result) == {"proj_delta", "proj_W", "proj_random", "norm_W", "norm_delta", "factor"}


def test_random_directions_capture_r_squared_over_out_in_of_the_energy(weight):
    W, U, V = weight
    delta = planted(U, V, [0, 1, 2])
    energies = [amplification(W, delta, RANK, seed=s)["proj_random"] ** 2 for s in range(40)]
    expected = RANK**2 / (OUT * IN) * float(SPECTRUM.norm()) ** 2  # E||U^T W V^T||^2, Haar U, V
    assert sum(energies) / len(energies) == pytest.approx(expected, rel=0.3)


def test_chance_level_is_a_random_matrix_of_the_same_norm(weight):
    W, U, V = weight
    delta = planted(U, V, [27, 28, 29])
    chance = chance_level(W, delta, RANK, draws=40)
    expected = RANK**2 / (OUT * IN) * float(SPECTRUM.norm()) ** 2  # E||U^T W V^T||^2, Haar U, V
    assert chance["chance_proj"] ** 2 == pytest.approx(expected, rel=0.3)
    assert chance["chance_draws"] == 40
    double = chance_level(W, 2 * delta, RANK, draws=40)  # the same draws: U, V do not see the norm
    assert double["chance_proj"] == pytest.approx(chance["chance_proj"])
    assert double["chance_factor"] == pytest.approx(2 * chance["chance_factor"])
    # W's weakest directions project W less than chance does; its strongest far more
    assert amplification(W, delta, RANK)["proj_delta"] < chance["chance_proj"]
    assert amplification(W, planted(U, V, [0, 1, 2]), RANK)["proj_delta"] > 2 * chance["chance_proj"]
    with pytest.raises(ValueError, match="not one weight"):
        chance_level(W, W.T, RANK)


def test_top_singular_vectors_shapes_and_bad_input(weight):
    W, _, _ = weight
    U, V = top_singular_vectors(W, RANK)
    assert U.shape == (OUT, RANK) and V.shape == (RANK, IN)
    with pytest.raises(ValueError, match=r"r=31 must lie in \[1, 30\]"):
        amplification(W, W, 31)
    with pytest.raises(ValueError, match="not one weight"):
        amplification(W, W.T, RANK)


def test_paper_numbers_are_consistent():
    paper = paper_rows().set_index("rank")
    assert list(paper.index) == [4, 64]
    assert (paper["norm_W"] == 61.95).all()
    for rank, stated in [(4, 21.5), (64, 2.0)]:
        row = paper.loc[rank]
        assert row["factor"] == stated
        assert row["norm_delta"] / row["proj_delta"] == pytest.approx(stated, abs=0.15)
        assert row["proj_random"] < row["proj_delta"] < row["proj_W"] < row["norm_W"]


def test_table7_files_put_ours_beside_the_paper(weight, tmp_path):
    W, U, V = weight
    result = amplification(W, planted(U, V, [27, 28, 29]), RANK)
    labels = {"model": "tiny_bert", "task": "sst2", "tier": "quick", "reference": "runs/x"}
    table = table7([our_row(result, labels, layer=1, n_layers=4, target="q", rank=RANK)])
    md, tex, csv = write(table, tmp_path).paths
    text = md.read_text()
    assert "| paper | GPT-3 175B | not stated | 48 of 96 | q | 4 | published | 0.32 |" in text
    assert "| ours | tiny_bert | sst2 | 2 of 4 | q | 3 | quick |" in text
    assert r"\begin{tabular}" in tex.read_text() and "tiny\\_bert" in tex.read_text()
    back = pd.read_csv(csv)
    assert list(back["source"]) == ["paper", "paper", "ours"]
    assert math.isclose(back["factor"].iloc[-1], result["factor"])
