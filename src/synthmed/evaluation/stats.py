"""The paper's statistics: spread over seeds (S.5), Mann-Whitney U between settings (S.5),
Wilcoxon signed-rank of reader accuracies against chance (S.8). scipy does the tests."""

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
