"""Per-label AUROC of a multi-label classifier: scikit-learn's ``roc_auc_score`` on each label's column,
without the two scoring flaws of the paper's release (tests/test_utility.py).

The release replaced a test AUROC below 0.5 with 1 - AUROC (which flatters weak
synthetic-data models) and scored a validation label without positives as 0. Here
an AUROC below 0.5 is reported as it is, and a label whose fold lacks positives or
negatives is *undefined*: reported as None with the reason, left out of the mean,
and named in a warning.

``release_flip`` recomputes the release's flipped test AUROC from an honest one, only so
that a result can be set beside the paper's tables (and the flattery seen); synthmed never
uses it in a verdict, a test or a stopping rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def undefined_labels(labels: np.ndarray, label_names: Sequence[str]) -> dict[str, str]:
    """Label name -> why its AUROC cannot be computed on this fold (only those labels)."""
    labels = np.asarray(labels)
    reasons = {}
    for j, name in enumerate(label_names):
        positives = int((labels[:, j] == 1).sum())
        if positives == 0:
            reasons[name] = "no positives in the fold"
        elif positives == len(labels):
            reasons[name] = "no negatives in the fold"
    return reasons


def auroc_per_label(labels: np.ndarray, scores: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
    """AUROC of every label and their mean over the defined ones.

    Returns ``{"per_label": {name: float | None}, "mean": float | None,
    "undefined": [names], "reasons": {name: reason}}``; ``mean`` is None only when
    no label is defined.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape or labels.shape[1] != len(label_names):
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must both be (N, {len(label_names)})")
    reasons = undefined_labels(labels, label_names)
    per_label: dict[str, float | None] = {}
    for j, name in enumerate(label_names):
        if name in reasons:
            warnings.warn(f"AUROC of label {name!r} is undefined ({reasons[name]}); left out of the mean",
                          stacklevel=2)
            per_label[name] = None
        else:
            per_label[name] = float(roc_auc_score(labels[:, j], scores[:, j]))
    return {"per_label": per_label, "mean": _mean_of_defined(per_label), "undefined": list(reasons),
            "reasons": reasons}


def release_flip(auroc: dict[str, Any]) -> dict[str, Any]:
    """The paper's release's test AUROC from ``auroc_per_label``'s result: each defined label's
    AUROC below 0.5 replaced by 1 - AUROC before the mean (undefined labels stay undefined).

    Returns ``{"per_label", "mean", "flipped": [names]}``. For comparison with the paper's tables
    only: it rewards a classifier for ranking a label backwards, so no verdict uses it.
    """
    per_label = {name: None if v is None else max(v, 1.0 - v) for name, v in auroc["per_label"].items()}
    flipped = [name for name, v in auroc["per_label"].items() if v is not None and v < 0.5]
    return {"per_label": per_label, "mean": _mean_of_defined(per_label), "flipped": flipped}


def _mean_of_defined(per_label: dict[str, float | None]) -> float | None:
    defined = [v for v in per_label.values() if v is not None]
    return float(np.mean(defined)) if defined else None
