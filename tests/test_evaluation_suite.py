"""`evaluate fidelity` and `evaluate privacy` end to end on tiny 32 px settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from helpers import FAST_CLASSIFIER, finding_setting
from synthmed.data import BenchmarkSetting
from synthmed.data.records import SPLITS
from synthmed.errors import ConfigError
from synthmed.evaluation import fidelity, suite
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.suite import evaluate_fidelity_run, evaluate_privacy_run
from synthmed.evaluation.utility import evaluate_utility, setting_identity
from synthmed.metrics.extractors import extract_features
from synthmed.synthesis import write_set


def test_fidelity_and_privacy_runs_write_their_outputs(tmp_path, monkeypatch):
    real, synthetic = finding_setting(tmp_path, "real", seed=4), finding_setting(tmp_path, "synthetic", seed=5)
    out = tmp_path / "eval"
    evaluate_utility(real, synthetic, ClassifierConfig(max_epochs=1, **FAST_CLASSIFIER), out, log=lambda m: None,
                     progress=False)
    classifier = out / "real_classifier.pt"

    fidelity = evaluate_fidelity_run(real, synthetic, classifier, out, extractors=("pixels",), log=lambda m: None)
    saved = json.loads((out / "fidelity.json").read_text())
    assert set(saved["metrics"]) == {"pixels", "in-domain"}
    for row in saved["metrics"].values():
        assert row["n_real"] == row["n_fake"] == 60
        assert row["fd"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["coverage"] <= 1
    assert fidelity["metrics"]["in-domain"]["extractor"].startswith("densenet121")

    with pytest.raises(ConfigError, match="alpha"):  # before any feature is computed
        evaluate_privacy_run(real, synthetic, classifier, out / "bad", log=lambda m: None, alpha=2.0)
    assert not (out / "bad").exists()
    lines = []
    privacy = evaluate_privacy_run(real, synthetic, classifier, out, log=lines.append, copy_quantile=0.02)
    saved = json.loads((out / "privacy.json").read_text())
    assert saved["verdict"] in ("pass", "warn", "fail") and saved["verdict"] == privacy["verdict"]
    tests = saved["tests"]
    # members: the real train fold; non-members: real val + test; every synthetic image of all folds
    assert (tests["membership"]["n_members"], tests["membership"]["n_nonmembers"]) == (60, 40)
    assert tests["copies/pixels"]["n_synthetic"] == tests["copies/features"]["n_synthetic"] == 100
    assert saved["options"]["copy_quantile"] == 0.02 and tests["copies/features"]["k"] == 1
    assert saved["real_setting_identity"] == setting_identity(BenchmarkSetting(real))
    assert saved["synthetic_setting_identity"] == setting_identity(BenchmarkSetting(synthetic))
    assert lines[1].startswith("Verdict: ") and lines[1].endswith(saved["reason"] + ".")
    for space in ("features", "pixels"):
        assert Image.open(out / saved["figures"][space]).size[1] == 2 * 32 + 2

    # the command line's privacy audit, with its progress bars: the same report, the bars run to their ends
    from typer.testing import CliRunner

    from synthmed.cli import app
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes its bars to the terminal: a narrow one would cut the counts
    shown = CliRunner().invoke(app, ["evaluate", "privacy", "--real", str(real), "--synthetic", str(synthetic),
                                     "--classifier", str(classifier), "--out", str(out / "cli"),
                                     "--copy-quantile", "0.02", "--progress"])
    assert shown.exit_code == 0, shown.output
    assert json.loads((out / "cli" / "privacy.json").read_text())["tests"] == saved["tests"]
    bars = [line for line in shown.output.splitlines() if "100%" in line]
    assert len(bars) == 6, shown.output  # features of the train, unseen and synthetic images; three pixel searches
    assert all(line.startswith("densenet121-real-classifier features") for line in bars[:3]), bars
    steps = ["membership: pixel search, 100 against 100", "copies, synthetic: pixel search, 100 against 60",
             "copies, unseen: pixel search, 40 against 60"]  # each bar names the audit step it serves
    for step, line in zip(steps, bars[3:]):
        assert line.startswith(f"{step} images") and "147/147" in line, bars


def test_a_set_of_two_images_per_row_is_scored_on_equal_image_counts_and_says_so(tmp_path):
    real = BenchmarkSetting(finding_setting(tmp_path, "real", seed=4))
    first, second = (BenchmarkSetting(finding_setting(tmp_path, name, seed=seed)) for name, seed in (("a", 5), ("b", 6)))
    folds = {fold: np.tile(real.labels(fold), (2, 1)) for fold in SPLITS}
    images = {fold: np.concatenate([first.images(fold), second.images(fold)]) for fold in SPLITS}
    write_set(tmp_path / "x2", images, folds, real, 32, "test", 0, False, None)
    doubled, out = tmp_path / "x2" / "setting", tmp_path / "eval"

    utility = evaluate_utility(real.path, doubled, ClassifierConfig(max_epochs=1, **FAST_CLASSIFIER), out,
                               log=lambda m: None, progress=False)
    assert utility["images_per_row"] == 2
    lines = []
    evaluate_fidelity_run(real.path, doubled, out / "real_classifier.pt", out, extractors=("pixels",), log=lines.append)
    for row in json.loads((out / "fidelity.json").read_text())["metrics"].values():
        assert row["n_real"] == row["n_fake"] == 60  # 120 synthetic training images drawn down to the real 60
    assert "fidelity on 60 real and 60 synthetic training images" in lines[0]


def test_real_features_are_computed_once_per_classifier_and_shared_by_fidelity_and_privacy(tmp_path, monkeypatch):
    """What each run extracts: the real images' features come from the cache after the first run, and
    a classifier trained again in the same folder gets features of its own, never the old one's."""
    real, synthetic = finding_setting(tmp_path, "real", seed=4), finding_setting(tmp_path, "synthetic", seed=5)
    out = tmp_path / "eval"
    config = ClassifierConfig(max_epochs=1, **FAST_CLASSIFIER)
    evaluate_utility(real, synthetic, config, out, log=lambda m: None, progress=False)
    classifier = out / "real_classifier.pt"
    extracted = []  # (extractor, images) per computation

    def counted(extractor, images, *args, **kwargs):
        extracted.append((extractor.name.split("-")[0], len(images)))
        return extract_features(extractor, images, *args, **kwargs)
    monkeypatch.setattr(suite, "extract_features", counted)
    monkeypatch.setattr(fidelity, "extract_features", counted)

    def runs(evaluate, cache_dir=None, folder=out) -> tuple[dict, list]:
        extracted.clear()
        result = evaluate(real, synthetic, classifier, folder, log=lambda m: None, cache_dir=cache_dir)
        return result, sorted(extracted)

    first, done = runs(lambda *a, **k: evaluate_fidelity_run(*a, extractors=("pixels",), **k))
    assert done == [("densenet121", 60), ("densenet121", 60), ("pixels", 60), ("pixels", 60)]
    private, done = runs(evaluate_privacy_run)  # the 60 training images' features: fidelity's
    assert done == [("densenet121", 40), ("densenet121", 100)]
    assert runs(evaluate_privacy_run)[1] == [("densenet121", 100)]  # only the synthetic images now
    assert runs(evaluate_privacy_run, tmp_path / "empty", tmp_path / "alone")[0]["tests"] == private["tests"]

    evaluate_utility(real, synthetic, dataclasses.replace(config, seed=1), out, log=lambda m: None, progress=False)
    again, done = runs(lambda *a, **k: evaluate_fidelity_run(*a, extractors=("pixels",), **k))
    assert done == [("densenet121", 60), ("densenet121", 60), ("pixels", 60)]  # the pixels' real set is kept
    fresh, _ = runs(lambda *a, **k: evaluate_fidelity_run(*a, extractors=("pixels",), **k), tmp_path / "fresh",
                    tmp_path / "fresh-eval")
    assert again["metrics"] == fresh["metrics"] and again["metrics"]["in-domain"] != first["metrics"]["in-domain"]
    private_again, done = runs(evaluate_privacy_run)
    assert done == [("densenet121", 40), ("densenet121", 100)]
    assert private_again["tests"] == runs(evaluate_privacy_run, tmp_path / "fresh2", tmp_path / "alone2")[0]["tests"]


def test_evaluate_all_writes_every_output_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from synthmed.cli import app

    real, synthetic = finding_setting(tmp_path, "real", seed=4), finding_setting(tmp_path, "synthetic", seed=5)
    out = tmp_path / "all"
    result = CliRunner().invoke(app, ["evaluate", "all", "--real", str(real), "--synthetic", str(synthetic),
                                      "--out", str(out), "--set", "max_epochs=1", "--set", "batch_size=16",
                                      "--set", "threads=1", "--extractor", "pixels", "--images", "2",
                                      "--patch", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in ("utility.json", "fidelity.json", "privacy.json", "importance.json", "nearest_neighbours_features.png",
                 "importance.png", "real_classifier.pt", "synthetic_classifier.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "importance.json").read_text())["patch"] == 8
