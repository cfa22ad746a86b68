"""The evaluation folder of a synthetic set: the names of the files ``synthmed evaluate`` writes.

::

    utility.json                 AUROCs of both classifiers on the real test fold (evaluate utility)
    real_classifier.pt           the classifier trained on the real setting (reused when it matches)
    synthetic_classifier.pt      the classifier trained on the synthetic set
    fidelity.json  feature_cache/    FD, KID, PRDC; real features cached by fidelity and privacy
    privacy.json  nearest_neighbours_<space>.png   the audit and its closest pairs (evaluate privacy)
    importance.json  importance.png  occlusion maps and their similarity (evaluate importance)

Several evaluations may share a folder (every model of a setting can reuse one real
classifier), so a folder that holds other files is not refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from synthmed.output_dir import check_output_path

UTILITY = "utility.json"
REAL_CLASSIFIER = "real_classifier.pt"
SYNTHETIC_CLASSIFIER = "synthetic_classifier.pt"
FIDELITY = "fidelity.json"
PRIVACY = "privacy.json"
IMPORTANCE = "importance.json"
IMPORTANCE_FIGURE = "importance.png"
FEATURE_CACHE = "feature_cache"


class EvalDir:
    """An evaluation folder's files by name."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def for_writing(cls, path: str | os.PathLike, option: str = "--out") -> EvalDir:
        """The folder an evaluation is written to, checked before any work (a file, or not writable, is refused)."""
        return cls(check_output_path(path, option, staged=False))

    @property
    def utility(self) -> Path:
        return self.path / UTILITY

    @property
    def real_classifier(self) -> Path:
        return self.path / REAL_CLASSIFIER

    @property
    def synthetic_classifier(self) -> Path:
        return self.path / SYNTHETIC_CLASSIFIER

    @property
    def fidelity(self) -> Path:
        return self.path / FIDELITY

    @property
    def privacy(self) -> Path:
        return self.path / PRIVACY

    @property
    def importance(self) -> Path:
        return self.path / IMPORTANCE

    @property
    def importance_figure(self) -> Path:
        return self.path / IMPORTANCE_FIGURE

    @property
    def feature_cache(self) -> Path:
        return self.path / FEATURE_CACHE

    def nn_grid(self, space: str) -> Path:
        """The closest synthetic-training pairs of the privacy audit in one space (features, pixels)."""
        return self.path / f"nearest_neighbours_{space}.png"
