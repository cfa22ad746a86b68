"""Statistics: exact p-values computed by hand, and scipy's own values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from synthmed.evaluation.stats import mann_whitney, mean_std, wilcoxon_against


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, np.std([1, 2, 3, 4], ddof=1)))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_mann_whitney_exact_small_sample():
    # every value of a above every value of b: U = 9 and only 1 of the C(6,3) = 20 splits is as extreme
    result = mann_whitney([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert result["statistic"] == 9 and result["p_value"] == pytest.approx(1 / 20)
    assert mann_whitney([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], alternative="less")["p_value"] == pytest.approx(1.0)


def test_mann_whitney_matches_scipy_on_paper_sized_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.06, 0.02, 10), rng.normal(0.03, 0.02, 10)  # 10 seeds per extreme (S.5)
    assert mann_whitney(a, b)["p_value"] == stats.mannwhitneyu(a, b, alternative="greater").pvalue


def test_wilcoxon_exact_and_on_table_s2():
    # five readers all above chance: the exact one-sided p-value is 1 / 2^5
    assert wilcoxon_against([0.6, 0.7, 0.55, 0.65, 0.8])["p_value"] == pytest.approx(1 / 32)
    # Table S2, chest x-rays at 128 px: 11 radiologists, none better than chance
    table_s2 = [0.45, 0.52, 0.45, 0.52, 0.50, 0.25, 0.49, 0.39, 0.40, 0.55, 0.39]
    result = wilcoxon_against(table_s2)
    expected = stats.wilcoxon(np.array(table_s2) - 0.5, alternative="greater").pvalue
    assert result["p_value"] == pytest.approx(expected) and result["p_value"] > 0.9
