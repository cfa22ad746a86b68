"""``synthmed demo``: the ``demo`` benchmark preset end to end, the report, and the headline numbers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from synthmed.benchmark.presets import load_preset
from synthmed.benchmark.results import read_results
from synthmed.benchmark.runner import run_benchmark


def headline(table: pd.DataFrame) -> dict[str, Any]:
    """Mean over seeds of AUC_real, and per model AUC_syn, the gap, FID, copy rate and verdict."""
    def mean(model: str, metric: str) -> float | None:
        rows = table[(table.model == model) & (table.metric == metric)]
        return float(rows.value.mean()) if len(rows) else None

    verdicts = {0.0: "pass", 0.5: "warn", 1.0: "fail"}
    models = sorted(set(table.model) - {"real"})
    worst = {m: table[(table.model == m) & (table.metric == "privacy_fail")].value.max() for m in models}
    return {"auc_real": mean("real", "auc_real"),
            "models": {m: {"auc_syn": mean(m, "auc_syn"), "gap": mean(m, "auc_real_minus_auc_syn"),
                           "fid": mean(m, "fd/inception"), "copy_rate": mean(m, "copy_rate"),
                           "verdict": verdicts.get(worst[m], "not run")} for m in models}}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run_demo(out: str | os.PathLike = "runs/demo", log: Callable[[str], None] = print) -> dict[str, Any]:
    from synthmed.report import build_report

    started = time.time()
    # two jobs at once, one thread each: the two GANs train side by side, and small networks on
    # one thread each use two cores better than one job on two
    result = run_benchmark(load_preset("demo"), out, workers=2, log=log)
    report = build_report(out)
    numbers = headline(read_results(out))
    log(f"AUC_real (real classifier, real test fold): {_fmt(numbers['auc_real'])}")
    for model, row in numbers["models"].items():
        log(f"{model}: AUC_syn {_fmt(row['auc_syn'])}, AUC_real - AUC_syn {_fmt(row['gap'])}, "
            f"FID {_fmt(row['fid'], 1)}, copy rate {_fmt(row['copy_rate'])}, privacy {row['verdict']}")
    log(f"report: {Path(report).resolve()} ({time.time() - started:.0f} s)")
    return {**numbers, "report": str(report), "states": result["states"]}
