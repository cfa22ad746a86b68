"""Fidelity of a synthetic image set against a real one, for several feature extractors at once.

``evaluate_fidelity`` runs every metric of ``synthmed.metrics`` that compares two image sets
(Fréchet distance, KID, precision/recall, density/coverage) for each extractor, with
``FeatureCache`` so that the features of a fixed real set are computed once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed._io import write_with_atomic
from synthmed.metrics.arrays import Features
from synthmed.metrics.density_coverage import DC_K, density_coverage
from synthmed.metrics.extractors import FeatureExtractor, extract_features
from synthmed.metrics.fid import frechet
from synthmed.metrics.kid import kid
from synthmed.metrics.precision_recall import PR_K, precision_recall

MIN_IMAGES = max(PR_K, DC_K) + 1  # each image's k-th nearest other image must exist


class FeatureCache:
    """Features stored as ``.npy`` in ``directory``, one file per (data set key, extractor, resolution).

    The triple is hashed into the file name, so any key string is safe; the key must change
    whenever the data set's content does (e.g. include the store's digest), and the extractor is
    named by its ``cache_name`` (a trained classifier's includes its weights).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, key: str, extractor: str, resolution: int) -> Path:
        identity = json.dumps([key, extractor, int(resolution)])
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.npy"

    def get(self, key: str, extractor: str, resolution: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path(key, extractor, resolution)
        if path.is_file():
            return np.load(path)
        features = np.asarray(compute())

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file handle: np.save would append .npy to the temporary name
                np.save(f, features)
        write_with_atomic(path, save)
        return features

    def features(self, key: str, extractor: FeatureExtractor, images: Features, progress: bool = False) -> np.ndarray:
        """``extractor``'s features of ``images``, the data set under ``key``: read back, or computed (with a
        progress bar if asked) and kept."""
        return self.get(key, extractor.cache_name, images.shape[-1],
                        lambda: extract_features(extractor, images, progress))


def evaluate_fidelity(real_images: Features, fake_images: Features, extractors: dict[str, FeatureExtractor],
                      cache: FeatureCache | None = None, real_key: str | None = None, fake_key: str | None = None,
                      kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = PR_K,
                      dc_k: int = DC_K, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Every metric for every extractor: ``{name: {fd, kid_mean, kid_std, precision, recall, density,
    coverage, n_real, n_fake, standard_fid, extractor}}``.

    With a ``cache``, the features of a set are read from / written to it under its key
    (``real_key``, ``fake_key``); a set without a key is always recomputed. ``progress``: a bar per
    feature extraction (the standard Inception takes about 0.2 s per image on two CPU cores).
    """
    def features(extractor: FeatureExtractor, images: Features, key: str | None) -> np.ndarray:
        if cache is None or key is None:
            return extract_features(extractor, images, progress)
        return cache.features(key, extractor, images, progress)

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
