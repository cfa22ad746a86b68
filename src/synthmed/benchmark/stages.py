"""What each job stage does: thin calls into the data, training, synthesis and evaluation APIs.

A stage function gets the job, its own directory and the directories of the jobs it reads,
plus ``runtime`` (threads, device: where it runs, never what it computes). It writes its
outputs under its directory and returns a small summary for ``done.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from synthmed._io import write_json_atomic, write_text_atomic
from synthmed.benchmark.jobs import HARDWARE_KEYS, Job
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.training.run_dir import RunDir

Log = Callable[[str], None]
REAL_RESULT = "real.json"  # a real-classifier job's AUROC on the real test fold


def setting_dir(settings_job: Path, job: Job) -> Path:
    return settings_job / "settings" / job.params["dimension"] / job.params["setting"]


def job_run(train_job: Path) -> RunDir:
    """The training run of a train job."""
    return RunDir(train_job / "run")


def job_synthetic(generate_job: Path) -> Path:
    """The synthetic set (``synthmed generate``'s output) of a generate job."""
    return generate_job / "synthetic"


def _hardware(runtime: dict[str, Any]) -> dict[str, Any]:
    """The runtime's say on where a job runs: the keys its key leaves out (jobs.HARDWARE_KEYS)."""
    return {k: runtime[k] for k in HARDWARE_KEYS if k in runtime}


def _classifier_config(job: Job, runtime: dict[str, Any]):
    from synthmed.evaluation.classifier import ClassifierConfig

    return ClassifierConfig(**{**job.params["config"], **_hardware(runtime)})


def prepare(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.data import prepare_source

    p = job.params
    prepare_source(p["source"], out / "store", root=p["root"], options=p["options"],
                   resolutions=p["resolutions"], progress=False, log=log)
    return {"store": "store"}


def settings(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.data import build_settings

    preset_file = out / "settings-preset.yaml"
    write_text_atomic(preset_file, yaml.safe_dump(job.params["preset"], sort_keys=False))
    built = build_settings(preset_file, inputs["store"] / "store", out / "settings", overwrite=True, log=log)
    return {"settings": len(built)}


def train(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    """Train one run; with a ``first_seed`` input (shared_stop) to the step where seed 0 kept its
    generator, evaluating FID there once (unless ``fid_every`` is 0): every seed's generator then comes
    from the same step (S.3)."""
    from synthmed.training.config import config_from_dict
    from synthmed.training.loop import start_run
    from synthmed.training.loop import train as train_run

    run = job_run(out)
    if not run.is_run():  # a new run (a kill before run.json left at most a config.yaml)
        shutil.rmtree(run.path, ignore_errors=True)
        values = {**job.params["config"], **_hardware(runtime)}
        if "first_seed" in inputs:
            stop = job_run(inputs["first_seed"]).read_summary()["best_images"]
            values.update(min_images=stop, max_images=stop)
            log(f"shared stopping step: training to {stop:,} images, where seed 0 kept its generator")
        start_run(config_from_dict(values), setting_dir(inputs["settings"], job), run.path)
    summary = train_run(run.path, progress=False, log=log)  # continues from the last checkpoint after a kill
    return {"images_seen": summary.get("images_seen"), "best_fd": summary.get("best_fid")}


def generate(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    """Sample where the training ran: the runtime's device, else ``auto`` (a GPU when the worker has one), as the
    train stage does. A GPU sweep thus samples on its GPU, and the card's ``sampled_on`` says which device type
    made the images; ``synthmed generate`` alone stays on the CPU unless told otherwise."""
    from synthmed.synthesis import generate as generate_set

    check = EvalDir(inputs["label_check"]).real_classifier if "label_check" in inputs else None
    synthetic = generate_set(job_run(inputs["run"]).path, job_synthetic(out), label_check=check,
                             label_check_tries=job.params.get("label_check_tries"),
                             device=_hardware(runtime).get("device", "auto"), export_png=False,
                             overwrite=True, progress=False, log=log)
    return {"synthetic": synthetic.name}


def import_external(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict:
    """A synthetic set made elsewhere (a preset's ``external`` model), matched to the setting as `synthmed import`
    matches it; the evaluation jobs read it as they read generate's."""
    from synthmed.importing import import_synthetic

    import_synthetic(job.params["source"], setting_dir(inputs["settings"], job), out / "synthetic",
                     seed=job.params["seed"], export_png=False, overwrite=True, progress=False, log=log)
    return {"synthetic": "synthetic"}


def _pair(job: Job, inputs: dict[str, Path]) -> tuple[Path, Path, Path]:
    """(real setting, synthetic setting, real classifier) of an evaluation job."""
    return (setting_dir(inputs["settings"], job), job_synthetic(inputs["synthetic"]) / "setting",
            EvalDir(inputs["real_classifier"]).real_classifier)


def real_classifier(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict:
    """The real-data classifier of one setting and seed, shared by every model's evaluation; as the
    ``label-check`` stage, the same with another seed, for the label check of ``generate``."""
    from synthmed.data.settings import BenchmarkSetting
    from synthmed.evaluation.utility import real_classifier as train_real
    from synthmed.metrics.auroc import auroc_per_label

    real = BenchmarkSetting(setting_dir(inputs["settings"], job))
    model, history, _ = train_real(real, _classifier_config(job, runtime), EvalDir(out).real_classifier, log,
                                   progress=False)
    auc = auroc_per_label(real.labels("test"), model.predict(real.images("test")), real.label_names)
    write_json_atomic(out / REAL_RESULT, {"auc_real": auc, "history": history})
    return {"auc_real": auc["mean"]}


def utility(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.evaluation.utility import evaluate_utility

    real, synthetic, classifier = _pair(job, inputs)
    result = evaluate_utility(real, synthetic, _classifier_config(job, runtime), out, log=log, progress=False,
                              real_classifier_path=classifier)
    return {"auc_real": result["auc_real"]["mean"], "auc_syn": result["auc_syn"]["mean"]}


def fidelity(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.evaluation.suite import evaluate_fidelity_run

    real, synthetic, classifier = _pair(job, inputs)
    cache = EvalDir(inputs["real_classifier"]).feature_cache  # the real features: shared by the models of a seed
    evaluate_fidelity_run(real, synthetic, classifier, out, tuple(job.params["extractors"]),
                          job.params["max_images"], log=log, cache_dir=cache, progress=False)
    return {"fidelity": EvalDir(out).fidelity.name}


def privacy(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.evaluation.privacy import DEFAULT_OPTIONS
    from synthmed.evaluation.suite import evaluate_privacy_run

    real, synthetic, classifier = _pair(job, inputs)
    options = {name: job.params[name] for name in DEFAULT_OPTIONS}
    result = evaluate_privacy_run(real, synthetic, classifier, out, log=log, progress=False,
                                  cache_dir=EvalDir(inputs["real_classifier"]).feature_cache, **options)
    return {"verdict": result["verdict"], "decided_by": result["decided_by"]}


def importance(job: Job, out: Path, inputs: dict[str, Path], runtime: dict[str, Any], log: Log) -> dict[str, Any]:
    from synthmed.evaluation.suite import evaluate_importance_run

    p = job.params
    evaluate_importance_run(setting_dir(inputs["settings"], job), EvalDir(inputs["real_classifier"]).real_classifier,
                            EvalDir(inputs["utility"]).synthetic_classifier, out, n_images=p["images"],
                            patch=p["patch"], stride=p["stride"], seed=p["seed"], log=log)
    return {"importance": EvalDir(out).importance.name}


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": prepare, "settings": settings, "train": train, "generate": generate, "import": import_external,
    "real-classifier": real_classifier, "label-check": real_classifier, "utility": utility, "fidelity": fidelity,
    "privacy": privacy, "importance": importance,
}

