"""Time the full phi grids of a 24-layer model: r=64 vs r=8, hidden 1024, q and v (48 pairs).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/time_subspace.py [--layers 24] [--hidden 1024]

Compares the batched path (one stacked SVD per factor shape) with a pair-by-pair loop.
"""
import argparse
import time

import torch

from analysis.subspace import similarity, similarity_grids


def random_factors(layers: int, rank: int, hidden: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {(layer, target): torch.randn(rank, hidden, generator=generator)
            for layer in range(layers) for target in ("q", "v")}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ranks", type=int, nargs=2, default=(64, 8))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    high = random_factors(args.layers, args.ranks[0], args.hidden, seed=0)
    low = random_factors(args.layers, args.ranks[1], args.hidden, seed=1)
    batched = best_of(args.repeats, lambda: similarity_grids(high, low))
    looped = best_of(args.repeats, lambda: {key: similarity(high[key], low[key]) for key in high})
    print(f"{len(high)} pairs (r={args.ranks[0]} vs r={args.ranks[1]}, hidden {args.hidden}, "
          f"{torch.get_num_threads()} thread(s)): batched {batched:.3f} s, pair by pair "
          f"{looped:.3f} s (best of {args.repeats})")


if __name__ == "__main__":
    main()
