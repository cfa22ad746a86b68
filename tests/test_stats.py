"""Statistics: exact p-values computed by hand, and scipy's own values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from synthmed.evaluation.stats import (
    SPREAD,
    SPREAD_DDOF,
    auc_test,
    count_below_test,
    holm,
    mann_whitney,
    mean_std,
    std,
    wilcoxon_against,
)


def test_spread_is_the_papers_population_std():
    # Table S5, brain CT at 256 px: five readers; the text reports 0.532 ± 0.126, which only ddof 0 gives
    table_s5 = [0.54, 0.46, 0.75, 0.54, 0.37]
    spread = mean_std(table_s5)
    assert round(spread["mean"], 3) == 0.532 and round(spread["std"], 3) == 0.126
    assert round(float(np.std(table_s5, ddof=1)), 3) == 0.141  # the sample std would not reproduce it
    assert spread == {"mean": pytest.approx(np.mean(table_s5)), "std": pytest.approx(np.std(table_s5, ddof=0)),
                      "ddof": 0, "n": 5}
    assert SPREAD_DDOF == 0 and SPREAD == "std, ddof 0" and std([1.0, 2.0, 3.0, 4.0]) == np.std([1, 2, 3, 4])
    assert mean_std([0.7]) == {"mean": 0.7, "std": 0.0, "ddof": 0, "n": 1}
    with pytest.raises(ValueError):
        mean_std([])


def test_report_summary_cells_use_the_same_spread():
    import pandas as pd

    from synthmed.report.build import _summary_rows

    gaps = [0.1, 0.2, 0.6]
    table = pd.DataFrame([{"dimension": "samples", "setting": "n100", "model": "cpdgan", "seed": i,
                           "metric": "auc_real_minus_auc_syn", "value": v} for i, v in enumerate(gaps)])
    [row] = _summary_rows(table, {"samples": ["n100"]})
    assert f"{np.mean(gaps):.3f} ± {np.std(gaps, ddof=0):.3f}" in row["cells"]


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


def test_paper_table_s2_s3_pvalues():
    """The paper's reader-study p-values (S.8: p < 0.05 chest, p < 0.01 brain, 128 px) come from
    the one-sided test in the direction 'accuracy below chance'; 'above chance' gives 0.956 / 0.996."""
    table_s2 = [0.45, 0.52, 0.45, 0.52, 0.50, 0.25, 0.49, 0.39, 0.40, 0.55, 0.39]  # chest, 11 readers
    table_s3 = [0.51, 0.45, 0.44, 0.44, 0.46, 0.50, 0.48, 0.36, 0.40]  # brain, 9 readers
    assert wilcoxon_against(table_s2, alternative="less")["p_value"] == pytest.approx(0.0498, abs=5e-5)
    assert wilcoxon_against(table_s3, alternative="less")["p_value"] == pytest.approx(0.0078, abs=5e-5)
    assert wilcoxon_against(table_s2)["p_value"] == pytest.approx(0.9561, abs=5e-5)
    assert wilcoxon_against(table_s3)["p_value"] == pytest.approx(0.9961, abs=5e-5)


def test_report_gives_each_axis_three_labelled_mann_whitney_tests():
    import pandas as pd

    from synthmed.report.build import axis_tests

    gaps = {"n1000": [0.24, 0.25, 0.23], "n500": [0.1, 0.1, 0.1], "n50": [0.03, 0.04, 0.02]}
    table = pd.DataFrame([{"dimension": "samples", "setting": s, "model": "cpdgan", "seed": i,
                           "metric": "auc_real_minus_auc_syn", "value": v}
                          for s, values in gaps.items() for i, v in enumerate(values)])
    tests = axis_tests(table, "samples", list(gaps))
    assert [(t["kind"], t["hypothesis"]) for t in tests] == [
        ("paper's direction", "gap at n1000 > gap at n50"), ("other direction", "gap at n1000 < gap at n50"),
        ("two-sided", "gap at n1000 ≠ gap at n50")]
    for t, alternative in zip(tests, ("greater", "less", "two-sided")):
        assert t["p_value"] == pytest.approx(stats.mannwhitneyu(gaps["n1000"], gaps["n50"],
                                                                alternative=alternative).pvalue)
    assert tests[0]["p_value"] == pytest.approx(1 / 20)  # the measured br35h trend is the paper's finding


# ---- the privacy audit's tests -------------------------------------------------------------------


def test_auc_test_matches_sklearn_scipy_and_delong_by_definition():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(0.3, 1, 40), 1)  # rounded: ties within and across the groups
    neg = np.round(rng.normal(0.0, 1, 55), 1)
    result = auc_test(pos, neg, confidence=0.9)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert result["auc"] == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-15)
    assert result["p_value"] == stats.mannwhitneyu(pos, neg, alternative="greater").pvalue
    assert result["n"] == [40, 55] and result["confidence"] == 0.9
    # DeLong et al. (1988) from the kernel psi(x, y) = 1 if x > y, 1/2 if equal, written out pairwise
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    z = stats.norm.ppf(0.95)
    assert result["se"] == pytest.approx(se, rel=1e-12)
    assert result["interval"] == pytest.approx([psi.mean() - z * se, psi.mean() + z * se], rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        auc_test([1.0], [0.0, 1.0])


def test_count_below_test_is_exact_against_every_split():
    """Pooled distinct values, every way of calling 4 of 9 of them 'sample': the share of splits with
    at least c sample values below the k-th reference value is the p-value of c."""
    from itertools import combinations

    values = np.arange(9.0)
    for k in (1, 2, 3):
        counts = []
        for chosen in combinations(range(9), 4):
            sample = values[list(chosen)]
            reference = np.delete(values, list(chosen))
            counts.append(count_below_test(sample, reference, k)["count"])
        counts = np.array(counts)
        for c in range(5):
            sample = values[:c].tolist() + values[9 - (4 - c):].tolist()  # exactly c below the k-th reference
            reference = np.setdiff1d(values, sample)
            result = count_below_test(sample, reference, k)
            assert result["count"] == c and result["p_value"] == pytest.approx(np.mean(counts >= c)), (k, c)
    result = count_below_test([0.5, 3.0], [1.0, 2.0, 4.0, 5.0], k=2)
    assert (result["count"], result["threshold"], result["chance"]) == (1, 2.0, 2 / 5)
    # ties with the threshold never count as below it
    assert count_below_test([1.0, 1.0], [1.0, 2.0], k=1)["count"] == 0


def test_count_below_test_false_alarms_stay_at_the_level():
    """Exchangeable samples: the test rejects at 5 % no more often than 5 % (here a threshold of one
    reference value out of 50, where a binomial test against k / n would not hold its level)."""
    rng = np.random.default_rng(1)
    p = np.array([count_below_test(rng.random(50), rng.random(50), 1)["p_value"] for _ in range(4000)])
    assert np.mean(p <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 4000)


def test_holm_adjusts_step_down_and_keeps_order():
    # sorted p = 0.01, 0.02, 0.04 with m = 3: 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    np.testing.assert_allclose(holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([0.03]).tolist() == [0.03]
