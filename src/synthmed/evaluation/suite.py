"""Fidelity and privacy of a synthetic set against its real setting, written as JSON + figures.

Both read the real-data classifier that ``evaluate utility`` saved (``real_classifier.pt``):
its 1024-d pooled features give the in-domain Fréchet distance and the nearest-neighbour
space of the paper (S.6). The synthetic train fold is compared with the real train fold; the
real test fold serves as the holdout for the privacy baselines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthmed._io import write_json_atomic
from synthmed.data.settings import BenchmarkSetting
from synthmed.evaluation.classifier import load_classifier
from synthmed.evaluation.fidelity import ClassifierFeatures, FeatureCache, evaluate_fidelity, extract_features
from synthmed.evaluation.privacy import nearest_neighbours, nn_grid, privacy_report
from synthmed.training.features import make_extractor


def _pair(real_setting_dir, synthetic_setting_dir) -> tuple[BenchmarkSetting, BenchmarkSetting]:
    return BenchmarkSetting(real_setting_dir), BenchmarkSetting(synthetic_setting_dir)


def evaluate_fidelity_run(real_setting_dir: str | os.PathLike, synthetic_setting_dir: str | os.PathLike,
                          classifier_path: str | os.PathLike, out_dir: str | os.PathLike,
                          extractors: tuple[str, ...] = ("inception",), max_images: int | None = None,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """FD/KID/PRDC on each named extractor plus the in-domain classifier features."""
    real, synthetic = _pair(real_setting_dir, synthetic_setting_dir)
    classifier, _ = load_classifier(classifier_path)
    chosen = {name: make_extractor(name) for name in extractors}
    chosen["in-domain"] = ClassifierFeatures(classifier)
    real_images, fake_images = real.images("train"), synthetic.images("train")
    if max_images:  # the first rows of a seeded draw, so that a CPU run fits its time
        rng = np.random.default_rng(0)
        real_images = real_images[np.sort(rng.permutation(len(real_images))[:max_images])]
        fake_images = fake_images[np.sort(rng.permutation(len(fake_images))[:max_images])]
    out_dir = Path(out_dir)
    log(f"fidelity on {len(real_images)} real and {len(fake_images)} synthetic training images: {list(chosen)}")
    metrics = evaluate_fidelity(real_images, fake_images, chosen, cache=FeatureCache(out_dir / "feature_cache"),
                                real_key=f"{real.meta['store_content_hash']}:{real.path.name}:train:{max_images}",
                                kid_subset_size=min(1000, len(real_images), len(fake_images)))
    result = {"real_setting": str(real.path), "synthetic_setting": str(synthetic.path), "metrics": metrics}
    write_json_atomic(out_dir / "fidelity.json", result)
    for name, row in metrics.items():
        log(f"{row['extractor']}: FD {row['fd']:.2f}, KID {row['kid_mean']:.4f}, precision {row['precision']:.3f}, "
            f"recall {row['recall']:.3f}, density {row['density']:.3f}, coverage {row['coverage']:.3f}")
    return result


def evaluate_privacy_run(real_setting_dir: str | os.PathLike, synthetic_setting_dir: str | os.PathLike,
                         classifier_path: str | os.PathLike, out_dir: str | os.PathLike,
                         copy_quantile: float = 0.01, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Nearest neighbours (cosine, classifier features), DCR, copy rate, MIA AUC, verdict, NN grid."""
    real, synthetic = _pair(real_setting_dir, synthetic_setting_dir)
    classifier, _ = load_classifier(classifier_path)
    features = ClassifierFeatures(classifier)
    train_images = real.images("train")
    train, holdout = extract_features(features, train_images), extract_features(features, real.images("test"))
    synthetic_images = synthetic.images("test")
    fake = extract_features(features, synthetic_images)
    report = privacy_report(train, holdout, fake, metric="cosine", copy_quantile=copy_quantile)
    distances, indices = nearest_neighbours(fake, train, metric="cosine")
    closest = np.argsort(distances[:, 0], kind="stable")  # the likeliest copies first
    out_dir = Path(out_dir)
    nn_grid(synthetic_images[closest], train_images, indices[closest], out_dir / "nearest_neighbours.png")
    result = {"real_setting": str(real.path), "synthetic_setting": str(synthetic.path),
              "feature_space": features.name, **report, "figure": "nearest_neighbours.png"}
    write_json_atomic(out_dir / "privacy.json", result)
    log(f"privacy: verdict {report['verdict']}; copy rate {report['copy']['rate']:.3f} "
        f"(threshold = holdout DCR {copy_quantile:.0%} quantile {report['copy']['threshold']:.4f}); "
        f"MIA AUC {report['mia']['auc']:.3f}; median DCR synthetic/holdout {report['dcr']['median_ratio']}")
    return result
