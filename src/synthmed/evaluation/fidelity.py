"""Fidelity of a synthetic image set against a real one: plain feature arrays in, numbers out.

One function per metric, as torch-fidelity and scikit-learn do it:

- ``frechet``: the Fréchet distance (FID with the standard Inception features), via
  ``synthmed.training.fid.frechet_distance``;
- ``kid``: Kernel Inception Distance (Bińkowski et al. 2018), unbiased MMD^2 with the cubic
  polynomial kernel, mean and std over random subsets;
- ``precision_recall`` (Kynkäänniemi et al. 2019) and ``density_coverage`` (Naeem et al. 2020),
  from k-nearest-neighbour balls around the samples.

``evaluate_fidelity`` runs them all for several feature extractors, with ``FeatureCache`` so
that the features of a fixed real set are computed once. ``ClassifierFeatures`` turns the
trained downstream classifier into an extractor for an in-domain Fréchet distance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed._io import write_with_atomic
from synthmed.evaluation.classifier import FEATURE_DIM, Classifier
from synthmed.evaluation.stats import std
from synthmed.training.features import FeatureExtractor, check_uint8_images
from synthmed.training.fid import Features, RunningStats, _batches, frechet_from_stats

PR_K, DC_K = 3, 5  # the k of precision/recall and of density/coverage (their papers' defaults)
MIN_IMAGES = max(PR_K, DC_K) + 1  # each image's k-th nearest other image must exist
# Distances are computed a block of rows at a time; a block holds at most this many float64 values (128 MiB).
_BLOCK_VALUES = 1 << 24


def _as_float64(features: Features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (n, dim) feature matrix, got shape {x.shape}")
    return x


def frechet(real: Features | RunningStats, fake: Features | RunningStats) -> float:
    """Fréchet distance between two feature matrices or ``RunningStats`` (either may be either)."""
    def stats(x: Features | RunningStats) -> RunningStats:
        return x if isinstance(x, RunningStats) else RunningStats(x.shape[1]).update(x)
    return frechet_from_stats(stats(real), stats(fake))


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
    from a seeded numpy Generator. The std is synthmed's one spread (``stats.std``, ddof 0), which is
    also how torch-fidelity and torchmetrics report it.
    """
    real, fake = _as_float64(real_features), _as_float64(fake_features)
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
    return float(np.mean(scores)), std(scores)


def _distance_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Euclidean distances from rows of ``a`` to all of ``b``, as (row slice, block) pairs of bounded size."""
    rows = max(1, _BLOCK_VALUES // max(len(b), 1))
    tb = torch.from_numpy(b)
    for start in range(0, len(a), rows):
        block = slice(start, min(start + rows, len(a)))
        yield block, torch.cdist(torch.from_numpy(a[block]), tb).numpy()


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (itself excluded by index, not by value)."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be between 1 and n - 1 = {len(x) - 1}, got {k}")
    radii = np.empty(len(x))
    for block, d in _distance_blocks(x, x):
        d[np.arange(d.shape[0]), np.arange(block.start, block.stop)] = np.inf
        radii[block] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _fraction_in_manifold(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of ``points`` inside at least one closed ball (centre, radius)."""
    inside = sum(int((d <= radii).any(axis=1).sum()) for _, d in _distance_blocks(points, centres))
    return inside / len(points)


def precision_recall(real_features: Features, fake_features: Features, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Precision: share of fake samples inside the real manifold, the union of balls around each real
    sample reaching its k-th nearest real neighbour; recall: share of real samples inside the fake
    manifold, built the same way.
    """
    real, fake = _as_float64(real_features), _as_float64(fake_features)
    precision = _fraction_in_manifold(fake, real, _knn_radii(real, k))
    recall = _fraction_in_manifold(real, fake, _knn_radii(fake, k))
    return precision, recall


def density_coverage(real_features: Features, fake_features: Features, k: int = DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), from the real k-NN balls only (robust to fake outliers).

    Density: mean number of real balls holding each fake sample, divided by k (about 1 when the
    sets match, above 1 when fakes crowd dense real regions). Coverage: share of real balls that
    hold at least one fake sample.
    """
    real, fake = _as_float64(real_features), _as_float64(fake_features)
    radii = _knn_radii(real, k)
    in_balls = 0
    covered = np.zeros(len(real), dtype=bool)
    for block, d in _distance_blocks(real, fake):  # rows: real samples, so the radii broadcast per row
        hits = d <= radii[block, None]
        in_balls += int(hits.sum())
        covered[block] = hits.any(axis=1)
    return in_balls / (k * len(fake)), float(covered.mean())


class FeatureCache:
    """Features stored as ``.npy`` in ``directory``, one file per (data set key, extractor name, resolution).

    The triple is hashed into the file name, so any key string is safe; the key must change
    whenever the data set's content does (e.g. include the store's digest).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, key: str, extractor_name: str, resolution: int) -> Path:
        identity = json.dumps([key, extractor_name, int(resolution)])
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.npy"

    def get(self, key: str, extractor_name: str, resolution: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path(key, extractor_name, resolution)
        if path.is_file():
            return np.load(path)
        features = np.asarray(compute())

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file handle: np.save would append .npy to the temporary name
                np.save(f, features)
        write_with_atomic(path, save)
        return features


class ClassifierFeatures:
    """A trained downstream ``Classifier`` as a ``FeatureExtractor``: its pooled 1024-d DenseNet features.

    The Fréchet distance over these is an in-domain FID: the network has seen only the real
    training images of this data set, so it is not comparable across data sets or with FID.
    """

    name = "densenet121-real-classifier (in-domain)"
    dim = FEATURE_DIM
    standard_fid = False

    def __init__(self, classifier: Classifier):
        self.classifier = classifier
        self.batch_size = classifier.config.batch_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_uint8_images(images)
        return torch.from_numpy(self.classifier.features(images.cpu().numpy()))


def extract_features(extractor: FeatureExtractor, images: Features) -> np.ndarray:
    """Features of uint8 (N, C, H, W) images, batch by batch (a memory-mapped store is read in slices)."""
    out = [extractor(batch).numpy() for batch in _batches(images, extractor.batch_size)]
    return np.concatenate(out) if out else np.zeros((0, extractor.dim), np.float32)


def evaluate_fidelity(real_images: Features, fake_images: Features, extractors: dict[str, FeatureExtractor],
                      cache: FeatureCache | None = None, real_key: str | None = None, fake_key: str | None = None,
                      kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = PR_K,
                      dc_k: int = DC_K) -> dict[str, dict[str, Any]]:
    """Every metric for every extractor: ``{name: {fd, kid_mean, kid_std, precision, recall, density,
    coverage, n_real, n_fake, standard_fid, extractor}}``.

    With a ``cache``, the features of a set are read from / written to it under its key
    (``real_key``, ``fake_key``); a set without a key is always recomputed.
    """
    def features(extractor: FeatureExtractor, images: Features, key: str | None) -> np.ndarray:
        if cache is None or key is None:
            return extract_features(extractor, images)
        return cache.get(key, extractor.name, images.shape[-1], lambda: extract_features(extractor, images))

    results = {}
    for name, extractor in extractors.items():
        real = features(extractor, real_images, real_key)
        fake = features(extractor, fake_images, fake_key)
        kid_mean, kid_std = kid(real, fake, subsets=kid_subsets, subset_size=kid_subset_size)
        precision, recall = precision_recall(real, fake, k=pr_k)
        density, coverage = density_coverage(real, fake, k=dc_k)
        results[name] = {"fd": frechet(real, fake), "kid_mean": kid_mean, "kid_std": kid_std,
                         "precision": precision, "recall": recall, "density": density, "coverage": coverage,
                         "n_real": len(real), "n_fake": len(fake), "standard_fid": extractor.standard_fid,
                         "extractor": extractor.name}
    return results
