"""Subspace similarity (Eq. 4, Appendix G): analytic cases, not snapshots."""
import math

import pytest
import torch

from analysis.subspace import (
    expected_random_phi,
    grassmann_distance,
    orthonormal_basis,
    phi_grid,
    principal_angles,
    random_baseline,
    similarity,
    similarity_grids,
    weight_vs_delta,
)


def orthonormal(dim: int, k: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, k, generator=generator, dtype=torch.float64))[0]


def factor_with_basis(basis: torch.Tensor, strengths) -> torch.Tensor:
    """An A factor (r x dim) whose right singular vectors are basis's columns, in this order."""
    return torch.diag(torch.as_tensor(strengths, dtype=torch.float64)) @ basis.mT


def test_identical_subspaces_give_one_everywhere():
    basis = orthonormal(48, 8)
    A_high = factor_with_basis(basis, torch.linspace(8, 1, 8))
    A_low = factor_with_basis(basis[:, :3], [5.0, 3.0, 2.0])  # the same leading directions
    phi = similarity(A_low, A_high)
    assert phi.shape == (3, 8)
    torch.testing.assert_close(phi, torch.ones(3, 8, dtype=torch.float64))
    torch.testing.assert_close(similarity(A_high, A_high), torch.ones(8, 8, dtype=torch.float64))


def test_orthogonal_subspaces_give_zero():
    basis = orthonormal(40, 12)
    A1 = factor_with_basis(basis[:, :4], [4.0, 3.0, 2.0, 1.0])
    A2 = factor_with_basis(basis[:, 4:], torch.arange(8, 0, -1))
    torch.testing.assert_close(similarity(A1, A2), torch.zeros(4, 8, dtype=torch.float64))


def test_planted_shared_top_direction():
    basis = orthonormal(64, 9, seed=1)
    # both share basis[:, 0] as their strongest direction; the rest are mutually orthogonal
    A1 = factor_with_basis(basis[:, [0, 1, 2, 3]], [10.0, 1.0, 0.9, 0.8])
    A2 = factor_with_basis(basis[:, [0, 4, 5, 6, 7, 8]], [10.0, 1.0, 0.9, 0.8, 0.7, 0.6])
    phi = similarity(A1, A2)
    assert phi[0, 0] == pytest.approx(1.0, abs=1e-12)
    # one shared direction out of min(i, j): phi(i, j) = 1 / min(i, j)
    i, j = torch.meshgrid(torch.arange(1, 5), torch.arange(1, 7), indexing="ij")
    torch.testing.assert_close(phi, 1.0 / torch.minimum(i, j).double())


def test_invariant_to_rotating_and_rescaling_the_factor():
    generator = torch.Generator().manual_seed(2)
    A1 = torch.randn(6, 50, generator=generator, dtype=torch.float64)
    A2 = torch.randn(10, 50, generator=generator, dtype=torch.float64)
    rotation = orthonormal(6, 6, seed=3)
    reference = similarity(A1, A2)
    torch.testing.assert_close(similarity(3.7 * rotation @ A1, A2), reference)
    torch.testing.assert_close(similarity(A1, -0.01 * A2), reference)


def test_left_use_on_B_matches_right_use_on_its_transpose():
    generator = torch.Generator().manual_seed(4)
    B1 = torch.randn(30, 4, generator=generator)
    B2 = torch.randn(30, 7, generator=generator)
    torch.testing.assert_close(similarity(B1, B2, use="left"), similarity(B1.T, B2.T))
    with pytest.raises(ValueError, match="use='middle'"):
        similarity(B1, B2, use="middle")


def test_random_subspaces_match_max_i_j_over_dim():
    dim, r1, r2, n = 32, 4, 6, 300
    generator = torch.Generator().manual_seed(5)
    A1 = torch.randn(n, r1, dim, generator=generator, dtype=torch.float64)
    A2 = torch.randn(n, r2, dim, generator=generator, dtype=torch.float64)
    samples = phi_grid(orthonormal_basis(A1), orthonormal_basis(A2))  # (n, r1, r2), batched
    expected = expected_random_phi(r1, r2, dim)
    standard_error = samples.std(0) / math.sqrt(n)
    assert ((samples.mean(0) - expected).abs() < 5 * standard_error).all()
    assert expected[0, 0] == pytest.approx(1 / dim) and expected[-1, -1] == pytest.approx(6 / dim)


def test_random_baseline_is_seeded_and_near_its_expectation():
    grid = random_baseline((8, 256), (8, 256), seed=7)
    torch.testing.assert_close(grid, random_baseline((8, 256), (8, 256), seed=7))
    assert not torch.equal(grid, random_baseline((8, 256), (8, 256), seed=8))
    assert grid.shape == (8, 8) and 0 <= grid.min() and grid.max() <= 1
    assert float(grid.mean()) == pytest.approx(float(expected_random_phi(8, 8, 256).mean()), abs=0.03)


def test_phi_and_grassmann_distance_agree():
    U1, U2 = orthonormal(20, 5, seed=8), orthonormal(20, 7, seed=9)
    phi = phi_grid(U1, U2)
    for i, j in [(1, 1), (2, 5), (5, 3), (5, 7)]:
        p = min(i, j)
        d = grassmann_distance(U1[:, :i], U2[:, :j])
        assert phi[i - 1, j - 1] == pytest.approx(1 - d**2 / p, abs=1e-12)
        cosines = torch.cos(principal_angles(U1[:, :i], U2[:, :j]))
        assert phi[i - 1, j - 1] == pytest.approx(float((cosines**2).sum()) / p, abs=1e-12)
    assert grassmann_distance(U1, U1) == pytest.approx(0.0, abs=1e-6)
    Q = orthonormal(20, 20, seed=8)
    assert grassmann_distance(Q[:, :2], Q[:, 2:4]) == pytest.approx(math.sqrt(2), abs=1e-12)


def test_batched_grids_equal_pair_by_pair():
    generator = torch.Generator().manual_seed(10)
    keys = [(layer, target) for layer in range(3) for target in ("q", "v")]
    high = {key: torch.randn(8, 24, generator=generator) for key in keys}
    low = {key: torch.randn(2, 24, generator=generator) for key in keys}
    low[(2, "v")] = torch.randn(3, 24, generator=generator)  # another shape group
    grids = similarity_grids(low, high)
    assert list(grids) == keys
    for key in keys:
        torch.testing.assert_close(grids[key], similarity(low[key], high[key]))


def test_weight_vs_delta_sees_where_delta_lives():
    U, V = orthonormal(40, 40, seed=11), orthonormal(30, 30, seed=12)
    W = U[:, :30] @ torch.diag(torch.linspace(10, 1, 30, dtype=torch.float64)) @ V.mT
    strengths = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))  # distinct, so ordered
    in_top = U[:, :2] @ strengths @ V[:, :2].mT
    in_bottom = U[:, 28:30] @ strengths @ V[:, 28:30].mT
    ones, zeros = torch.ones(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    torch.testing.assert_close(weight_vs_delta(W, in_top, 2, 4), ones)
    torch.testing.assert_close(weight_vs_delta(W, in_bottom, 2, 4), zeros)
