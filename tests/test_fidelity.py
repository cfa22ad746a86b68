"""Fidelity metrics: KID against torchmetrics, precision/recall/density/coverage against brute force, the
Fréchet distance on features or statistics, the classifier as an extractor, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from synthmed.evaluation.classifier import Classifier, ClassifierConfig
from synthmed.evaluation.fidelity import FeatureCache, evaluate_fidelity
from synthmed.metrics.density_coverage import density_coverage
from synthmed.metrics.extractors import ClassifierFeatures, PixelFeatures
from synthmed.metrics.fid import RunningStats, frechet, frechet_distance
from synthmed.metrics.kid import kid
from synthmed.metrics.precision_recall import precision_recall


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, (n, dim))


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_on_full_sets():
    # subset_size = n: every subset is the whole set in some order, and MMD^2 ignores the order,
    # so torchmetrics' torch.randperm sampling and ours pick the same subsets.
    real, fake = gaussian(40, 16, 0), gaussian(40, 16, 1, shift=0.3)
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=3, subset_size=40)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected_mean, expected_std = (float(v) for v in metric.compute())
    mean, std = kid(real, fake, subsets=3, subset_size=1000)  # capped at 40
    print(f"KID full sets: ours {mean!r}, torchmetrics {expected_mean!r}, relative {relative(mean, expected_mean):.2e}")
    assert relative(mean, expected_mean) <= 1e-3
    assert std == pytest.approx(expected_std, abs=1e-9)  # both 0: the same value thrice


def test_kid_equals_torchmetrics_poly_mmd_on_the_same_subsets():
    real, fake = gaussian(70, 12, 2), gaussian(50, 12, 3, shift=0.5)
    subsets, size, seed = 5, 20, 7
    rng = np.random.default_rng(seed)  # the draws kid() makes: real then fake indices, per subset
    scores = []
    for _ in range(subsets):
        r = torch.from_numpy(real[rng.choice(len(real), size, replace=False)])
        f = torch.from_numpy(fake[rng.choice(len(fake), size, replace=False)])
        scores.append(float(poly_mmd(r, f, degree=3, gamma=None, coef=1.0)))
    mean, std = kid(real, fake, subsets=subsets, subset_size=size, seed=seed)
    print(f"KID subsets: mean relative {relative(mean, np.mean(scores)):.2e}, "
          f"std relative {relative(std, np.std(scores)):.2e}")
    assert relative(mean, np.mean(scores)) <= 1e-3
    assert relative(std, np.std(scores)) <= 1e-3
    assert kid(real, fake, subsets=subsets, subset_size=size, seed=seed) == (mean, std)  # seeded


def knn_radii_reference(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    radii = []
    for i in range(len(x)):
        others = sorted(d[i, j] for j in range(len(x)) if j != i)
        radii.append(others[k - 1])
    return np.array(radii)


def prdc_reference(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The definitions, written out with a full distance matrix and loops."""
    d = np.sqrt(((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1))  # (n_real, n_fake)
    r_real, r_fake = knn_radii_reference(real, k_pr), knn_radii_reference(fake, k_pr)
    precision = np.mean([any(d[i, j] <= r_real[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(d[i, j] <= r_fake[j] for j in range(len(fake))) for i in range(len(real))])
    r_dc = knn_radii_reference(real, k_dc)
    density = sum(d[i, j] <= r_dc[i] for i in range(len(real)) for j in range(len(fake))) / (k_dc * len(fake))
    coverage = np.mean([any(d[i, j] <= r_dc[i] for j in range(len(fake))) for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def prdc(real: np.ndarray, fake: np.ndarray, block: int = 4096) -> dict[str, float]:
    precision, recall = precision_recall(real, fake, k=3, block=block)
    density, coverage = density_coverage(real, fake, k=5, block=block)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_prdc_equals_brute_force(shift):
    real, fake = gaussian(60, 8, 4), gaussian(50, 8, 5, shift=shift)
    got, expected = prdc(real, fake, block=7), prdc_reference(real, fake, 3, 5)  # tiles of 7: their edges
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(isinstance(v, float) for v in got.values())


def test_prdc_equals_brute_force_on_duplicates_far_from_the_origin():
    # Duplicated rows put fakes exactly on real balls' edges, and at 100 from the origin the distance
    # expansion rounds by more than nothing: every such tie must still be decided as the definition does.
    x = gaussian(60, 16, 12) + 100.0
    real = np.concatenate([x, x[:15]])
    fake = np.concatenate([real[5:40], gaussian(10, 16, 13) + 100.0])
    assert prdc(real, fake, block=7) == prdc_reference(real, fake, 3, 5)


def test_prdc_extremes():
    real = gaussian(60, 8, 6)
    same = prdc(real, real.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=0.25)
    far = prdc(real, gaussian(60, 8, 7, shift=50.0))
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_frechet_accepts_features_or_stats():
    a, b = gaussian(80, 6, 8), gaussian(90, 6, 9, shift=0.4)
    expected = frechet_distance(a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False))
    stats_b = RunningStats(6).update(b)
    assert frechet(a, b) == pytest.approx(expected, rel=1e-12)
    assert frechet(torch.from_numpy(a), stats_b) == pytest.approx(expected, rel=1e-12)
    assert frechet(a, a) == pytest.approx(0.0, abs=1e-8)


def test_feature_cache_computes_once_per_extractor(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(3, 2) + len(calls)

    first = cache.get("test-set", "pixels", 32, compute)
    again = cache.get("test-set", "pixels", 32, compute)
    assert len(calls) == 1 and np.array_equal(first, again) and again.dtype == np.float32
    other = cache.get("test-set", "inception", 32, compute)
    assert len(calls) == 2 and not np.array_equal(first, other)
    cache.get("test-set", "pixels", 64, compute)
    assert len(calls) == 3
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy"] * 3  # no temporary files left behind


def test_classifier_features_fit_the_extractor_protocol():
    classifier = Classifier(ClassifierConfig(device="cpu", batch_size=3), image_channels=1, label_names=["a", "b"])
    extractor = ClassifierFeatures(classifier)
    images = torch.from_numpy(np.random.default_rng(10).integers(0, 256, (4, 1, 32, 32), dtype=np.uint8))
    features = extractor(images)  # two batches of the classifier's batch size
    assert features.shape == (4, extractor.dim) == (4, 1024)
    assert features.dtype == torch.float32 and not extractor.standard_fid
    with pytest.raises(TypeError):
        extractor(images.float())


def test_evaluate_fidelity_reports_every_metric_and_uses_the_cache(tmp_path):
    rng = np.random.default_rng(11)
    real = rng.integers(0, 256, (30, 1, 16, 16), dtype=np.uint8)
    fake = rng.integers(0, 256, (20, 1, 16, 16), dtype=np.uint8)
    cache = FeatureCache(tmp_path)
    results = evaluate_fidelity(real, fake, {"pixels": PixelFeatures()}, cache=cache, real_key="real-test",
                                kid_subsets=4, kid_subset_size=10)
    row = results["pixels"]
    assert set(row) == {"fd", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
                        "n_real", "n_fake", "standard_fid", "extractor"}
    assert (row["n_real"], row["n_fake"], row["standard_fid"]) == (30, 20, False)
    assert len(list(tmp_path.iterdir())) == 1  # only the keyed (real) set is cached
    again = evaluate_fidelity(real, fake, {"pixels": PixelFeatures()}, cache=cache, real_key="real-test",
                              kid_subsets=4, kid_subset_size=10)
    assert again == results
