"""Seconds per Fréchet distance: synthmed's eigenvalue traces against pytorch-fid's full matrix square root.

    python benchmarks/fid_speed.py                      # 2048 dims (the Inception's), 150 and 10,000 images
    python benchmarks/fid_speed.py --dims 1024 --images 500 --threads 2

Every form gets the same two feature sets: features drawn with a different scale per dimension,
the fake ones partly correlated with the real ones, as Inception features of two related image
sets are. pytorch-fid's ``calculate_frechet_distance`` takes ``scipy.linalg.sqrtm(sigma1 @ sigma2)``
and its trace; synthmed's ``frechet_distance`` takes the square roots of the eigenvalues of the
same product, as torchmetrics does. Fewer images than dimensions make both covariances singular,
as in the demo's 150-image FID; there synthmed's ``frechet`` takes
``frechet_distance_few_images``, the same eigenvalues from an images x images matrix, timed as a
third column (from the real features and the fake statistics, as ``frechet`` is given them). The
forms alternate after one untimed round and the best of ``--repeats`` times is kept for each, so
that load from other processes hurts all alike; all run on ``--threads`` BLAS/LAPACK threads
(default 1, as in a benchmark job beside another), and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits  # scikit-learn's dependency: numpy's and scipy's BLAS threads

from synthmed.metrics.fid import frechet_distance, frechet_distance_few_images


def pytorch_fid_form(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's formula, without its fallback for a non-finite root (not met here)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2).real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def features(images: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 1.0, dims)
    real = rng.standard_normal((images, dims)) * scale
    return real, 0.6 * real + 0.8 * rng.standard_normal((images, dims)) * scale + 0.05


def timed(function: Callable[..., float], arguments: tuple) -> tuple[float, float]:
    """(seconds, value) of one call."""
    start = time.perf_counter()
    value = function(*arguments)
    return time.perf_counter() - start, value


def compare(images: int, dims: int, repeats: int, seed: int) -> None:
    """Time every form on ``images`` draws in ``dims`` dimensions and print the line."""
    real, fake = features(images, dims, seed)
    statistics = (real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    forms = {"sqrtm (pytorch-fid)": (pytorch_fid_form, statistics),
             "eigenvalues (synthmed)": (frechet_distance, statistics)}
    if images <= dims:
        forms["few-image eigenvalues (synthmed)"] = (frechet_distance_few_images, (real, *statistics[2:]))
    seconds: dict[str, list[float]] = {name: [] for name in forms}
    values = {name: function(*arguments) for name, (function, arguments) in forms.items()}  # untimed: warm up
    for _ in range(repeats):  # alternating, so that a burst of load hits every form
        for name, (function, arguments) in forms.items():
            seconds[name].append(timed(function, arguments)[0])
    reference, reference_s = values["sqrtm (pytorch-fid)"], min(seconds["sqrtm (pytorch-fid)"])
    print(f"{images} images, {dims} dims:")
    for name in forms:
        off, speedup = abs(values[name] - reference) / reference, reference_s / min(seconds[name])
        against = "" if name.startswith("sqrtm") else f" ({off:.1e} off sqrtm, {speedup:.0f}x faster)"
        print(f"    {name:34} {min(seconds[name]):6.2f} s, FD {values[name]:.6f}{against}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
