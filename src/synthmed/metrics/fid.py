"""Fréchet distance between feature sets (FID when the features are the standard Inception's).

Statistics are streamed: ``RunningStats`` keeps only the count, the mean and a dim x dim
scatter matrix, so 10,000 or 1,000,000 images cost the same memory, and per-rank stats can be
merged. ``frechet_distance`` takes the trace of the matrix square root from eigenvalues, as
torchmetrics does; ``frechet`` on two feature matrices matches torchmetrics'
``FrechetInceptionDistance`` given the same features, and pytorch-fid's ``sqrtm`` form (tests/test_fid.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from synthmed._io import atomic_path
from synthmed.metrics.arrays import Features


class RunningStats:
    """Streaming mean and unbiased covariance (N - 1, as ``np.cov``) of feature vectors, in float64.

    Each batch is reduced to its own mean and centred scatter and folded in with Chan et al.'s
    pairwise formula, which is also how two accumulators merge. Centring avoids the cancellation
    of the raw-moment form (sum x x^T - N m m^T) when the mean is large next to the spread.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim)
        self._scatter = np.zeros((dim, dim))  # sum over samples of (x - mean)(x - mean)^T

    def update(self, features: Features) -> RunningStats:
        """Add a ``(n, dim)`` batch of features."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (n, {self.dim}), got {x.shape}")
        if len(x):
            mean = x.mean(axis=0)
            centred = x - mean
            self._combine(len(x), mean, centred.T @ centred)
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold in another accumulator (e.g. another rank's), as if its features had been added here."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        if other.count:
            self._combine(other.count, other._mean, other._scatter)
        return self

    def _combine(self, n: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        total = self.count + n
        delta = mean - self._mean
        self._scatter = self._scatter + scatter + np.outer(delta, delta) * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, have {self.count}")
        return self._scatter / (self.count - 1)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file handle: np.savez adds no suffix
            np.savez(f, count=self.count, mean=self._mean, scatter=self._scatter)

    @classmethod
    def load(cls, path: str | Path) -> RunningStats:
        with np.load(path) as data:
            stats = cls(data["mean"].shape[0])
            stats.count, stats._mean, stats._scatter = int(data["count"]), data["mean"], data["scatter"]
        return stats


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), as torchmetrics computes it.

    Tr((sigma1 sigma2)^(1/2)) is the sum of the square roots of the eigenvalues of sigma1 sigma2,
    which for two covariances are real and non-negative up to rounding. That takes 3.6 s for 2048
    Inception dimensions on one thread where pytorch-fid's full ``scipy.linalg.sqrtm`` takes 16-19 s
    (``benchmarks/fid_speed.py``); the two agree within 1e-7 relative (tests/test_fid.py), also on
    singular covariances.
    """
    # float64 throughout: single-precision statistics would put rounding near the check in _distance
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"mismatched statistics: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    _check_finite({"mean": [mu1, mu2], "covariance": [sigma1, sigma2]})
    return _distance(mu1 - mu2, np.trace(sigma1) + np.trace(sigma2), linalg.eigvals(sigma1 @ sigma2))


def frechet_distance_few_images(features1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``frechet_distance`` where the first set is given as its ``(n, dim)`` features, n <= dim.

    Its covariance is C^T C / (n - 1), C the centred features, so sigma1 sigma2 has the same
    nonzero eigenvalues as the n x n matrix C sigma2 C^T / (n - 1) (XY and YX share them), which
    is symmetric: 150 images against statistics in 2048 Inception dimensions take 0.03 s instead
    of 3.6 s on one thread (``benchmarks/fid_speed.py``). The two differ by 1e-7 relative: the
    full product's ~1900 zero eigenvalues come out at +-1e-16, and their roots add up
    (tests/test_fid.py).
    """
    x = np.asarray(features1, np.float64)
    mu2, sigma2 = np.atleast_1d(np.asarray(mu2, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    shapes_fit = x.ndim == 2 and mu2.shape == x.shape[1:] and sigma2.shape == (x.shape[1],) * 2
    if not shapes_fit or not 2 <= len(x) <= x.shape[1]:
        raise ValueError(f"expected (n, dim) features with 2 <= n <= dim and statistics of that dim, got "
                         f"features {x.shape}, mean {mu2.shape}, covariance {sigma2.shape}")
    _check_finite({"feature matrix": [x], "mean": [mu2], "covariance": [sigma2]})
    mu1 = x.mean(axis=0)
    centred = x - mu1
    small = centred @ sigma2 @ centred.T / (len(x) - 1)
    small = (small + small.T) / 2  # symmetric up to rounding; eigvalsh reads one triangle
    return _distance(mu1 - mu2, (centred**2).sum() / (len(x) - 1) + np.trace(sigma2), linalg.eigvalsh(small))


def _check_finite(arrays: dict[str, list[np.ndarray]]) -> None:
    for name, values in arrays.items():
        if not all(np.isfinite(v).all() for v in values):
            raise ValueError(f"a {name} holds NaN or infinite values: the features it came from are not finite")


def _distance(diff: np.ndarray, traces: float, eigenvalues: np.ndarray) -> float:
    """||diff||^2 + traces - 2 sum sqrt(eigenvalues), the eigenvalues those of sigma1 sigma2 (or its twin)."""
    # rounding leaves eigenvalues a hair below zero or off the real axis, whose roots' real parts
    # are ~0; anything larger means that a "covariance" is not positive semi-definite
    eigenvalues = eigenvalues.astype(complex)
    largest = max(float(np.abs(eigenvalues).max()), np.finfo(float).tiny)
    if eigenvalues.real.min() < -1e-6 * largest or np.abs(eigenvalues.imag).max() > 1e-6 * largest:
        raise ValueError("sigma1 sigma2 has a negative or complex eigenvalue: a covariance is not positive "
                         "semi-definite")
    return float(diff.dot(diff) + traces - 2 * np.sqrt(eigenvalues).real.sum())


def _warn_if_singular(count_a: int, count_b: int, dim: int) -> None:
    fewest = min(count_a, count_b)
    if fewest <= dim:
        warnings.warn(f"FID from {fewest} images in {dim} feature dimensions: the covariance is singular and "
                      "the value biased upward, so compare FIDs only at equal image counts",
                      RuntimeWarning, stacklevel=3)


def frechet(real: Features | RunningStats, fake: Features | RunningStats) -> float:
    """Fréchet distance between two ``(n, dim)`` feature matrices or ``RunningStats`` (either may be either).

    A feature matrix with no more rows than dimensions (150 images in the Inception's 2048) takes
    ``frechet_distance_few_images``: the same value, its eigenvalues found in n dimensions instead
    of dim. Warns when a set has no more images than dimensions, where its covariance is singular
    and the distance biased upward.
    """
    def few(x: Features | RunningStats) -> bool:
        return not isinstance(x, RunningStats) and len(x) <= x.shape[1]

    def stats(x: Features | RunningStats) -> RunningStats:
        return x if isinstance(x, RunningStats) else RunningStats(x.shape[1]).update(x)

    given = real if few(real) else fake if few(fake) else None
    if given is None:
        a, b = stats(real), stats(fake)
        value, counts, dim = frechet_distance(a.mean, a.cov, b.mean, b.cov), (a.count, b.count), a.dim
    else:
        other = stats(fake if given is real else real)
        if isinstance(given, torch.Tensor):
            given = given.detach().cpu().numpy()
        value = frechet_distance_few_images(given, other.mean, other.cov)
        counts, dim = (len(given), other.count), other.dim
    _warn_if_singular(*counts, dim)  # after the distance: input it refuses gets its error alone
    return value
