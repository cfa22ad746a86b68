"""The reader study's numbers in the layout of the paper's Tables S2-S5 (S.8, S.10).

Per reader, with the paper's names (rows: the actual class, columns: the reader's label):

=================  ===================  ========================
actual \\ labelled  real                 synthetic
=================  ===================  ========================
real               TR (true real)       FS (false synthetic)
synthetic          FR (false real)      TS (true synthetic)
=================  ===================  ========================

accuracy = (TR + TS) / (TR + TS + FR + FS). Means and standard deviations are over readers, with
ddof 0 (``stats.SPREAD_DDOF``: the paper's convention and all of synthmed's). The one-sided Wilcoxon
signed-rank tests ask whether the readers' accuracies exceed the 0.5 of a random classifier (a
large p-value: they could not tell real from synthetic), and, as the paper's variant, whether
they fall below it. Only readers who labelled every image count, unless asked otherwise: a
half-finished session is not a reader's accuracy on the study.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synthmed._io import write_json_atomic, write_with_atomic
from synthmed.errors import ReaderStudyError
from synthmed.evaluation.stats import SPREAD, mean_std, wilcoxon_against
from synthmed.output_dir import check_output_path
from synthmed.reader_study import db

CELLS = {("real", "real"): "TR", ("real", "synthetic"): "FS", ("synthetic", "real"): "FR",
         ("synthetic", "synthetic"): "TS"}
DEFINITIONS = {"TR": "real image labelled real", "FS": "real image labelled synthetic",
               "FR": "synthetic image labelled real", "TS": "synthetic image labelled synthetic",
               "accuracy": "(TR + TS) / (TR + TS + FR + FS)"}


def reader_counts(answers: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    """(reader, truth, label) rows -> per reader {TR, FR, TS, FS}, readers in order of appearance."""
    counts: dict[str, dict[str, int]] = {}
    for reader, truth, label in answers:
        cells = counts.setdefault(reader, dict.fromkeys(("TR", "FR", "TS", "FS"), 0))
        cells[CELLS[truth, label]] += 1
    return counts


def accuracy(cells: dict[str, int]) -> float:
    return (cells["TR"] + cells["TS"]) / sum(cells.values())


def summarize(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Mean and standard deviation over readers of each cell and of accuracy, and the Wilcoxon test."""
    if not counts:
        raise ReaderStudyError("no reader has finished the study yet (use --include-incomplete for partial sessions)")
    accuracies = [accuracy(cells) for cells in counts.values()]
    summary: dict[str, Any] = {"n_readers": len(counts), "readers": list(counts)}
    for name in ("TR", "FS", "FR", "TS"):
        summary[name] = mean_std([cells[name] for cells in counts.values()])
    summary["accuracy"] = {**mean_std(accuracies), "per_reader": accuracies}
    summary["wilcoxon"] = _wilcoxon(accuracies)
    return summary


WILCOXON_VARIANTS = {
    # name -> (scipy alternative, the hypothesis in words)
    "readers_beat_chance": ("greater", "H1: readers tell real from synthetic better than chance (accuracy > 0.5)"),
    "paper_variant": ("less", "H1: readers do worse than chance (accuracy < 0.5), the paper's test (S.8); "
                              "its reported p < 0.05 and p < 0.01 are this direction"),
}


def _wilcoxon(accuracies: list[float]) -> dict[str, Any]:
    """Both one-sided Wilcoxon signed-rank tests against 0.5, labelled, or why there is none
    (it needs at least one accuracy different from 0.5)."""
    if all(a == 0.5 for a in accuracies):
        return {name: {"test": "Wilcoxon signed-rank", "p_value": None, "reason": "every accuracy is exactly 0.5"}
                for name in WILCOXON_VARIANTS}
    out = {}
    for name, (alternative, hypothesis) in WILCOXON_VARIANTS.items():
        out[name] = {**wilcoxon_against(accuracies, reference=0.5, alternative=alternative), "hypothesis": hypothesis}
        if len(accuracies) < 6:
            out[name]["note"] = "fewer than 6 readers: the paper reports no test for its 5-reader studies"
    return out


def analyze_study(study: str | os.PathLike, out: str | os.PathLike | None = None,
                  include_incomplete: bool = False) -> dict[str, Any]:
    """Write ``reader_study.json`` and ``reader_study.png`` to ``out`` (default: the study directory)."""
    out = check_output_path(out, staged=False) if out is not None else Path(study)
    conn = db.open_study(study)
    try:
        meta, progress, answers = db.read_meta(conn), db.readers_progress(conn), db.keyed_answers(conn)
    finally:
        conn.close()
    counts = reader_counts(answers)
    readers = [{"reader": p["name"], "answered": p["answered"], "total": p["total"],
                "complete": p["answered"] == p["total"], **counts.get(p["name"], dict.fromkeys(CELLS.values(), 0)),
                "accuracy": accuracy(counts[p["name"]]) if p["name"] in counts else None} for p in progress]
    included = {r["reader"]: counts[r["reader"]] for r in readers
                if r["answered"] and (r["complete"] or include_incomplete)}
    result = {
        "study": {key: _without_path(meta[key]) for key in db.META_KEYS},
        "definitions": DEFINITIONS,
        "included": "readers with at least one answer" if include_incomplete else "readers who labelled every image",
        "readers": readers,
        "summary": summarize(included),
    }
    write_json_atomic(out / "reader_study.json", result)
    write_with_atomic(out / "reader_study.png", lambda tmp: _figure(result, tmp), suffix=".png")
    return result


def _without_path(value: Any) -> Any:
    """A store's entry without its path: the results may be passed on, the machine's paths stay in the
    study's private database; the content hash still names the set."""
    return {k: v for k, v in value.items() if k != "path"} if isinstance(value, dict) else value


def confusion_table(summary: dict[str, Any]) -> list[list[str]]:
    """The top of Tables S2-S5: rows the actual class, columns the readers' label, ``mean (± std)``."""
    def cell(name: str) -> str:
        return f"{name} = {summary[name]['mean']:.1f} (± {summary[name]['std']:.1f})"

    return [[f"actual \\ labelled (mean ± {SPREAD})", "Real", "Synthetic"], ["Real", cell("TR"), cell("FS")],
            ["Synthetic", cell("FR"), cell("TS")]]


def _figure(result: dict[str, Any], path: Path) -> None:
    """Per-reader accuracy bars with the 0.5 of a random classifier."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    summary = result["summary"]
    names = summary["readers"]
    accuracies = summary["accuracy"]["per_reader"]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5))
    axis.bar(range(len(names)), accuracies, color="#4c72b0")
    axis.axhline(0.5, color="#c44e52", linestyle="--", label="random (0.5)")
    crowded = len(names) > 8
    axis.set_xticks(range(len(names)), names, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    tests = summary["wilcoxon"]
    test = "" if tests["readers_beat_chance"]["p_value"] is None else (
        f"\nWilcoxon p = {tests['readers_beat_chance']['p_value']:.3g} (beat chance), "
        f"{tests['paper_variant']['p_value']:.3g} (paper's direction)")
    axis.set_title(f"{result['study']['resolution']} px: accuracy {summary['accuracy']['mean']:.3f} "
                   f"± {summary['accuracy']['std']:.3f} ({SPREAD}){test}")
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)
