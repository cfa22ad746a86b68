"""Build ``report.html`` from a benchmark directory: results, figures, grids, cards, environment.

Everything is read from the job directories (the results table is collected afresh), so
the report can be rebuilt at any time, also while a sweep still runs. Images are embedded
as data URIs, so the file stands alone. It shows real images (the nearest real neighbours of
synthetic ones, attribution maps over real test images) and this machine's paths, so it is for the
data owner's team and says so at its top; a synthetic set leaves with ``synthmed release``. Grids,
maps and cards are shown for the first seed of each setting (and only the extreme settings of an
axis with many), so the report of a 2,000-job sweep stays readable.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from synthmed._io import damaged_json, read_json, write_text_atomic
from synthmed.benchmark.jobs import Job, job_dir, job_state
from synthmed.benchmark.results import TRAIN_FID, JobFile, collect_results
from synthmed.benchmark.runner import read_manifest
from synthmed.benchmark.stages import job_run, job_synthetic
from synthmed.errors import DataError
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.evaluation.privacy_words import describe
from synthmed.evaluation.stats import SPREAD, mann_whitney, mean_std, std
from synthmed.output_dir import check_output_file
from synthmed.report.figures import axis_figure, extremes_figure

# The direction of the one-sided Mann-Whitney U that the paper reported per axis (section 3.2,
# S.5), on AUC_real - AUC_syn at the axis' first setting against its last: on the classes axis
# the gap is larger with more combinations (first = most); on the samples axis its significant
# result is the gap *shrinking* toward few samples per combination (first = most samples).
PAPER_DIRECTION = {"classes": "greater", "samples": "greater"}
SUMMARY_METRICS = [("auc_real", "AUC_real"), ("auc_syn", "AUC_syn"), ("auc_real_minus_auc_syn", "AUC_real − AUC_syn"),
                   ("delta_syn", "Δ_syn"), (TRAIN_FID, "FID N=10k (training)"), ("fd/inception", "FID (fidelity job)"),
                   ("fd/in-domain", "FD in-domain"),
                   ("copy_rate", "copy rate"), ("mia_auc", "MIA AUC"), ("map_pearson", "map r")]
PACKAGES = ("synthmed", "torch", "monai", "numpy", "scipy", "scikit-learn", "pandas")


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _file_uri(path: Path) -> str | None:
    return _uri(path.read_bytes()) if path.is_file() else None


def _settings_order(jobs: list[Job]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for job in jobs:
        if job.stage == "real-classifier" and job.labels["setting"] not in order.setdefault(job.labels["dimension"], []):
            order[job.labels["dimension"]].append(job.labels["setting"])
    return order


def _summary_rows(table: pd.DataFrame, order: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Mean ± std (``stats.SPREAD``) over seeds per (dimension, setting, model)."""
    stats = table.groupby(["dimension", "setting", "model", "metric"]).value.agg(["mean", std, "count"])
    rows = []
    for dimension, settings in order.items():
        for setting in settings:
            models = sorted(set(table[(table.dimension == dimension) & (table.setting == setting)].model) - {"real"})
            for model in models:
                cells = []
                for metric, _ in SUMMARY_METRICS:
                    key = (dimension, setting, "real" if metric == "auc_real" else model, metric)
                    cells.append(_cell(stats.loc[key]) if key in stats.index else "")
                rows.append({"dimension": dimension, "setting": setting, "model": model, "cells": cells})
    return rows


def _cell(stat: pd.Series) -> str:
    if stat["count"] > 1:
        return f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    return f"{stat['mean']:.3f}"


def axis_tests(table: pd.DataFrame, dimension: str, settings: list[str]) -> list[dict[str, Any]]:
    """Mann-Whitney U on AUC_real − AUC_syn between the extreme settings, per model (paper S.5):
    the one-sided test in the paper's direction, the other direction and the two-sided test, each
    with its hypothesis in words. Axes the paper did not test get the two one-sided tests unranked."""
    first, last = settings[0], settings[-1]
    paper = PAPER_DIRECTION.get(dimension)
    words = {"greater": f"gap at {first} > gap at {last}", "less": f"gap at {first} < gap at {last}",
             "two-sided": f"gap at {first} ≠ gap at {last}"}
    out = []
    rows = table[(table.dimension == dimension) & (table.metric == "auc_real_minus_auc_syn")]
    for model in sorted(set(rows.model)):
        a = rows[(rows.model == model) & (rows.setting == first)].value.to_numpy()
        b = rows[(rows.model == model) & (rows.setting == last)].value.to_numpy()
        if not (len(a) and len(b)):
            continue
        for alternative in ("greater", "less", "two-sided"):
            kind = ("two-sided" if alternative == "two-sided" else "paper's direction" if alternative == paper
                    else "other direction" if paper else "one-sided")
            out.append({"model": model, "kind": kind, "hypothesis": words[alternative],
                        **mann_whitney(a, b, alternative=alternative)})
    return out


def _fidelity_images(preset: dict[str, Any]) -> str:
    """How many images of each set the fidelity job's FID compares."""
    cap = preset["fidelity"].get("max_images")
    return f"min(n_train, {cap:,})" if cap else "n_train"


def figure3_fid(table: pd.DataFrame, jobs: list[Job], dimension: str, preset: dict[str, Any]) -> tuple[str, str]:
    """(metric, title) of Figure 3's FID panels: the training's FID at N = 10,000 (the paper's) where the
    runs computed it, else the fidelity job's, titled with its image count and why N = 10,000 is missing."""
    if ((table.dimension == dimension) & (table.metric == TRAIN_FID)).any():
        return TRAIN_FID, "FID, N = 10,000 (training fold cycled, S.3)"
    configs = [j.params["config"] for j in jobs if j.stage == "train" and j.labels.get("dimension") == dimension]
    used = sorted({f"{c['fid_extractor']} on {c['fid_samples']:,} images" if c["fid_every"] else "no FID checks"
                   for c in configs})
    return "fd/inception", (f"FID, fidelity job: {_fidelity_images(preset)} images, not cycled\n"
                            f"no FID at N = 10,000 (too costly for this preset); training: {', '.join(used)}")


def pooled_gaps(table: pd.DataFrame, dimension: str) -> list[dict[str, Any]]:
    """AUC_real − AUC_syn over every run of every setting of an axis, per model: the paper's
    "0.0206 (±0.0100) on the chest x-ray settings" (section 3.2), as ``stats.mean_std`` plus the
    number of settings pooled."""
    rows = table[(table.dimension == dimension) & (table.metric == "auc_real_minus_auc_syn")]
    return [{"model": model, "settings": int(rows[rows.model == model].setting.nunique()),
             **mean_std(rows[rows.model == model].value.to_numpy())} for model in sorted(set(rows.model))]


def _shown(jobs: list[Job], stage: str, order: dict[str, list[str]]) -> list[Job]:
    """Jobs of ``stage`` worth a picture: seed 0, and only the extreme settings of long axes."""
    picked = []
    for job in jobs:
        settings = order.get(job.labels.get("dimension"), [])
        if job.stage == stage and job.labels.get("seed") == 0 and (
                len(settings) <= 3 or job.labels["setting"] in (settings[0], settings[-1])):
            picked.append(job)
    return picked


def _latest_png(folder: Path) -> Path | None:
    pngs = sorted(folder.glob("*.png"))
    return pngs[-1] if pngs else None


def _galleries(root: Path, jobs: list[Job], order: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    def done(stage: str) -> list[tuple[Job, Path]]:
        return [(j, job_dir(root, j.id)) for j in _shown(jobs, stage, order) if job_state(root, j.id) == "done"]

    samples = [{"job": j, "image": _file_uri(p) if (p := _latest_png(job_run(d).samples)) else None}
               for j, d in done("train")]
    privacy = [{"job": j, **_words(EvalDir(d).privacy, "report", lambda report: {
                    "sentences": describe(report),
                    "images": {space: _file_uri(d / name) for space, name in report["figures"].items()}})}
               for j, d in done("privacy")]
    maps = [{"job": j, "image": _file_uri(EvalDir(d).importance_figure),
             **_words(EvalDir(d).importance, "summary", lambda summary: {"lesions": lesion_words(summary)})}
            for j, d in done("importance")]
    cards = [{"job": j, "markdown": _card_text(job_synthetic(d) / "card.md")}
             for j, d in done("generate") + done("import")]  # generated, and made elsewhere (external models)
    return {"samples": samples, "privacy": privacy, "maps": maps, "cards": cards}


def _words(path: Path, key: str, derive: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """A job's JSON file under ``key`` and what the report says of it (``derive``), which reads many of its keys: a
    file hand-edited or from another version that lacks one is a DataError naming it, not a traceback."""
    data = read_json(path)
    with damaged_json(path, "the report"):
        return {key: data, **derive(data)}


def _card_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot be read ({error})", file=path) from None


ROLES = {"real": "real-data classifier", "synthetic": "synthetic-data classifier"}


def _share(stats: dict[str, Any]) -> str:
    """A mean share (with its spread over images) as a percentage; "undefined" without one."""
    if stats["mean"] is None:
        return "undefined"
    return f"{100 * stats['mean']:.0f} %" + (f" (± {100 * stats['std']:.0f} %)" if stats["n_defined"] > 1 else "")


def _pointing(stats: dict[str, Any]) -> str:
    return "undefined" if stats["rate"] is None else f"{stats['hits']} of {stats['n_defined']}"


def lesion_words(importance: dict[str, Any]) -> dict[str, Any] | None:
    """The attribution maps scored against the lesion masks (``importance.json``'s ``lesion_masks``), in
    sentences and one table row per label; None for data without lesion masks (and older runs)."""
    lesions = importance.get("lesion_masks")
    if lesions is None:
        return None
    scored = lesions["images"]
    n_lesion, n_images = scored["area_share"]["n_defined"], len(importance["images"])
    sentences = [f"{n_lesion} of the {n_images} explained images show a finding with a lesion mask (the others are "
                 f"not scored). Their lesions cover {_share(scored['area_share'])} of the image: the share of "
                 "attribution a map spread evenly would put inside, and how often a peak placed at random would "
                 "land inside."]
    for role, words in ROLES.items():
        sentences.append(f"The {words} puts {_share(scored[role]['in_mask_share'])} of its attribution inside the "
                         f"lesions; its strongest point lies inside them in {_pointing(scored[role]['pointing'])} "
                         "images (pointing game).")
    rows = [{"label": name, "images": stats["area_share"]["n_defined"], "area": _share(stats["area_share"]),
             "cells": [text for role in ROLES for text in (_share(stats[role]["in_mask_share"]),
                                                          _pointing(stats[role]["pointing"]))]}
            for name, stats in lesions["by_label"].items() if stats["area_share"]["n_defined"]]
    return {"sentences": sentences, "rows": rows}


def _reader_studies(root: Path) -> list[dict[str, Any]]:
    studies = []
    for path in sorted(root.glob("**/reader_study.json")):
        figure = next(iter(sorted(path.parent.glob("reader_study*.png"))), None)
        studies.append({"path": str(path.parent.relative_to(root)), "result": read_json(path),
                        "image": _file_uri(figure) if figure else None})
    return studies


def _environment(root: Path, jobs: list[Job], manifest: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    seconds = [JobFile(job_dir(root, j.id) / "done.json").number("seconds", null=False) for j in jobs
               if job_state(root, j.id) == "done"]
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    runs = [{**r, "seconds": r.get("finished", time.time()) - r["started"]} for r in manifest["runs"]]
    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "gpus": ", ".join(gpus) or "none", "job_seconds": sum(seconds), "jobs_done": len(seconds),
            "jobs": len(jobs), "runs": runs}


def build_report(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    root = Path(directory)
    manifest, jobs = read_manifest(root)
    target = (check_output_file(out, "give the HTML file to write, e.g. report.html") if out is not None
              else root / "report.html")
    table = collect_results(jobs, root)
    order = _settings_order(jobs)
    axes = []
    for dimension, settings in order.items():
        axis = {"dimension": dimension, "settings": settings, "tests": [], "extremes": []}
        if len(table):
            axis["figure"] = _uri(axis_figure(table, dimension, settings))
            if len(settings) > 1:
                extremes = (settings[0], settings[-1])
                panels = (figure3_fid(table, jobs, dimension, manifest["preset"]), ("delta_syn", "Δ_syn"))
                axis["extremes"] = [_uri(extremes_figure(table, dimension, extremes, metric, title))
                                    for metric, title in panels if (table.metric == metric).any()]
                axis["tests"] = axis_tests(table, dimension, settings)
        axes.append(axis)
    template = jinja2.Environment(loader=jinja2.PackageLoader("synthmed", "report/templates"),
                                  autoescape=jinja2.select_autoescape(["html"]))
    galleries = _galleries(root, jobs, order)
    real_images = [what for what, shown in (("the nearest real training images of synthetic ones", galleries["privacy"]),
                                           ("attribution maps over real test images", galleries["maps"])) if shown]
    html = template.get_template("report.html").render(
        name=manifest["preset"]["name"], preset=json.dumps(manifest["preset"], indent=1),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), headers=[h for _, h in SUMMARY_METRICS],
        spread=SPREAD, fidelity_images=_fidelity_images(manifest["preset"]),
        summary=_summary_rows(table, order), axes=axes,
        pooled=[{"dimension": dimension, **row} for dimension in order for row in pooled_gaps(table, dimension)],
        rows=len(table), **galleries, real_images=real_images, readers=_reader_studies(root),
        env=_environment(root, jobs, manifest))
    write_text_atomic(target, html)
    return target
