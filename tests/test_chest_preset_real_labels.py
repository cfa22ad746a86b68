"""The chest preset on CheXpert's real label table reproduces the paper's Table S1.

The table (train.csv, 223,414 rows) ships in the torchxrayvision wheel; only the CSV is
read. No pixels are needed: settings depend on labels, patients and folds alone.
"""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import real_chexpert_csv
from synthmed.data import load_preset, plan_settings
from synthmed.data.sources.chexpert import FINDINGS, labels_from_csv
from synthmed.data.splits import grouped_split

# Table S1, chest: (label combinations, labels left, train, val) per setting
TABLE_S1_CLASSES = {20: (9, 29000, 3800), 15: (8, 24000, 2850), 10: (5, 20000, 1900),
                    6: (5, 13800, 1140), 4: (5, 15600, 760), 2: (4, 12600, 380)}
TABLE_S1_SAMPLES = {5950: 17850, 4500: 13500, 3000: 9000, 1500: 4500, 1000: 3000, 500: 1500, 400: 1200, 200: 600}


@pytest.mark.slow
def test_chest_preset_matches_table_s1_on_real_chexpert_labels():
    table = labels_from_csv(real_chexpert_csv())
    labels = table[FINDINGS].to_numpy()
    splits = grouped_split(labels, pd.factorize(table["patient"])[0], seed=0)
    built = {f"{d}/{n}": meta for d, n, meta, _ in plan_settings(load_preset("chest"), labels, splits, FINDINGS)}

    for k, (n_labels, n_train, n_val) in TABLE_S1_CLASSES.items():
        meta = built[f"classes/k{k}_n{n_train // k}"]
        assert len(meta["combinations"]) == k
        assert len(meta["label_names"]) == n_labels, meta["label_names"]
        assert meta["counts"]["train"] == n_train and meta["counts"]["val"] == n_val
    for n, n_train in TABLE_S1_SAMPLES.items():
        meta = built[f"samples/n{n}"]
        assert (len(meta["combinations"]), len(meta["label_names"])) == (3, 4)
        assert meta["counts"] == {"train": n_train, "val": 2250, "test": 2250}
    for resolution in (32, 64, 128, 256, 512):
        meta = built[f"resolution/r{resolution}"]
        assert (len(meta["combinations"]), len(meta["label_names"])) == (138, 14)  # Table S1: 138 and 14
        assert meta["counts"]["val"] == meta["counts"]["test"] == 4000
        train_sizes = [c["train"] for c in meta["combinations"]]
        assert min(train_sizes) >= 200 and max(train_sizes) > 7000  # Table S1: 256 - 7586 per combination
