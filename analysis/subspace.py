"""Subspace similarity between LoRA factors (paper Section 7.2, Eq. 4, Appendix G).

phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j), with U1, U2 orthonormal bases whose
columns are ordered by singular value. Every function takes leading batch dimensions, so the
grids of many (layer, target) pairs come from one stacked SVD.
"""
import torch

USES = ("right", "left")


def orthonormal_basis(M: torch.Tensor, use: str = "right", k: int | None = None) -> torch.Tensor:
    """Singular vectors of M (..., m, n) as columns, strongest first; the top k if given.

    use="right": right singular vectors (..., n, k), the row space; right for A (r x in) and for
    W vs dW on the input side. use="left": left singular vectors (..., m, k); right for B (out x r).
    """
    if use not in USES:
        raise ValueError(f"use={use!r}: expected one of {USES}")
    M = M.double()
    if M.shape[-2] < M.shape[-1]:  # wide (an A factor): LAPACK is ~2x faster on the tall M^T
        V, _, Uh = torch.linalg.svd(M.mT, full_matrices=False)
        U = Uh.mT
    else:
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        V = Vh.mT
    basis = V if use == "right" else U
    return basis if k is None else basis[..., :k]


def phi_grid(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """phi for every (i, j) from orthonormal bases U1 (..., d, r1), U2 (..., d, r2): (..., r1, r2).

    ||U1_i^T U2_j||_F^2 is the sum of the squared overlaps in the top-left i x j block of
    U1^T U2, so one 2-D cumulative sum gives the whole grid.
    """
    if U1.shape[-2] != U2.shape[-2]:
        raise ValueError(f"bases live in different spaces: {U1.shape[-2]} vs {U2.shape[-2]} rows")
    overlap = (U1.mT.double() @ U2.double()) ** 2
    energy = overlap.cumsum(-2).cumsum(-1)
    i = torch.arange(1, U1.shape[-1] + 1, dtype=energy.dtype)
    j = torch.arange(1, U2.shape[-1] + 1, dtype=energy.dtype)
    return energy / torch.minimum(i[:, None], j[None, :])


def similarity(A1: torch.Tensor, A2: torch.Tensor, use: str = "right") -> torch.Tensor:
    """phi(A1, A2, i, j) as an (r1, r2) grid; entry [i-1, j-1] = phi(i, j).

    A1, A2 are A factors (r x in) with use="right", or B factors (out x r) with use="left" (the
    paper's footnote: B and its left singular vectors give the same picture).
    """
    return phi_grid(orthonormal_basis(A1, use), orthonormal_basis(A2, use))


def similarity_grids(factors1: dict, factors2: dict, use: str = "right") -> dict:
    """phi grids for every key shared by two {key: factor} dicts, with one SVD per shape group.

    Keys are typically (layer, target); factors are A's (use="right") or B's (use="left").
    """
    keys = [key for key in factors1 if key in factors2]
    grids = {}
    for group in _group_by_shapes(keys, factors1, factors2):
        U1 = orthonormal_basis(torch.stack([factors1[key] for key in group]), use)
        U2 = orthonormal_basis(torch.stack([factors2[key] for key in group]), use)
        grids.update(zip(group, phi_grid(U1, U2)))
    return {key: grids[key] for key in keys}


def _group_by_shapes(keys, factors1, factors2) -> list[list]:
    groups: dict[tuple, list] = {}
    for key in keys:
        groups.setdefault((factors1[key].shape, factors2[key].shape), []).append(key)
    return list(groups.values())


def principal_angles(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the spans of orthonormal U1 and U2."""
    sigma = torch.linalg.svdvals(U1.mT.double() @ U2.double())
    return torch.arccos(sigma.clamp(-1.0, 1.0))


def grassmann_distance(U1: torch.Tensor, U2: torch.Tensor) -> float:
    """Projection metric of Ham & Lee (2008): d = sqrt(p - sum_k sigma_k^2), p = min(i, j).

    sigma_k are the singular values of U1^T U2 (the cosines of the principal angles), so
    phi = sum_k sigma_k^2 / p = 1 - d^2 / p. Appendix G of the paper prints "(1/p)(1 - d^2)";
    that is a typo of this identity (it would make phi negative for any d > 1).
    """
    p = min(U1.shape[-1], U2.shape[-1])
    sigma = torch.linalg.svdvals(U1.mT.double() @ U2.double())
    return float(torch.sqrt((p - (sigma**2).sum()).clamp(min=0.0)))


def random_baseline(shape1, shape2, seed: int = 0, use: str = "right") -> torch.Tensor:
    """phi grid between two seeded standard Gaussian matrices of the given factor shapes."""
    generator = torch.Generator().manual_seed(seed)
    M1 = torch.randn(tuple(shape1), generator=generator, dtype=torch.float64)
    M2 = torch.randn(tuple(shape2), generator=generator, dtype=torch.float64)
    return similarity(M1, M2, use)


def expected_random_phi(r1: int, r2: int, dim: int) -> torch.Tensor:
    """E[phi(i, j)] for independent uniformly random subspaces in R^dim: max(i, j) / dim.

    E||U_i^T U_j||_F^2 = i * j / dim (each of the j unit columns keeps i/dim of its squared
    length under a random rank-i projection), divided by min(i, j).
    """
    i = torch.arange(1, r1 + 1, dtype=torch.float64)
    j = torch.arange(1, r2 + 1, dtype=torch.float64)
    return torch.maximum(i[:, None], j[None, :]) / dim


def weight_vs_delta(W: torch.Tensor, delta_W: torch.Tensor, r: int, n_top: int, use="right"):
    """Figure 8: phi between the top n_top singular directions of W (rows i) and the top r of dW
    (columns j). Only dW's first r directions carry meaning; the rest span its null space."""
    return phi_grid(orthonormal_basis(W, use, n_top), orthonormal_basis(delta_W, use, r))
