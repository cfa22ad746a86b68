"""The results table and the report, from job outputs written by hand (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.benchmark.jobs import Job
from synthmed.benchmark.results import collect_results
from synthmed.report import build_report
from synthmed.report.build import pooled_gaps

# AUC_real and AUC_syn per (setting, seed) of one model on the samples axis
AUC_REAL = {"n1000": [0.97, 0.96, 0.98], "n50": [0.65, 0.63, 0.64]}
AUC_SYN = {"n1000": [0.73, 0.71, 0.75], "n50": [0.61, 0.62, 0.58]}


def fake_benchmark(root: Path) -> list[Job]:
    """A benchmark directory whose real-classifier and utility jobs are done, with their JSON files."""
    jobs = []
    for setting, reals in AUC_REAL.items():
        for seed, (auc_real, auc_syn) in enumerate(zip(reals, AUC_SYN[setting])):
            where = {"dataset": "br35h", "dimension": "samples", "setting": setting, "seed": seed}
            real = Job(f"real-{setting}-{seed}", "real-classifier", {}, {}, {**where, "model": "real"})
            utility = Job(f"utility-{setting}-{seed}", "utility", {}, {}, {**where, "model": "cpdgan"})
            outputs = [(real, {"real.json": {"auc_real": {"mean": auc_real}}}),
                       (utility, {"utility.json": {
                           "auc_syn": {"mean": auc_syn, "per_label": {"Tumor": auc_syn}},
                           "auc_syn_on_syn": {"mean": 0.9}, "auc_real_on_syn": {"mean": 0.8},
                           "auc_real_minus_auc_syn": auc_real - auc_syn, "delta_syn": 0.9 - auc_syn}})]
            for job, files in outputs:
                folder = root / "jobs" / job.id
                folder.mkdir(parents=True)
                for name, content in {**files, "done.json": {"seconds": 1.0}}.items():
                    (folder / name).write_text(json.dumps(content))
                jobs.append(job)
    (root / "benchmark.json").write_text(json.dumps({"preset": {"name": "fake"}, "runs": [],
                                                     "jobs": [job.to_dict() for job in jobs]}))
    return jobs


def test_pooled_gap_over_all_settings_of_an_axis(tmp_path):
    table = collect_results(fake_benchmark(tmp_path), tmp_path)
    gaps = [r - s for setting in AUC_REAL for r, s in zip(AUC_REAL[setting], AUC_SYN[setting])]
    [pooled] = pooled_gaps(table, "samples")
    assert pooled == {"model": "cpdgan", "settings": 2, "mean": pytest.approx(np.mean(gaps)),
                      "std": pytest.approx(np.std(gaps, ddof=0)), "ddof": 0, "n": 6}
    html = " ".join(build_report(tmp_path).read_text().split())
    assert (f"samples axis, all settings pooled: cpdgan AUC_real − AUC_syn {np.mean(gaps):.3f} ± "
            f"{np.std(gaps, ddof=0):.3f} (std, ddof 0, n = 6 runs over 2 settings)") in html
