"""grouped_split on a synthetic table: groups intact, 80/10/10 sizes, stratification, seeds.

Tolerances. Every group here carries a single label combination, and scikit-learn's
StratifiedGroupKFold then works class by class as a largest-group-first greedy: groups are
taken in order of decreasing std of their class counts (= decreasing size for a one-class
group) and each goes to the fold where its class is least represented. For that greedy,
the difference between the fullest and emptiest fold of one class never exceeds the size
of the largest group of that class (L_c): adding a group of size s <= L_c to the emptiest
fold either leaves the spread as it was or makes it at most s. So in every fold the count
of combination c is within L_c of n_c / 10, and the fold size within sum_c L_c of N / 10
(each combination here is common enough to be a stratum of its own). Those are the bounds
asserted below (+1 for float ties in the greedy's comparison); with group sizes 1..8 they
are tight enough to matter (about +-8 per combination, +-40 rows in a 200-row fold), while
the realised deviations are much smaller.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.data import splits as splits_module
from synthmed.data.records import combination_key
from synthmed.data.splits import N_FOLDS, grouped_split

COMBINATIONS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)], dtype=np.uint8)
FREQUENCIES = [0.4, 0.25, 0.15, 0.12, 0.08]


def synthetic_table(n_rows: int = 2000, n_groups: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n_rows, 3) and groups: 600 groups of 1..8 rows, 5 combinations, rows shuffled."""
    rng = np.random.default_rng(seed)
    sizes = np.ones(n_groups, dtype=int)
    while sizes.sum() < n_rows:  # grow random groups, skewed towards some, capped at 8
        grow = rng.choice(n_groups, size=n_rows - sizes.sum(), p=rng.dirichlet(np.full(n_groups, 0.5)))
        np.add.at(sizes, grow, 1)
        sizes = np.minimum(sizes, 8)
    group_combination = rng.choice(len(COMBINATIONS), size=n_groups, p=FREQUENCIES)
    groups = np.repeat(np.arange(n_groups) * 7 + 3, sizes)  # arbitrary, non-contiguous ids
    labels = COMBINATIONS[np.repeat(group_combination, sizes)]
    order = rng.permutation(n_rows)
    return labels[order], groups[order]


@pytest.fixture(scope="module")
def table():
    labels, groups = synthetic_table()
    return labels, groups, grouped_split(labels, groups, seed=0)


def test_table_is_as_described(table):
    labels, groups, _ = table
    assert len(labels) == 2000 and len(np.unique(groups)) == 600
    sizes = np.unique(groups, return_counts=True)[1]
    assert sizes.min() == 1 and sizes.max() == 8 and len(np.unique(sizes)) == 8
    _, per_combination = np.unique(combination_key(labels), return_counts=True)
    assert len(per_combination) == 5
    # every combination is its own stratum (none is pooled with rare ones), as the bounds assume
    assert per_combination.min() >= max(150, getattr(splits_module, "MIN_STRATUM", 0))


def test_every_row_gets_a_split_and_no_group_is_in_two(table):
    _, groups, split = table
    assert split.shape == (2000,) and set(split) == {"train", "val", "test"}
    for group in np.unique(groups):
        assert len(set(split[groups == group])) == 1, group


def _largest_group_per_combination(labels: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    strata = combination_key(labels)
    largest: dict[str, int] = {}
    for key in np.unique(strata):
        _, counts = np.unique(groups[strata == key], return_counts=True)
        largest[key] = int(counts.max())
    return largest


def test_fold_sizes_are_80_10_10(table):
    labels, groups, split = table
    bound = sum(_largest_group_per_combination(labels, groups).values()) + 1
    n = len(split)
    for name, folds in (("test", 1), ("val", 1), ("train", N_FOLDS - 2)):
        size = int((split == name).sum())
        assert abs(size - n * folds / N_FOLDS) <= bound * folds, (name, size, bound)
    # what it achieves in practice is much closer than the guarantee
    assert abs((split == "test").sum() - 200) <= 10 and abs((split == "val").sum() - 200) <= 10


def test_each_combination_is_spread_10_10_80(table):
    labels, groups, split = table
    strata = combination_key(labels)
    largest = _largest_group_per_combination(labels, groups)
    for key, bound in largest.items():
        in_combination = strata == key
        total = int(in_combination.sum())
        for name in ("test", "val"):
            count = int((in_combination & (split == name)).sum())
            assert abs(count - total / N_FOLDS) <= bound + 1, (key, name, count, total, bound)
        # the proportion of the combination within each held-out fold follows the whole table
        for name in ("test", "val"):
            fold = split == name
            share = (in_combination & fold).sum() / fold.sum()
            assert abs(share - total / len(split)) <= (bound + 1) / fold.sum() + 0.01, (key, name, share)


def test_same_seed_same_split_other_seed_other_split(table):
    labels, groups, split = table
    assert np.array_equal(grouped_split(labels, groups, seed=0), split)
    other = grouped_split(labels, groups, seed=1)
    held_out = lambda s: set(np.unique(groups[s != "train"]))  # noqa: E731
    assert held_out(other) != held_out(split)
    # a different seed reshuffles substantially, not just one group
    assert (other != split).mean() > 0.1


def test_row_order_does_not_leak_groups():
    labels, groups = synthetic_table(seed=3)
    split = grouped_split(labels, groups, seed=5)
    for group in np.unique(groups):
        assert len(set(split[groups == group])) == 1


def test_fewer_than_ten_groups_is_an_error():
    labels = COMBINATIONS[np.arange(90) % 2]
    with pytest.raises(ValueError, match="only 9 groups"):
        grouped_split(labels, np.arange(90) % 9, seed=0)
    split = grouped_split(labels, np.arange(90) % 10, seed=0)  # ten groups: one group per fold
    assert sorted(np.unique(np.arange(90)[split == "test"] % 10, return_counts=True)[1]) == [9]
