"""Privacy of a synthetic image set: nearest real neighbours, copies and membership inference.

The paper (3.4, S.6) only looks at synthetic images beside their nearest training image in
the real-data classifier's 1024-d feature space (cosine distance). Here the same neighbours
are turned into numbers: distance to closest record (DCR), a copy rate calibrated on real
holdout images, and a distance-based membership-inference attack. Features in, numbers out;
pixel arrays flattened to (N, D) work the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from synthmed._io import write_with_atomic
from synthmed.training.config import ConfigError

# Verdict rules. The copy-rate limits are multiples of ``copy_quantile`` because a clean
# generator is expected to land below the holdout's q-quantile about a fraction q of the
# time (a holdout image is as "new" to the training set as a good synthetic image should be).
# The AUC limits sit above the sampling noise of a no-leakage attack: with n members and n
# non-members the AUC's standard deviation is about sqrt(1/(6n)) (0.03 at n = 200).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "copy_rate_fail_factor": 5.0,  # fail if copy_rate > 5 x copy_quantile
    "copy_rate_warn_factor": 2.0,  # warn if copy_rate > 2 x copy_quantile
    "mia_auc_fail": 0.60,
    "mia_auc_warn": 0.55,
}

_GAP = 2  # white pixels between the tiles of nn_grid


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    return x


def nearest_neighbours(
    queries: np.ndarray,
    references: np.ndarray,
    metric: str = "cosine",
    k: int = 1,
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references of every query: ``(distances (Q, k), indices (Q, k))``.

    ``metric`` is "cosine" (1 - cosine similarity; a zero vector has distance 1 to everything,
    as in scikit-learn) or "euclidean". Rows are sorted by distance. Work is done on tiles of
    ``block`` queries x ``block`` references whose running top-k is merged, so peak memory is
    O(block**2) float64 (about 130 MB at the default) beyond a float64 copy of the inputs,
    independent of Q and R: 100k+ references are fine. Everything is float64, because the interesting distances (copies)
    are tiny differences of large dot products; euclidean winners are recomputed as
    ||q - r|| since the square root would magnify the expansion's rounding. Among equal distances the lower reference
    index comes first, except that a tie across the k-th place may keep any of the tied ones.
    """
    q, r = _as_2d("queries", queries), _as_2d("references", references)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features, references {r.shape[1]}")
    if not 1 <= k <= len(r):
        raise ValueError(f"k must be in [1, {len(r)}], got {k}")
    if metric == "cosine":
        q = q / np.where((n := np.linalg.norm(q, axis=1, keepdims=True)) > 0, n, 1.0)
        r = r / np.where((n := np.linalg.norm(r, axis=1, keepdims=True)) > 0, n, 1.0)
    elif metric == "euclidean":
        q_sq, r_sq = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", r, r)
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")

    distances = np.empty((len(q), k))
    indices = np.empty((len(q), k), dtype=np.int64)
    for qs in range(0, len(q), block):
        qb = q[qs : qs + block]
        best_d = np.full((len(qb), k), np.inf)
        best_i = np.full((len(qb), k), -1, dtype=np.int64)
        for rs in range(0, len(r), block):
            dot = qb @ r[rs : rs + block].T
            if metric == "cosine":
                d = 1.0 - dot
            else:
                d = q_sq[qs : qs + block, None] + r_sq[None, rs : rs + block] - 2.0 * dot
            np.maximum(d, 0.0, out=d)  # rounding can dip below zero for identical rows
            kk = min(k, d.shape[1])
            part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
            # Old candidates first so that a stable sort keeps lower indices ahead on ties.
            cand_d = np.concatenate([best_d, np.take_along_axis(d, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + rs], axis=1)
            order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(cand_d, order, axis=1)
            best_i = np.take_along_axis(cand_i, order, axis=1)
        if metric == "euclidean":
            # The expansion loses ~1e-8 x norm after the square root; recompute the winners'
            # distances directly so near-copies get their true, tiny distance.
            best_d = np.linalg.norm(qb[:, None, :] - r[best_i], axis=2)
            order = np.argsort(best_d, axis=1, kind="stable")
            best_d, best_i = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)
        distances[qs : qs + block], indices[qs : qs + block] = best_d, best_i
    return distances, indices


def _summary(d: np.ndarray) -> dict[str, float]:
    return {
        "median": float(np.median(d)),
        "p01": float(np.percentile(d, 1)),
        "p05": float(np.percentile(d, 5)),
        "n": int(len(d)),
    }


def check_copy_quantile(copy_quantile: float) -> None:
    if not 0.0 < copy_quantile < 1.0:
        raise ConfigError(f"copy_quantile = {copy_quantile} must be in (0, 1): the holdout DCR quantile that "
                          "counts as a copy")


def privacy_report(
    train_features: np.ndarray,
    holdout_features: np.ndarray,
    synthetic_features: np.ndarray,
    metric: str = "cosine",
    copy_quantile: float = 0.01,
    thresholds: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """DCR, copy rate, membership-inference AUC and a pass/warn/fail verdict (JSON-ready).

    * ``dcr``: distance of each synthetic and each holdout image to its closest training
      image; medians, 1st/5th percentiles and ``median_ratio`` = synthetic / holdout median
      (well below 1 means synthetics sit closer to training images than unseen real ones do).
    * ``copy``: fraction of synthetic images whose DCR is strictly below the ``copy_quantile``
      quantile of the holdout DCRs, with that quantile and threshold.
    * ``mia``: members (training) vs non-members (holdout), equal numbers, the larger side
      subsampled with ``seed``; each scored by minus its distance to the closest synthetic
      image. AUC 0.5 = no leakage, 1 = every member has a synthetic copy.
    * ``verdict``: "fail" if copy_rate > 5 x copy_quantile or MIA AUC > 0.60, else "warn" if
      copy_rate > 2 x copy_quantile or MIA AUC > 0.55, else "pass" (override through
      ``thresholds``, keys of DEFAULT_THRESHOLDS); ``reasons`` lists the rules that fired.
    """
    check_copy_quantile(copy_quantile)
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(limits) - set(DEFAULT_THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown thresholds: {sorted(unknown)}")
    train = _as_2d("train_features", train_features)
    holdout = _as_2d("holdout_features", holdout_features)
    synthetic = _as_2d("synthetic_features", synthetic_features)

    syn_dcr = nearest_neighbours(synthetic, train, metric)[0][:, 0]
    hold_dcr = nearest_neighbours(holdout, train, metric)[0][:, 0]
    hold_median = float(np.median(hold_dcr))
    copy_threshold = float(np.quantile(hold_dcr, copy_quantile))
    copy_rate = float(np.mean(syn_dcr < copy_threshold))

    rng = np.random.default_rng(seed)
    n = min(len(train), len(holdout))
    members = train[np.sort(rng.choice(len(train), n, replace=False))] if len(train) > n else train
    others = holdout[np.sort(rng.choice(len(holdout), n, replace=False))] if len(holdout) > n else holdout
    real_to_syn = nearest_neighbours(np.concatenate([members, others]), synthetic, metric)[0][:, 0]
    mia_auc = float(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], -real_to_syn))

    fail_copy = limits["copy_rate_fail_factor"] * copy_quantile
    warn_copy = limits["copy_rate_warn_factor"] * copy_quantile
    reasons = [
        f"{level}: {what} {value:.4f} > {limit:.4f}"
        for level, what, value, limit in [
            ("fail", "copy_rate", copy_rate, fail_copy),
            ("fail", "mia_auc", mia_auc, limits["mia_auc_fail"]),
            ("warn", "copy_rate", copy_rate, warn_copy),
            ("warn", "mia_auc", mia_auc, limits["mia_auc_warn"]),
        ]
        if value > limit
    ]
    verdict = "fail" if any(x.startswith("fail") for x in reasons) else "warn" if reasons else "pass"
    return {
        "metric": metric,
        "dcr": {
            "synthetic": _summary(syn_dcr),
            "holdout": _summary(hold_dcr),
            # None rather than inf: the holdout itself contains training duplicates then.
            "median_ratio": float(np.median(syn_dcr)) / hold_median if hold_median > 0 else None,
        },
        "copy": {"quantile": copy_quantile, "threshold": copy_threshold, "rate": copy_rate},
        "mia": {"auc": mia_auc, "n_per_side": n, "seed": seed},
        "verdict": verdict,
        "reasons": reasons,
        "thresholds": {
            "copy_rate_fail": fail_copy,
            "copy_rate_warn": warn_copy,
            "mia_auc_fail": limits["mia_auc_fail"],
            "mia_auc_warn": limits["mia_auc_warn"],
        },
    }


def _tile(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) or (H, W, 3) for Pillow."""
    if image.shape[0] == 1:
        return image[0]
    if image.shape[0] == 3:
        return np.moveaxis(image, 0, -1)
    raise ValueError(f"images need 1 or 3 channels, got {image.shape[0]}")


def nn_grid(
    synthetic_images: np.ndarray,
    train_images: np.ndarray,
    indices: np.ndarray,
    path: str | os.PathLike,
    n: int = 8,
) -> None:
    """PNG of the first ``n`` synthetic images (top row) over their nearest real image (bottom).

    ``indices`` are the nearest-training indices from ``nearest_neighbours`` ((N,) or (N, k);
    the first column is used). Order the synthetics beforehand to choose which are shown,
    e.g. by ascending DCR to inspect the likeliest copies. Tiles are separated by a white gap
    of 2 pixels; the file is written atomically.
    """
    synthetic_images = np.asarray(synthetic_images)
    if synthetic_images.dtype != np.uint8 or synthetic_images.ndim != 4:
        raise ValueError("synthetic_images must be uint8 (N, C, H, W)")
    nearest = np.asarray(indices).reshape(len(synthetic_images), -1)[:, 0]
    n = min(n, len(synthetic_images))
    c, h, w = synthetic_images.shape[1:]
    canvas = np.full((2 * h + _GAP, n * w + (n - 1) * _GAP, *(() if c == 1 else (3,))), 255, np.uint8)
    for j in range(n):
        x = j * (w + _GAP)
        canvas[:h, x : x + w] = _tile(synthetic_images[j])
        canvas[h + _GAP :, x : x + w] = _tile(np.asarray(train_images[nearest[j]], dtype=np.uint8))
    write_with_atomic(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"), suffix=".png")
