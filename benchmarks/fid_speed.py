"""Seconds per Fréchet distance: synthmed's eigenvalue trace against pytorch-fid's full matrix square root.

    python benchmarks/fid_speed.py                      # 2048 dims (the Inception's), 150 and 10,000 images
    python benchmarks/fid_speed.py --dims 1024 --images 500 --threads 2

Both sides get the same two covariances and means: features drawn with a different scale per
dimension, the fake ones partly correlated with the real ones, as Inception features of two
related image sets are. pytorch-fid's ``calculate_frechet_distance`` takes
``scipy.linalg.sqrtm(sigma1 @ sigma2)`` and its trace; synthmed (``metrics/fid.py``) takes the
square roots of the eigenvalues of the same product, as torchmetrics does. Fewer images than
dimensions make both covariances singular, as in the demo's 150-image FID. The two alternate
after one untimed round and the best of ``--repeats`` times is kept for each, so that load
from other processes hurts both alike; both run on ``--threads`` BLAS/LAPACK threads (default 1,
as in a benchmark job beside another), and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits  # scikit-learn's dependency: numpy's and scipy's BLAS threads

from synthmed.metrics.fid import frechet_distance


def pytorch_fid_form(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's formula, without its fallback for a non-finite root (not met here)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2).real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(images: int, dims: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 1.0, dims)
    real = rng.standard_normal((images, dims)) * scale
    fake = 0.6 * real + 0.8 * rng.standard_normal((images, dims)) * scale + 0.05
    return real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)


def timed(function: Callable[..., float], arguments: tuple) -> tuple[float, float]:
    """(seconds, value) of one call."""
    start = time.perf_counter()
    value = function(*arguments)
    return time.perf_counter() - start, value


def compare(images: int, dims: int, repeats: int, seed: int) -> None:
    """Time both forms on the statistics of ``images`` draws in ``dims`` dimensions and print the line."""
    arguments = statistics(images, dims, seed)
    pytorch_fid_form(*arguments), frechet_distance(*arguments)  # untimed: warm both code paths
    reference_s, ours_s = [], []
    for _ in range(repeats):  # alternating, so that a burst of load hits both
        seconds, reference = timed(pytorch_fid_form, arguments)
        reference_s.append(seconds)
        seconds, ours = timed(frechet_distance, arguments)
        ours_s.append(seconds)
    print(f"{images:>6} images, {dims} dims: sqrtm (pytorch-fid) {min(reference_s):6.2f} s, "
          f"eigenvalues (synthmed) {min(ours_s):6.2f} s, {min(reference_s) / min(ours_s):4.1f}x faster; "
          f"FD {reference:.6f} against {ours:.6f} (relative difference {abs(ours - reference) / reference:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--images", type=int, nargs="+", default=[150, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} BLAS/LAPACK threads")
    with threadpool_limits(limits=args.threads):
        for images in args.images:
            compare(images, args.dims, args.repeats, args.seed)


if __name__ == "__main__":
    main()
