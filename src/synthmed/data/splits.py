"""Group-level train / val / test split, stratified by label combination.

Ten stratified group folds (scikit-learn's ``StratifiedGroupKFold``): fold 0 is the test
fold, fold 1 the validation fold, the other eight the training fold, i.e. 80/10/10 by
group. A patient (or near-duplicate group) is never in two folds. Strata are the label
combinations with at least ``MIN_STRATUM`` images; the rarer ones form one stratum.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from synthmed.data.records import combination_key

N_FOLDS = 10
# Label combinations with fewer images than this share one "rare" stratum. They cannot be
# spread evenly over ten folds anyway, and CheXpert alone has ~2400 combinations, which
# makes StratifiedGroupKFold (cost ~ groups x folds x strata) take minutes instead of seconds.
MIN_STRATUM = 100


def grouped_split(labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Return an array of ``"train"`` / ``"val"`` / ``"test"``, one per row."""
    n = len(labels)
    if len(np.unique(groups)) < N_FOLDS:
        raise ValueError(f"only {len(np.unique(groups))} groups: a 80/10/10 group split needs at least {N_FOLDS}")
    strata = _strata(combination_key(labels))
    splitter = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    split = np.full(n, "train", dtype=object)
    with warnings.catch_warnings():
        # Rare label combinations (fewer rows than folds) cannot be in every fold; that is expected.
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(n), strata, groups)):
            if fold == 0:
                split[held_out] = "test"
            elif fold == 1:
                split[held_out] = "val"
            else:
                break
    return split


def _strata(keys: np.ndarray) -> np.ndarray:
    counts = pd.Series(keys).value_counts()
    rare = set(counts.index[counts < MIN_STRATUM])
    return np.array(["rare" if k in rare else k for k in keys], dtype=object)
