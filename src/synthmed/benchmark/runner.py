"""Run a benchmark preset into a directory, resumably, and report where it stands.

``OUT/benchmark.json`` records the resolved preset, the job list of the latest run and the
start and end of every run;
``OUT/jobs/<id>/`` holds each job; ``OUT/results.parquet`` / ``.csv`` the tidy table.
Running the same command again runs only the jobs that are not done: after a crash or a
kill, or for the jobs a changed preset reaches (new keys, new directories).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthmed import __version__
from synthmed._io import read_json, write_json_atomic
from synthmed.benchmark.executors import run_local, run_submitit
from synthmed.benchmark.jobs import STATES, Job, expand, job_state
from synthmed.benchmark.presets import BenchmarkPreset
from synthmed.benchmark.results import JobFile, collect_results, write_results
from synthmed.benchmark.stages import STAGES
from synthmed.config import describe, matches, seed_problem
from synthmed.data.sources import check_root
from synthmed.errors import ConfigError, DataError
from synthmed.output_dir import claim_output_dir, is_folder_name

EXECUTORS = ("local", "slurm", "submitit-local")
MANIFEST = "benchmark.json"


def count_jobs(jobs: list[Job]) -> dict[str, dict[str, int]]:
    """Jobs per dimension and stage (prepare and settings are counted once, under "data")."""
    counts: dict[str, Counter] = {}
    for job in jobs:
        counts.setdefault(job.labels.get("dimension", "data"), Counter())[job.stage] += 1
    return {dimension: dict(c) for dimension, c in counts.items()}


def training_plan(preset: BenchmarkPreset, jobs: list[Job]) -> list[dict[str, Any]]:
    """Per setting: its resolution, the seeds each model trains (or, for an external model, imports), and
    how many of those trainings wait for seed 0's (shared_stop)."""
    trains = [j for j in jobs if j.stage in ("train", "import")]
    plan = []
    for ref in preset.settings:
        mine = [j for j in trains if (j.labels["dimension"], j.labels["setting"]) == (ref.dimension, ref.name)]
        plan.append({"dimension": ref.dimension, "setting": ref.name, "resolution": ref.resolution,
                     "seeds": {m: sum(j.labels["model"] == m for j in mine) for m in preset.models},
                     "waiting": sum("first_seed" in j.inputs for j in mine)})
    return plan


def run_benchmark(preset: BenchmarkPreset, out: str | os.PathLike, executor: str = "local", workers: int = 1,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every job of ``preset`` that is not done; returns the job states and the results path."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: expected one of {EXECUTORS}")
    if workers < 1:
        raise ConfigError(f"--jobs {workers}: jobs run at once must be at least 1")
    if executor == "slurm":  # submitit finds no Slurm only when it submits, after benchmark.json is written
        missing = [program for program in ("sbatch", "srun") if shutil.which(program) is None]
        if missing:
            raise ConfigError(f"--executor slurm: Slurm is not installed here (no {' or '.join(missing)} on PATH); "
                              "run on a Slurm login node, or use --executor local")
    out = Path(out)
    # a benchmark folder is resumed (the jobs a changed preset reaches run again); any other folder is not ours
    resumed = claim_output_dir(out, MANIFEST, "a benchmark", same=lambda: True, staged=False)
    previous = read_manifest(out)[0].get("runs", []) if resumed else []
    jobs = expand(preset)
    if job_state(out, jobs[0].id) != "done":  # the prepare job: a prepared store needs its data no more
        check_root(preset.values["data"]["source"], preset.values["data"].get("root"))  # else it fails in a job log
    run = {"started": time.time(), "executor": executor, "workers": workers}
    manifest = {"preset": preset.values, "synthmed_version": __version__, "runs": [*previous, run],
                "jobs": [j.to_dict() for j in jobs]}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MANIFEST, manifest)
    log(f"{preset.name}: {len(jobs)} jobs, {sum(job_state(out, j.id) == 'done' for j in jobs)} already done")
    if executor == "local":
        states = run_local(jobs, out, workers, log)
    else:
        states = run_submitit(jobs, out, preset.values["slurm"], "slurm" if executor == "slurm" else "local", log)
    table = collect_results(jobs, out)
    write_results(table, out)
    run.update(finished=time.time(), jobs_done=sum(v == "done" for v in states.values()))
    write_json_atomic(out / MANIFEST, manifest)
    summary = Counter(states.values())
    log(f"done {summary['done']}, failed {summary['failed']}, not run {len(jobs) - summary['done'] - summary['failed']}"
        f"; {len(table)} result rows in {out / 'results.parquet'}")
    return {"states": states, "results": out / "results.parquet", "rows": len(table)}


def read_manifest(out: str | os.PathLike) -> tuple[dict[str, Any], list[Job]]:
    """``OUT/benchmark.json`` and its jobs, checked: a folder without one, or with a damaged one, is one
    error naming it."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{out} holds no benchmark (no {MANIFEST}); start one with `synthmed benchmark`")
    manifest = read_json(path)  # unreadable, not JSON, or not an object: a DataError naming the file
    if not (isinstance(manifest.get("jobs"), list) and isinstance(manifest.get("preset"), dict)
            and isinstance(manifest.get("runs", []), list)):
        raise DataError("is damaged: expected a mapping with 'preset', 'jobs' and 'runs'", file=path)
    # it may be hand-edited: what the status, the results table and the report read is checked here, by name
    for number, entry in enumerate(manifest["jobs"], 1):
        if problem := _job_problem(entry):
            raise DataError(f"is damaged: job entry {number} {problem}", file=path)
    for number, run in enumerate(manifest.get("runs", []), 1):
        if not (isinstance(run, dict) and all(matches(run.get(key), hint) for key, hint in RUN_TYPES.items())):
            raise DataError(f"is damaged: run {number} = {run!r} must be a mapping with a time 'started' (and "
                            "'finished')", file=path)
    preset = manifest["preset"]
    if not matches(preset.get("name"), str):
        raise DataError(f"is damaged: preset.name = {preset.get('name')!r} must be text", file=path)
    fidelity = preset.get("fidelity")
    if not (isinstance(fidelity, dict) and matches(fidelity.get("max_images"), int | None)):
        raise DataError(f"is damaged: preset.fidelity = {fidelity!r} must be a mapping with max_images a whole "
                        "number or null", file=path)
    return manifest, [Job(**j) for j in manifest["jobs"]]


# a job entry of benchmark.json (``Job.to_dict``); its labels as ``jobs.expand`` gives them: a run's five, fewer for
# the data jobs and the label check, which are no model's
JOB_TYPES = {"id": str, "stage": str, "params": dict[str, Any], "inputs": dict[str, str], "labels": dict[str, Any]}
LABEL_TYPES = {"dataset": str, "dimension": str, "setting": str, "model": str, "seed": int}
STAGE_LABELS = {"prepare": ("dataset",), "settings": ("dataset",),
                "label-check": ("dataset", "dimension", "setting", "seed")}
# what the report reads of a train job's config (the FID panel's caption)
TRAIN_CONFIG_READ = {"fid_extractor": str, "fid_samples": int, "fid_every": int}
RUN_TYPES = {"started": float, "finished": float | None}  # a run's times (no 'finished' while it runs)


def _job_problem(entry: Any) -> str | None:
    """What is wrong with a job entry of benchmark.json, in words (to follow "job entry N"); None when nothing is."""
    if not isinstance(entry, dict) or set(entry) != set(JOB_TYPES):
        return f"= {entry!r} must be a mapping of {sorted(JOB_TYPES)}"
    for key, hint in JOB_TYPES.items():
        if not matches(entry[key], hint):
            return f"{key} = {entry[key]!r} must be {describe(hint)}"
    if entry["stage"] not in STAGES:
        return f"stage = {entry['stage']!r} is not one of {sorted(STAGES)}"
    for job_id in (entry["id"], *entry["inputs"].values()):  # each names its folder jobs/<id>: nothing outside
        if not is_folder_name(job_id):
            return f"names the job {job_id!r}, which is not a folder name (jobs/<id>)"
    labels = entry["labels"]
    for key in STAGE_LABELS.get(entry["stage"], tuple(LABEL_TYPES)):
        if key not in labels:
            return f"labels has no {key!r}"
        if key == "seed" and (problem := seed_problem(labels[key])):
            return f"labels.seed = {labels[key]!r} {problem}"
        if not matches(labels[key], LABEL_TYPES[key]):
            return f"labels.{key} = {labels[key]!r} must be {describe(LABEL_TYPES[key])}"
    config = entry["params"].get("config")
    if entry["stage"] == "train" and not (isinstance(config, dict) and all(
            matches(config.get(key), hint) for key, hint in TRAIN_CONFIG_READ.items())):
        wanted = ", ".join(f"{key} ({describe(hint)})" for key, hint in TRAIN_CONFIG_READ.items())
        return f"params.config must be a training config with {wanted}"
    return None


def load_jobs(out: str | os.PathLike) -> list[Job]:
    return read_manifest(out)[1]


def benchmark_status(out: str | os.PathLike) -> dict[str, Any]:
    """Jobs per state, overall and per stage, and the failed jobs with their errors."""
    jobs = load_jobs(out)
    states = {j.id: job_state(out, j.id) for j in jobs}
    per_stage: dict[str, Counter] = {}
    for job in jobs:
        per_stage.setdefault(job.stage, Counter())[states[job.id]] += 1
    failed = {j: JobFile(Path(out) / "jobs" / j / "failed.json").get("error") for j, s in states.items()
              if s == "failed"}
    return {"total": dict(Counter(states.values())), "per_stage": {k: dict(v) for k, v in per_stage.items()},
            "states": states, "failed": failed, "order": list(STATES)}
