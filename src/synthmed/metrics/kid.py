"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 between two feature sets with
the cubic polynomial kernel, mean and std over random subsets. On the same subsets it equals
torchmetrics' ``poly_mmd`` (tests/test_fidelity.py), and on whole sets its ``KernelInceptionDistance``.
"""

from __future__ import annotations

import numpy as np

from synthmed.metrics.arrays import Features, as_matrix


def _poly_mmd2(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 of two equal-size samples: the within-set kernel sums leave out the diagonal."""
    m = len(x)
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / m**2)


def kid(real_features: Features, fake_features: Features, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, gamma: float | None = None, coef0: float = 1, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets.

    Kernel ``(x . y * gamma + coef0) ** degree`` with ``gamma = 1 / dim`` by default. Each subset
    draws ``subset_size`` samples without replacement from each set (capped at the smaller set),
    from a seeded numpy Generator. The std has ddof 0, as torch-fidelity and torchmetrics report it
    (and as synthmed shows every spread, ``evaluation.stats.SPREAD_DDOF``).
    """
    real, fake = as_matrix("real_features", real_features), as_matrix("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(real)} and {len(fake)}")
    gamma = 1.0 / real.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    scores = [_poly_mmd2(real[rng.choice(len(real), size, replace=False)],
                         fake[rng.choice(len(fake), size, replace=False)], degree, gamma, coef0)
              for _ in range(subsets)]
    return float(np.mean(scores)), float(np.std(scores))
