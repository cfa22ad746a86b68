"""Bring your own generator: the example plug-in (examples/synthmed-example-generator, installed by
`make setup`) trains, generates and is benchmarked through the registry; a preset's `external` model
(synthetic sets made elsewhere) runs through the same sweep to the results table and the report."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import blob_image, write_br35h_tree
from helpers import run_cli as cli
from synthmed.benchmark.jobs import expand
from synthmed.benchmark.presets import load_preset, resolve_preset
from synthmed.benchmark.results import read_results
from synthmed.benchmark.runner import run_benchmark, training_plan
from synthmed.data import BenchmarkSetting, build_settings
from synthmed.errors import ConfigError
from synthmed.report import build_report
from synthmed.training.registry import registered

EXAMPLE = Path(__file__).parents[1] / "examples" / "synthmed-example-generator"
# the example's preset, shrunk to seconds on 16-32 px
CVAE_TINY = {"batch_size": 8, "min_images": 160, "max_images": 320, "fid_every": 80, "fid_samples": 24,
             "fid_extractor": "pixels", "sample_every": 160, "checkpoint_every": 80, "log_every": 40, "threads": 1}


@pytest.fixture(scope="session", autouse=True)
def example_generator() -> None:
    """The example plug-in must be installed as a user would install it (the Makefile does): fail, do not skip."""
    if "cvae" not in registered():
        pytest.fail(f"the example generator is not installed: run `make setup` or `pip install --no-deps -e {EXAMPLE}`")


def test_synthmed_models_lists_every_registered_generator_with_its_presets(capsys, monkeypatch):
    from synthmed.cli import console

    monkeypatch.setattr(console, "width", 300)  # one line per model
    assert cli(["models"]) == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert set(rows) == set(registered()) >= {"cpdgan", "proggan", "diffusion", "cvae"}
    assert rows["cpdgan"][:2] == ["built in", "cpdgan-cpu, cpdgan-paper"]
    assert rows["cvae"][:3] == ["synthmed-example-generator 0.1.0", "cvae-cpu", "latent=16, hidden=256, pixel_std=0.1"]


def test_the_example_plug_in_trains_and_generates_through_the_cli(tiny_store, tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("dimensions:\n  all:\n    settings:\n      - {name: r16, resolution: 16}\n")
    build_settings(preset, tiny_store, tmp_path / "settings", log=lambda m: None)
    setting, run = tmp_path / "settings" / "all" / "r16", tmp_path / "run"
    sets = [f"--set={key}={value}" for key, value in {**CVAE_TINY, "model_options": "{latent: 4}"}.items()]
    assert cli(["train", "--config", "cvae-cpu", "--data", str(setting), "--out", str(run), *sets,
                "--no-progress"]) == 0, capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["model"] == "cvae"
    assert yaml.safe_load((run / "config.yaml").read_text())["model_options"] == {"latent": 4, "hidden": 256,
                                                                                   "pixel_std": 0.1}
    with open(run / "log.csv") as f:
        log = list(csv.DictReader(f))
    losses = [float(row["loss"]) for row in log]
    fids = [h["fid"] for h in json.loads((run / "summary.json").read_text())["fid_history"]]
    assert np.mean(losses[-3:]) < 0.7 * losses[0] and fids[-1] < fids[0]  # it learns: loss and FD fall
    assert cli(["generate", str(run), "--no-progress"]) == 0, capsys.readouterr().out
    synthetic, real = BenchmarkSetting(run / "synthetic" / "setting"), BenchmarkSetting(setting)
    for fold in ("train", "test"):
        assert np.array_equal(synthetic.labels(fold), real.labels(fold))
        assert synthetic.images(fold).shape == real.images(fold).shape and synthetic.images(fold).std() > 0
    card = json.loads((run / "synthetic" / "card.json").read_text())
    assert card["model"] == "cvae" and card["config"]["model_options"]["latent"] == 4


def _external_sets(folder: Path, n_per_label: int = 20) -> None:
    """mygen's outputs for samples/n12, seed 0: one .npz of images for any fold, 48 px (import resizes)."""
    rng = np.random.default_rng(7)
    labels = np.array([[1, 0]] * n_per_label + [[0, 1]] * n_per_label, np.uint8)
    images = np.stack([blob_image(rng, 48, bright=bool(tumor)) for _, tumor in labels])
    (folder / "samples" / "n12").mkdir(parents=True)
    np.savez(folder / "samples" / "n12" / "seed0.npz", images=images, labels=labels,
             label_names=["No Finding", "Tumor"])


def _byog_preset(tmp_path: Path) -> dict:
    root = write_br35h_tree(tmp_path / "br35h", per_class=30)
    _external_sets(tmp_path / "mygen")
    return {
        "name": "byog",
        "data": {"source": "br35h", "root": str(root), "resolutions": [32]},
        "settings": {"dimensions": {"samples": {
            "defaults": {"resolution": 32, "combinations": 2, "val_per_combination": 2, "test_per_combination": 2},
            "settings": [{"name": "n12", "train_per_combination": 12}]}}},
        "models": {"cvae": {"config": "cvae-cpu", "set": CVAE_TINY}, "mygen": {"external": "mygen"}},
        "seeds": 1,
        "classifier": {"max_epochs": 1, "batch_size": 16, "threads": 1},
        "fidelity": {"extractors": ["pixels"]},
        "importance": {"images": 2, "patch": 8, "stride": 8},
    }


def test_a_sweep_with_a_plug_in_and_an_external_model_runs_to_a_report(tmp_path):
    path = tmp_path / "byog.yaml"
    path.write_text(yaml.safe_dump(_byog_preset(tmp_path)))  # external: relative to the preset file
    preset = load_preset(path)
    stages = {(j.stage, j.labels.get("model")) for j in expand(preset)}
    assert {("train", "cvae"), ("generate", "cvae"), ("import", "mygen")} <= stages
    assert not {("train", "mygen"), ("generate", "mygen"), ("import", "cvae")} & stages
    assert training_plan(preset, expand(preset))[0]["seeds"] == {"cvae": 1, "mygen": 1}  # mygen: imported sets
    result = run_benchmark(preset, tmp_path / "bench", log=lambda m: None)
    assert set(result["states"].values()) == {"done"}
    table = read_results(tmp_path / "bench")
    for model in ("cvae", "mygen"):
        for metric in ("auc_syn", "auc_real_minus_auc_syn", "fd/pixels", "copy_rate", "mia_auc", "map_pearson"):
            assert len(table[(table.model == model) & (table.metric == metric)]) == 1, (model, metric)
    assert set(table[table.model == "mygen"].metric) & {"images_seen", "train_seconds"} == set()  # never trained
    html = build_report(tmp_path / "bench").read_text()
    def section(name: str) -> str:
        return html.split(f'<section id="{name}">')[1].split("</section>")[0]

    for model in ("cvae", "mygen"):  # a row of the summary table, a privacy audit and a dataset card each
        assert f'<td class="l">{model}</td>' in section("summary")
        assert f"<h3>{model}, samples/n12:" in section("privacy")
    assert "imported from an external generator, 32 images" in section("cards")
    assert str(tmp_path / "mygen") not in html.split("<h3>Preset</h3>")[0]  # no source path outside the preset


def test_an_external_model_needs_a_set_per_setting_and_seed_and_a_changed_set_is_imported_again(tmp_path):
    values = _byog_preset(tmp_path)
    values["models"] = {"mygen": {"external": str(tmp_path / "mygen")}}
    jobs = {j.stage: j for j in expand(resolve_preset(values))}
    source = tmp_path / "mygen" / "samples" / "n12" / "seed0.npz"
    assert jobs["import"].params["source"] == str(source)
    os.utime(source, ns=(1, 1))  # the set changed (here only its time): import and evaluation run again
    again = {j.stage: j for j in expand(resolve_preset(values))}
    assert again["import"].id != jobs["import"].id and again["utility"].id != jobs["utility"].id
    assert again["real-classifier"].id == jobs["real-classifier"].id

    with pytest.raises(ConfigError, match=r"models.mygen.external: .*/samples/n12/seed1 not found: expected a folder "
                                          r"seed1/, seed1.npz or seed1.csv"):
        resolve_preset({**values, "seeds": 2})
    source.with_suffix(".csv").write_text("Path,No Finding,Tumor\n")
    with pytest.raises(ConfigError, match=r"more than one source \(seed0.npz, seed0.csv\)"):
        resolve_preset(values)
    for bad, message in [({"external": "x", "config": "cpdgan-cpu"}, r"unknown key\(s\) \['config'\]"),
                         ({}, "needs a 'config' .* or 'external'")]:
        with pytest.raises(ConfigError, match=message):
            resolve_preset({**values, "models": {"mygen": bad}})
