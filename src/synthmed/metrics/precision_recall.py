"""Improved precision and recall (Kynkäänniemi et al. 2019) of a fake feature set against a real one,
from k-nearest-neighbour balls. Equal to the definition written out with a full distance matrix
and loops, to the last bit (tests/test_fidelity.py): the balls are the exact ``metrics.knn`` ones.
"""

from __future__ import annotations

import numpy as np

from synthmed.metrics.arrays import Features, as_matrix
from synthmed.metrics.knn import BLOCK, balls_holding, knn_radii

PR_K = 3  # the paper's default k


def _share_in_manifold(points: np.ndarray, centres: np.ndarray, k: int, block: int) -> float:
    """Share of ``points`` inside the manifold of ``centres``: the union of the closed balls around each
    centre reaching its k-th nearest other centre."""
    held, _ = balls_holding(points, centres, knn_radii(centres, k, block), block)
    return int((held > 0).sum()) / len(points)


def precision_recall(real_features: Features, fake_features: Features, k: int = PR_K,
                     block: int = BLOCK) -> tuple[float, float]:
    """(precision, recall). Precision: share of fake samples inside the real manifold; recall: share of
    real samples inside the fake manifold, built the same way. ``block``: see ``metrics.knn``."""
    real, fake = as_matrix("real_features", real_features), as_matrix("fake_features", fake_features)
    return _share_in_manifold(fake, real, k, block), _share_in_manifold(real, fake, k, block)
