"""The report's figures, each a function from the tidy results table to PNG bytes.

Figure 2 of the paper per benchmark axis (AUC_real as a line with a std band, AUC_syn as
bars per model with error bars) and Figure 3 (box plots of a metric at the two extreme
settings of an axis, per model).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from synthmed.evaluation.stats import SPREAD, std  # noqa: E402

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def axis_figure(table: pd.DataFrame, dimension: str, settings: list[str]) -> bytes:
    """Mean AUROC over seeds on the real test fold: real classifier as a line with a std band,
    each model's synthetic classifier as bars with std error bars (``stats.SPREAD``)."""
    rows = table[table.dimension == dimension]
    x = np.arange(len(settings))
    models = sorted(set(rows.model) - {"real"})
    figure, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(settings) + 2), 3.6))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        stats = _by_setting(rows[(rows.model == model) & (rows.metric == "auc_syn")], settings)
        ax.bar(x - 0.4 + width * (i + 0.5), stats["mean"], width, yerr=stats["std"], capsize=3,
               color=COLOURS[(i + 1) % len(COLOURS)], alpha=0.8, label=f"AUC_syn {model}")
    real = _by_setting(rows[(rows.model == "real") & (rows.metric == "auc_real")], settings)
    ax.plot(x, real["mean"], "k-o", label="AUC_real")
    ax.fill_between(x, real["mean"] - real["std"], real["mean"] + real["std"], color="k", alpha=0.15)
    ax.set_xticks(x, settings)
    ax.set_xlabel(dimension)
    ax.set_ylabel(f"mean AUROC, real test fold (± {SPREAD})")
    low = np.nanmin(np.r_[real["mean"] - real["std"], 0.5])
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def _by_setting(rows: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """Mean and std (``stats.SPREAD``) per setting; a setting without results gets no bar and no error bar."""
    grouped = rows.groupby("setting").value.agg(["mean", std]).reindex(settings)
    return grouped.fillna({"std": 0.0})


def extremes_figure(table: pd.DataFrame, dimension: str, extremes: tuple[str, str], metric: str,
                    title: str) -> bytes:
    """Box plots of ``metric`` over seeds at the two extreme settings, one box per (model, setting)."""
    rows = table[(table.dimension == dimension) & (table.metric == metric)]
    models = sorted(set(rows.model) - {"real"})
    data, labels, colours = [], [], []
    for i, model in enumerate(models):
        for setting in extremes:
            data.append(rows[(rows.model == model) & (rows.setting == setting)].value.to_numpy())
            labels.append(f"{model}\n{setting}")
            colours.append(COLOURS[(i + 1) % len(COLOURS)])
    figure, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(data) + 1), 3.4))
    boxes = ax.boxplot([d if len(d) else [np.nan] for d in data], patch_artist=True)
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.5)
    for i, values in enumerate(data, start=1):  # the seeds themselves, so one seed still shows
        ax.scatter(np.full(len(values), i), values, s=12, color="k", zorder=3)
    ax.set_xticks(np.arange(1, len(data) + 1), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)
