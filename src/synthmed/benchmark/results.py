"""The tidy results table: one row per (dataset, dimension, setting, model, seed, metric, value).

Collected from the JSON files of the jobs that are done, so it can be rebuilt at any time
and never holds a row twice. Metric names:

* ``auc_real`` (model ``real``), ``auc_syn``, ``auc_real_minus_auc_syn``, ``delta_syn``,
  ``auc_syn_on_syn``, ``auc_real_on_syn``, and ``auc_syn/<label>`` per label;
* ``fd/<extractor>``, ``kid/<extractor>``, ``precision/...``, ``recall/...``, ``density/...``,
  ``coverage/...`` (``fd/inception`` is the standard FID, ``in-domain`` the real classifier);
* ``copy_rate`` (classifier features), ``copy_rate_pixels``, ``mia_auc`` with its one-sided ``mia_p``,
  ``density_auc`` (the DOMIAS-style attack), ``dcr_median_ratio``, ``privacy_fail`` (1 fail, 0.5 warn, 0 pass);
* ``map_pearson``, ``map_ssim`` (mean similarity of real- and synthetic-model attribution maps); where the
  store has lesion masks (phantoms), ``map_in_lesion`` and ``map_pointing`` (the synthetic-data classifier's
  mean in-mask share and pointing-game hit rate), ``map_in_lesion_real`` and ``map_pointing_real`` (the
  real-data classifier's) and ``lesion_area_share`` (what a uniform map would score);
* ``images_seen``, ``train_seconds``; ``train_fid_n10000``, the paper's FID (S.3, Figure 3): the kept
  generator's 10,000 images, made from the label vectors of as many training rows (the fold cycled when
  smaller), against those rows; only where training's FID stopping computed exactly that (standard
  Inception, ``fid_samples: 10000``: the paper presets). ``fd/inception`` is the fidelity job's FID, on
  min(n_train, ``fidelity.max_images``) images of each set, not cycled;
* ``auc_real_release_flip`` (model ``real``), ``auc_syn_release_flip``, ``auc_syn_release_flip/<label>``,
  ``auc_real_minus_auc_syn_release_flip``: the paper's release's test AUROC (each label's AUROC
  below 0.5 flipped to 1 - AUROC, ``metrics.release_flip``), recomputed from the honest per-label
  values, so that results can be set beside the paper's tables. Never used in a verdict or test.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from synthmed._io import read_json, write_with_atomic
from synthmed.benchmark.jobs import Job, job_dir, job_state
from synthmed.benchmark.stages import REAL_RESULT, job_run
from synthmed.errors import DataError
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.metrics.auroc import release_flip

COLUMNS = ["dataset", "dimension", "setting", "model", "seed", "metric", "value"]
PAPER_FID_IMAGES = 10_000  # FID is biased by the number of images: the paper fixes N (section 3.3)
TRAIN_FID = f"train_fid_n{PAPER_FID_IMAGES}"
VERDICT_SCORE = {"pass": 0.0, "warn": 0.5, "fail": 1.0}


class JobFile:
    """A JSON file of a job's outputs, read by key path (it may be damaged or hand-edited): a missing key or a
    value of the wrong kind is a DataError naming the file and the keys, not a KeyError or TypeError."""

    def __init__(self, path: Path):
        self.path, self.data = path, read_json(path)

    def damaged(self, keys: tuple[str, ...], problem: str) -> DataError:
        return DataError(f"is damaged: {'.'.join(keys)} {problem}", file=self.path)

    def get(self, *keys: str) -> Any:
        value: Any = self.data
        for depth, key in enumerate(keys):
            if not isinstance(value, dict):
                raise self.damaged(keys[:depth], f"= {value!r} must be a mapping")
            if key not in value:
                raise self.damaged(keys[:depth + 1], "is missing")
            value = value[key]
        return value

    def mapping(self, *keys: str, null: bool = False) -> dict[str, Any] | None:
        """A mapping; null (nothing recorded) where ``null``."""
        value = self.get(*keys)
        if not (value is None and null or isinstance(value, dict)):
            raise self.damaged(keys, f"= {value!r} must be a mapping{' or null' if null else ''}")
        return value

    def choice(self, *keys: str, options: Collection[str]) -> str:
        """One of ``options`` (a verdict): any other value is damage, never a silent fourth kind."""
        if (value := self.get(*keys)) not in options:
            raise self.damaged(keys, f"= {value!r} is not one of {sorted(options)}")
        return value

    def number(self, *keys: str, null: bool = True) -> float | None:
        """A number; null (an undefined metric) where ``null``."""
        value = self.get(*keys)
        if not (value is None and null or isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise self.damaged(keys, f"= {value!r} must be a number{' or null' if null else ''}")
        return value

    def auroc(self, key: str) -> dict[str, Any]:
        """What ``auroc_per_label`` wrote under ``key``, as far as the table reads it (``release_flip`` too)."""
        return {"mean": self.number(key, "mean"),
                "per_label": {name: self.number(key, "per_label", name) for name in self.mapping(key, "per_label")}}


def _metrics(job: Job, folder: Path) -> Iterator[tuple[str, float | None]]:
    if job.stage == "real-classifier":
        auc_real = JobFile(folder / REAL_RESULT).auroc("auc_real")
        yield "auc_real", auc_real["mean"]
        yield "auc_real_release_flip", release_flip(auc_real)["mean"]
    elif job.stage == "train":
        summary = JobFile(job_run(folder).summary)
        yield "images_seen", summary.number("images_seen")
        yield "train_seconds", JobFile(folder / "done.json").number("seconds")
        if summary.data.get("fid_standard") and summary.data.get("fid_images") == PAPER_FID_IMAGES:
            yield TRAIN_FID, summary.number("best_fid")
    elif job.stage == "utility":
        u = JobFile(EvalDir(folder).utility)
        for key in ("auc_syn", "auc_syn_on_syn", "auc_real_on_syn"):
            yield key, u.number(key, "mean")
        yield "auc_real_minus_auc_syn", u.number("auc_real_minus_auc_syn")
        yield "delta_syn", u.number("delta_syn")
        auc_real, auc_syn = u.auroc("auc_real"), u.auroc("auc_syn")
        for label, value in auc_syn["per_label"].items():
            yield f"auc_syn/{label}", value
        real_flip, syn_flip = release_flip(auc_real), release_flip(auc_syn)
        yield "auc_syn_release_flip", syn_flip["mean"]
        if real_flip["mean"] is not None and syn_flip["mean"] is not None:
            yield "auc_real_minus_auc_syn_release_flip", real_flip["mean"] - syn_flip["mean"]
        for label, value in syn_flip["per_label"].items():
            yield f"auc_syn_release_flip/{label}", value
    elif job.stage == "fidelity":
        f = JobFile(EvalDir(folder).fidelity)
        for name in f.mapping("metrics"):
            for key, metric in (("fd", "fd"), ("kid_mean", "kid"), ("precision", "precision"), ("recall", "recall"),
                                ("density", "density"), ("coverage", "coverage")):
                yield f"{metric}/{name}", f.number("metrics", name, key)
    elif job.stage == "privacy":
        p = JobFile(EvalDir(folder).privacy)
        yield "copy_rate", p.number("tests", "copies/features", "rate")
        yield "copy_rate_pixels", p.number("tests", "copies/pixels", "rate")
        yield "mia_auc", p.number("tests", "membership", "auc")
        yield "mia_p", p.number("tests", "membership", "p_value")
        yield "density_auc", p.number("density_attack", "auc")
        yield "dcr_median_ratio", p.number("dcr", "features", "median_ratio")
        yield "privacy_fail", VERDICT_SCORE[p.choice("verdict", options=VERDICT_SCORE)]
    elif job.stage == "importance":
        maps = JobFile(EvalDir(folder).importance)
        yield "map_pearson", maps.number("pearson", "mean")
        yield "map_ssim", maps.number("ssim", "mean")
        if "lesion_masks" in maps.data:  # only stores with lesion masks (phantoms) know where the findings are
            scored = ("lesion_masks", "images")
            yield "lesion_area_share", maps.number(*scored, "area_share", "mean")
            for role, suffix in (("synthetic", ""), ("real", "_real")):
                yield f"map_in_lesion{suffix}", maps.number(*scored, role, "in_mask_share", "mean")
                yield f"map_pointing{suffix}", maps.number(*scored, role, "pointing", "rate")


def collect_results(jobs: list[Job], root: str | Path) -> pd.DataFrame:
    """Rows from every done job; undefined values (a label without positives) are left out."""
    rows: list[dict[str, Any]] = []
    for job in jobs:
        if job_state(root, job.id) != "done":
            continue
        for metric, value in _metrics(job, job_dir(root, job.id)):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            labels = job.labels
            rows.append({"dataset": labels["dataset"], "dimension": labels["dimension"],  # checked by read_manifest
                         "setting": labels["setting"], "model": labels["model"], "seed": int(labels["seed"]),
                         "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_results(table: pd.DataFrame, root: str | Path) -> None:
    root = Path(root)
    write_with_atomic(root / "results.parquet", lambda tmp: table.to_parquet(tmp, index=False), suffix=".parquet")
    write_with_atomic(root / "results.csv", lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")


def read_results(root: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(root) / "results.parquet")
