"""`evaluate fidelity` and `evaluate privacy` end to end on tiny 32 px settings."""

from __future__ import annotations

import json

from PIL import Image

from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.suite import evaluate_fidelity_run, evaluate_privacy_run
from synthmed.evaluation.utility import evaluate_utility
from test_utility import FAST, tiny_setting


def test_fidelity_and_privacy_runs_write_their_outputs(tmp_path):
    real, synthetic = tiny_setting(tmp_path, "real", seed=4), tiny_setting(tmp_path, "synthetic", seed=5)
    out = tmp_path / "eval"
    evaluate_utility(real, synthetic, ClassifierConfig(max_epochs=1, **FAST), out, log=lambda m: None, progress=False)
    classifier = out / "real_classifier.pt"

    fidelity = evaluate_fidelity_run(real, synthetic, classifier, out, extractors=("pixels",), log=lambda m: None)
    saved = json.loads((out / "fidelity.json").read_text())
    assert set(saved["metrics"]) == {"pixels", "in-domain"}
    for row in saved["metrics"].values():
        assert row["n_real"] == row["n_fake"] == 60
        assert row["fd"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["coverage"] <= 1
    assert fidelity["metrics"]["in-domain"]["extractor"].startswith("densenet121")

    privacy = evaluate_privacy_run(real, synthetic, classifier, out, log=lambda m: None)
    saved = json.loads((out / "privacy.json").read_text())
    assert saved["verdict"] in ("pass", "warn", "fail") and saved["verdict"] == privacy["verdict"]
    assert 0 <= saved["copy"]["rate"] <= 1 and 0 <= saved["mia"]["auc"] <= 1
    assert Image.open(out / "nearest_neighbours.png").size[1] == 2 * 32 + 2
