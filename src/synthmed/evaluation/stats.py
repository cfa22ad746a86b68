"""The paper's statistics: spread over seeds (S.5), Mann-Whitney U between settings (S.5),
Wilcoxon signed-rank of reader accuracies against chance (S.8); and the privacy audit's tests: an
AUC with its Mann-Whitney p-value and DeLong interval, an exact count test, Holm's correction.
scipy does the tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

# The one spread behind every "mean ± std" synthmed shows (report, summaries, reader study, logs): the
# population standard deviation, as the paper computed it. Its brain 256 px reader accuracies (Table S5:
# 0.54, 0.46, 0.75, 0.54, 0.37) give the text's 0.532 ± 0.126 with ddof 0; ddof 1 would give 0.141.
SPREAD_DDOF = 0
SPREAD = f"std, ddof {SPREAD_DDOF}"  # the words that go beside a shown spread


def std(values: Sequence[float]) -> float:
    """Standard deviation with ``SPREAD_DDOF`` (0 for a single value)."""
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=SPREAD_DDOF))


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """``{"mean", "std", "ddof", "n"}`` over repeated runs or readers; the ddof goes along so that
    every written spread says which it is."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    return {"mean": float(x.mean()), "std": std(x), "ddof": SPREAD_DDOF, "n": int(x.size)}


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> dict:
    """One-sided Mann-Whitney U of sample ``a`` against ``b`` (S.5: AUC_real - AUC_syn at one
    extreme setting against the other). ``greater``: H1 is that ``a`` tends to be larger.
    Exact p-values for small samples without ties, as scipy chooses."""
    result = stats.mannwhitneyu(a, b, alternative=alternative)
    return {"test": "Mann-Whitney U", "alternative": alternative, "statistic": float(result.statistic),
            "p_value": float(result.pvalue), "n": [len(a), len(b)]}


def wilcoxon_against(values: Sequence[float], reference: float = 0.5, alternative: str = "greater") -> dict:
    """One-sided Wilcoxon signed-rank test of ``values - reference`` (S.8: reader accuracies
    against a random classifier's 0.5). ``greater``: H1 is that readers beat chance; a large
    p-value means they could not tell real from synthetic better than chance."""
    differences = np.asarray(values, dtype=np.float64) - reference
    result = stats.wilcoxon(differences, alternative=alternative)
    return {"test": "Wilcoxon signed-rank", "alternative": alternative, "reference": reference,
            "statistic": float(result.statistic), "p_value": float(result.pvalue), "n": int(differences.size)}


def auc_test(positives: Sequence[float], negatives: Sequence[float], confidence: float = 0.95) -> dict:
    """AUC of scores where positives should score higher (P(pos > neg) + P(tie) / 2, as
    scikit-learn's roc_auc_score), the one-sided Mann-Whitney U p-value against "no difference"
    (the AUC is U / (n_pos n_neg)), and DeLong's confidence interval (normal, from the placement values).

    scipy decides between the exact and the tie-corrected normal p-value, as in ``mann_whitney``."""
    x, y = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 positives and 2 negatives, got {len(x)} and {len(y)}")
    result = stats.mannwhitneyu(x, y, alternative="greater")
    auc = float(result.statistic) / (len(x) * len(y))
    # Placement values by midranks: the share of negatives below each positive (ties count half) and
    # the share of positives above each negative; their variances give DeLong's variance of the AUC.
    pooled = stats.rankdata(np.concatenate([x, y]))
    below = (pooled[: len(x)] - stats.rankdata(x)) / len(y)
    above = 1.0 - (pooled[len(x):] - stats.rankdata(y)) / len(x)
    se = float(np.sqrt(below.var(ddof=1) / len(x) + above.var(ddof=1) / len(y)))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return {"auc": auc, "interval": [max(0.0, auc - z * se), min(1.0, auc + z * se)], "confidence": confidence,
            "se": se, "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "n": [len(x), len(y)]}


def count_below_test(sample: Sequence[float], reference: Sequence[float], k: int) -> dict:
    """How many of ``sample`` lie strictly below the k-th smallest ``reference`` value, and the exact
    one-sided p-value of that count when the two samples are exchangeable (drawn alike).

    Under exchangeability every split of the pooled values is equally likely, and "at least c
    sample values below the k-th reference value" means "at least c sample values among the
    c + k - 1 smallest pooled values": a hypergeometric tail. The threshold's own randomness is
    included, which a binomial test against k / n_ref would leave out. Ties with the threshold do
    not count, which only makes the test conservative. ``chance`` = k / (n_ref + 1) is the expected
    share below the threshold."""
    a, b = np.asarray(sample, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if not 1 <= k <= len(b):
        raise ValueError(f"k must be in [1, {len(b)}], got {k}")
    threshold = float(np.partition(b, k - 1)[k - 1])
    count = int(np.sum(a < threshold))
    p_value = float(stats.hypergeom.sf(count - 1, len(a) + len(b), len(a), count + k - 1))
    return {"count": count, "n": int(len(a)), "k": k, "threshold": threshold, "chance": k / (len(b) + 1),
            "p_value": min(1.0, p_value)}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: rejecting where adjusted <= alpha keeps the chance of
    any false rejection among the tests at most alpha, whatever their dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    steps = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted
