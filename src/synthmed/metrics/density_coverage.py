"""Density and coverage (Naeem et al. 2020) of a fake feature set against a real one, from the real
k-nearest-neighbour balls only (robust to fake outliers). Equal to the definition written out with
a full distance matrix and loops, to the last bit (tests/test_fidelity.py).
"""

from __future__ import annotations

from synthmed.metrics.arrays import Features, as_matrix
from synthmed.metrics.knn import BLOCK, balls_holding, knn_radii

DC_K = 5  # the paper's default k


def density_coverage(real_features: Features, fake_features: Features, k: int = DC_K,
                     block: int = BLOCK) -> tuple[float, float]:
    """(density, coverage). Density: mean number of real balls holding each fake sample, divided by k
    (about 1 when the sets match, above 1 when fakes crowd dense real regions). Coverage: share of
    real balls that hold at least one fake sample. ``block``: see ``metrics.knn``."""
    real, fake = as_matrix("real_features", real_features), as_matrix("fake_features", fake_features)
    held, holds = balls_holding(fake, real, knn_radii(real, k, block), block)
    return int(held.sum()) / (k * len(fake)), float((holds > 0).mean())
