"""A benchmark as a graph of jobs, each keyed by a hash of its inputs, with its state on disk.

``expand`` turns a preset into jobs in dependency order::

    prepare -> settings -> train (per model, setting, seed) -> generate
                        -> import (per external model, setting, seed: a set made elsewhere, external.py)
                        -> real-classifier (per setting, seed; shared by the models)
                        -> label-check (per setting, seed, when a model has label_check_tries)
    train + label-check -> generate (the label check's classifier is another seed of the real one)
    generate or import + real-classifier -> utility, fidelity, privacy;  utility -> importance

With ``shared_stop`` the trainings of seeds 1..n also read seed 0's training of their setting
and model (role ``first_seed``): they train to the step where it kept its generator (S.3).
A model with ``max_resolution`` gets no jobs on settings above it.

A job's key hashes its stage, its parameters and the ids of the jobs it reads (which hold
their own keys), so a changed number reaches exactly the jobs downstream of it. A job
lives in ``OUT/jobs/<id>/``; ``done.json`` is written last, after every output is in
place, so a job is either done or it runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthmed._io import read_json, write_json_atomic
from synthmed.benchmark import external
from synthmed.benchmark.presets import BenchmarkPreset
from synthmed.data.settings import load_preset as load_settings_preset
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.training.config import load_config

JOB_FORMAT = 1  # bump when a stage's outputs change meaning: every key changes with it
# the label check's classifier differs from the real classifier that scores the sets only in its seed,
# so that the real classifier's AUROC on the synthetic test fold does not grade its own choice
LABEL_CHECK_SEED = 1000
# where a job runs, kept out of its identity; its numbers still round as that hardware does (a CPU or
# a GPU; bfloat16 or float32 under `bf16: auto` and `sample_bf16: auto`), as every floating-point result does
HARDWARE_KEYS = ("device", "threads")
STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class Job:
    id: str
    stage: str
    params: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # role -> id of the job whose outputs it reads
    labels: dict[str, Any] = field(default_factory=dict)  # dataset, dimension, setting, model, seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make(stage: str, params: dict[str, Any], inputs: dict[str, str], labels: dict[str, Any]) -> Job:
    blob = json.dumps({"format": JOB_FORMAT, "stage": stage, "params": params, "inputs": inputs}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    slug = "-".join(str(labels[k]) for k in ("dimension", "setting", "model") if labels.get(k))
    seed = f"-s{labels['seed']}" if "seed" in labels else ""
    return Job(f"{stage}{'-' + slug if slug else ''}{seed}-{key}", stage, params, inputs, labels)


def _without_hardware(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in HARDWARE_KEYS}


def expand(preset: BenchmarkPreset) -> list[Job]:
    """Every job of the preset, each after the jobs it reads."""
    values = preset.values
    data = dict(values["data"])
    if data.get("root"):
        data["root"] = str(Path(data["root"]).expanduser().resolve())
    dataset = data["source"]
    prepare = _make("prepare", data, {}, {"dataset": dataset})
    spec = values["settings"] if isinstance(values["settings"], dict) else load_settings_preset(values["settings"])
    settings = _make("settings", {"preset": spec}, {"store": prepare.id}, {"dataset": dataset})
    jobs = [prepare, settings]
    for ref in preset.settings:
        where = {"dataset": dataset, "dimension": ref.dimension, "setting": ref.name}
        models = {m: e for m, e in preset.models.items() if ref in preset.settings_of(m)}
        first_seed: dict[str, str] = {}  # model -> seed 0's training job of this setting
        for seed in range(ref.seeds):
            setting = {"dimension": ref.dimension, "setting": ref.name}
            classifier = _without_hardware(ClassifierConfig.from_dict({**values["classifier"], "seed": seed}).to_dict())
            real = _make("real-classifier", {**setting, "config": classifier}, {"settings": settings.id},
                         {**where, "model": "real", "seed": seed})
            jobs.append(real)  # first: every evaluation waits for it, so it runs beside the trainings
            checker = None
            if any(entry.get("label_check_tries") for entry in models.values()):
                checker = _make("label-check", {**setting, "config": {**classifier, "seed": LABEL_CHECK_SEED + seed}},
                                {"settings": settings.id}, {**where, "seed": seed})
            generated = {}
            for model, entry in models.items():
                labels = {**where, "model": model, "seed": seed}
                if "external" in entry:
                    source = external.source(entry["external"], ref.dimension, ref.name, seed)
                    generated[model] = _make("import", {**setting, "source": str(source), "seed": seed,
                                                        "fingerprint": external.fingerprint(source)},
                                             {"settings": settings.id}, labels)
                    jobs.append(generated[model])
                    continue
                config = load_config(entry["config"], {**entry["set"], "seed": seed}).to_dict()
                reads = {"settings": settings.id}
                if values["shared_stop"] and seed > 0:
                    reads["first_seed"] = first_seed[model]
                train = _make("train", {**setting, "config": _without_hardware(config)}, reads, labels)
                first_seed.setdefault(model, train.id)
                jobs.append(train)
                if checker is not None and checker not in jobs:  # after the first training: it is not needed sooner
                    jobs.append(checker)
                tries = entry["label_check_tries"]
                generated[model] = (_make("generate", {"label_check_tries": tries},
                                          {"run": train.id, "label_check": checker.id}, labels) if tries
                                    else _make("generate", {}, {"run": train.id}, labels))
                jobs.append(generated[model])
            for model, generate in generated.items():
                labels = {**where, "model": model, "seed": seed}
                pair = {"settings": settings.id, "synthetic": generate.id, "real_classifier": real.id}
                utility = _make("utility", {**setting, "config": classifier}, pair, labels)
                jobs += [utility,
                         _make("fidelity", {**setting, **values["fidelity"]}, pair, labels),
                         _make("privacy", {**setting, **values["privacy"]}, pair, labels),
                         _make("importance", {**setting, **values["importance"], "seed": seed},
                               {"settings": settings.id, "real_classifier": real.id, "utility": utility.id}, labels)]
    return jobs


# ---- state on disk ------------------------------------------------------------------------------


def job_dir(root: str | os.PathLike, job_id: str) -> Path:
    return Path(root) / "jobs" / job_id


def _alive(marker: dict[str, Any]) -> bool:
    """A running marker from another host is believed; on this host the process must exist."""
    if marker.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(marker["pid"]), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def job_state(root: str | os.PathLike, job_id: str) -> str:
    folder = job_dir(root, job_id)
    if (folder / "done.json").is_file():
        return "done"
    if (folder / "running.json").is_file() and _alive(read_json(folder / "running.json")):
        return "running"
    if (folder / "failed.json").is_file():
        return "failed"
    return "pending"  # never started, or its process died (a kill): it runs again


def mark_running(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failed.json").unlink(missing_ok=True)
    write_json_atomic(folder / "running.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": time.time()})
    with open(folder / "attempts.log", "a") as log:  # one line per start: how often a job really ran
        log.write(f"{time.time():.3f} {socket.gethostname()} {os.getpid()}\n")


def mark_finished(folder: Path, started: float, outputs: dict[str, Any] | None = None,
                  error: str | None = None) -> None:
    record = {"finished": time.time(), "seconds": time.time() - started, **({"outputs": outputs} if outputs else {})}
    if error is None:
        write_json_atomic(folder / "done.json", record)
    else:
        write_json_atomic(folder / "failed.json", {**record, "error": error})
    (folder / "running.json").unlink(missing_ok=True)
