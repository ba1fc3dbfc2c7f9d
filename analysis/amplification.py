"""How dW relates to W (paper Section 7.3, Table 7, Appendix H.4).

Project W onto the r-dimensional subspaces of dW: ||U^T W V^T||_F, with U (out x r) and V (r x in)
the top-r left and right singular vectors of dW; compare with the same for W's own top-r singular
vectors and a random matrix's. The amplification factor ||dW||_F / ||U^T W V^T||_F says how much
dW enlarges the directions of W it lives in. `chance_level` gives the factor that a random matrix
of dW's shape and Frobenius norm would show: a factor near it says nothing about W.
"""
import torch


def top_singular_vectors(M: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U (out x r) and V (r x in): the top-r left and right singular vectors of M (out x in)."""
    U, _, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    return U[:, :r], Vh[:r]


def projection_norm(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> float:
    """||U^T W V^T||_F."""
    return float(torch.linalg.matrix_norm(U.mT @ W.double() @ V.mT))


def amplification(W: torch.Tensor, delta_W: torch.Tensor, r: int, seed: int = 0) -> dict:
    """Table 7's row for one adapted weight W (out x in) and its dW = (alpha/r) B A.

    proj_delta, proj_W, proj_random: ||U^T W V^T||_F with U, V the top-r singular vectors of
    dW, of W itself, and of a seeded standard Gaussian matrix of W's shape; norm_W, norm_delta:
    Frobenius norms; factor = norm_delta / proj_delta (the paper: about 21.5 at r=4, about 2 at
    r=64, on GPT-3 layer 48 Wq).
    """
    if W.shape != delta_W.shape:
        raise ValueError(f"W is {tuple(W.shape)} but dW is {tuple(delta_W.shape)}: not one weight")
    if not 1 <= r <= min(W.shape):
        raise ValueError(f"r={r} must lie in [1, {min(W.shape)}] for a {tuple(W.shape)} weight")
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(tuple(W.shape), generator=generator, dtype=torch.float64)
    proj_delta = projection_norm(W, *top_singular_vectors(delta_W, r))
    norm_delta = float(torch.linalg.matrix_norm(delta_W.double()))
    return {
        "proj_delta": proj_delta,
        "proj_W": projection_norm(W, *top_singular_vectors(W, r)),
        "proj_random": projection_norm(W, *top_singular_vectors(random, r)),
        "norm_W": float(torch.linalg.matrix_norm(W.double())),
        "norm_delta": norm_delta,
        "factor": norm_delta / proj_delta if proj_delta > 0 else float("inf"),
    }


def chance_level(W: torch.Tensor, delta_W: torch.Tensor, r: int, draws: int = 8, seed: int = 0) -> dict:
    """The amplification of chance: R a Gaussian matrix of dW's shape scaled to ||dW||_F, its
    top-r singular vectors U, V, proj = ||U^T W V^T||_F and factor = ||R||_F / proj, each averaged
    over `draws` seeded draws. E[proj^2] = r^2 ||W||_F^2 / (out * in) for Haar-random U, V; the
    factor grows with ||dW||_F. Returns {chance_proj, chance_factor, chance_draws}."""
    if W.shape != delta_W.shape:
        raise ValueError(f"W is {tuple(W.shape)} but dW is {tuple(delta_W.shape)}: not one weight")
    norm = float(torch.linalg.matrix_norm(delta_W.double()))
    generator = torch.Generator().manual_seed(seed)
    projections = []
    for _ in range(draws):
        R = torch.randn(tuple(W.shape), generator=generator, dtype=torch.float64)
        projections.append(projection_norm(W, *top_singular_vectors(R * norm / R.norm(), r)))
    factors = [norm / p if p > 0 else float("inf") for p in projections]
    return {"chance_proj": sum(projections) / draws, "chance_factor": sum(factors) / draws,
            "chance_draws": draws}
