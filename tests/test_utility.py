"""Utility evaluation: AUROC scoring, the downstream classifier, its schedule, and utility.json."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import FAST_CLASSIFIER, FINDING_NAMES, finding_images, finding_setting, run_cli
from synthmed import device as device_module
from synthmed.data.settings import BenchmarkSetting
from synthmed.device import bf16_is_fast
from synthmed.errors import ConfigError
from synthmed.evaluation.classifier import (
    Classifier,
    ClassifierConfig,
    class_pos_weight,
    load_classifier,
    load_pretrained,
    plateau_step,
    train_classifier,
)
from synthmed.evaluation.utility import evaluate_utility, real_classifier
from synthmed.metrics.auroc import auroc_per_label, release_flip


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """train_classifier sets torch's thread count (threads=1 here); give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---- metrics ------------------------------------------------------------------------------------


def test_auroc_per_label_matches_sklearn_never_flips_and_leaves_undefined_out():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 40), rng.integers(0, 2, 40), np.zeros(40), np.ones(40)], 1)
    scores = rng.random((40, 4))
    scores[:, 1] = 1 - labels[:, 1] + 0.3 * rng.random(40)  # a label the model gets backwards
    with pytest.warns(UserWarning) as caught:
        result = auroc_per_label(labels, scores, ["a", "b", "none", "all"])
    assert {re.search(r"label '(\w+)'", str(w.message)).group(1) for w in caught} == {"none", "all"}
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(2)]
    assert result["per_label"]["a"] == pytest.approx(expected[0])
    assert result["per_label"]["b"] == pytest.approx(expected[1]) and result["per_label"]["b"] < 0.5  # not 1 - AUROC
    assert result["per_label"]["none"] is None and result["per_label"]["all"] is None  # not scored 0
    assert result["undefined"] == ["none", "all"]
    assert result["reasons"] == {"none": "no positives in the fold", "all": "no negatives in the fold"}
    assert result["mean"] == pytest.approx(np.mean(expected))


def test_release_flip_is_the_papers_code_beside_the_honest_auroc():
    rng = np.random.default_rng(1)
    labels = np.stack([rng.integers(0, 2, 60), rng.integers(0, 2, 60), np.zeros(60)], 1)
    scores = rng.random((60, 3))
    scores[:, 0] = labels[:, 0] + 0.8 * rng.random(60)  # ranked the right way round
    scores[:, 1] = 1 - labels[:, 1] + 0.8 * rng.random(60)  # backwards: AUROC well below 0.5
    with pytest.warns(UserWarning, match="'none'"):
        honest = auroc_per_label(labels, scores, ["right", "backwards", "none"])
    flipped = release_flip(honest)
    right, backwards = (roc_auc_score(labels[:, j], scores[:, j]) for j in range(2))
    assert backwards < 0.3 and honest["per_label"]["backwards"] == pytest.approx(backwards)  # honest stays honest
    assert flipped["per_label"] == {"right": pytest.approx(right), "backwards": pytest.approx(1 - backwards),
                                    "none": None}
    assert flipped["flipped"] == ["backwards"]
    assert flipped["mean"] == pytest.approx((right + 1 - backwards) / 2)  # flipped before the mean, as the release
    assert flipped["mean"] - honest["mean"] == pytest.approx(0.5 - backwards)  # how much the flip flatters


# ---- schedule and weighting (pure functions) ---------------------------------------------------------


def schedule(means: list[float], lr_patience: int = 2, stop_patience: int = 3) -> tuple[list[int], int | None]:
    """Epochs (1-based) after which the lr drops, and the epoch training stops at (None: never)."""
    reductions = []
    for epoch in range(1, len(means) + 1):
        reduce, stop = plateau_step(means[:epoch], lr_patience, stop_patience)
        if stop:
            return reductions, epoch
        if reduce:
            reductions.append(epoch)
    return reductions, None


def test_lr_reduction_and_early_stopping_follow_the_patience_rules():
    assert schedule([0.6, 0.7, 0.8, 0.9]) == ([], None)
    assert schedule([0.6, 0.7, 0.7, 0.65, 0.69, 0.99]) == ([4], 5)  # a tie is no gain
    assert schedule([0.6, 0.7, 0.68, 0.66, 0.75, 0.74, 0.73, 0.72]) == ([4, 7], 8)  # a gain resets the count
    assert schedule([0.5, 0.4, 0.4, 0.4, 0.4, 0.4], stop_patience=5) == ([3, 5], 6)  # every 2 epochs


def test_pos_weight_is_negatives_over_positives():
    labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0]], np.uint8)
    assert class_pos_weight(labels).tolist() == [1.0, 4.0, pytest.approx(1 / 3)]


# ---- the classifier ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train, val = finding_images(80, 16, seed=0), finding_images(40, 16, seed=1)
    out = tmp_path_factory.mktemp("classifier")
    config = ClassifierConfig(input_size=32, max_epochs=3, **FAST_CLASSIFIER)
    logs: list[str] = []
    model, history = train_classifier(*train, *val, config, out_dir=out, log=logs.append, progress=False,
                                      label_names=FINDING_NAMES)
    return model, history, val, out, logs


def test_classifier_learns_an_easy_task_and_saves_the_best_epoch(trained):
    model, history, (val_images, val_labels), out, logs = trained
    assert history["best_val_mean_auroc"] > 0.9
    assert "from scratch" in logs[0]
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, len(history["epochs"]) + 1))
    assert set(history["epochs"][0]["val_auroc"]) == set(FINDING_NAMES) and history["epochs"][0]["lr"] == 1e-3
    probabilities = model.predict(val_images)
    assert probabilities.shape == (40, 2) and ((probabilities >= 0) & (probabilities <= 1)).all()
    assert (auroc_per_label(val_labels, probabilities, FINDING_NAMES)["mean"]
            == pytest.approx(history["best_val_mean_auroc"]))
    assert model.features(val_images[:5]).shape == (5, 1024)
    loaded, checkpoint = load_classifier(out / "classifier.pt")
    np.testing.assert_array_equal(loaded.predict(val_images), probabilities)
    assert checkpoint["history"]["best_epoch"] == history["best_epoch"]


def test_same_seed_gives_identical_history_and_predictions():
    train, val = finding_images(32, 16, seed=2), finding_images(16, 16, seed=3)
    config = ClassifierConfig(input_size=32, max_epochs=1, seed=7, **FAST_CLASSIFIER)
    runs = [train_classifier(*train, *val, config, log=lambda m: None, progress=False) for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][0].predict(val[0]), runs[1][0].predict(val[0]))


def test_bf16_trains_in_bfloat16_and_auto_follows_the_device():
    """bf16 changes the training (the autocast is on); auto is bfloat16 exactly where ``bf16_is_fast``
    says so, and the history records which it was."""
    train, val = finding_images(32, 16, seed=2), finding_images(16, 16, seed=3)
    runs = {choice: train_classifier(*train, *val, ClassifierConfig(input_size=32, max_epochs=1, seed=7, bf16=choice,
                                                                    **FAST_CLASSIFIER),
                                     log=lambda m: None, progress=False) for choice in (False, True, "auto")}
    assert [runs[c][1]["bf16"] for c in (False, True, "auto")] == [False, True, bf16_is_fast(torch.device("cpu"))]
    assert runs[False][1]["epochs"][0]["loss"] != runs[True][1]["epochs"][0]["loss"]
    assert runs["auto"][1] == runs[runs["auto"][1]["bf16"]][1]
    with pytest.raises(ConfigError, match="classifier: bf16 = 'yes' must be"):
        ClassifierConfig.from_dict({"bf16": "yes"})


def test_pretrained_weights_load_from_torchvision_names(tmp_path):
    source = Classifier(ClassifierConfig(input_size=32, seed=1), 1, FINDING_NAMES).net.state_dict()
    torchvision_names = {re.sub(r"\.layers\.(norm|relu|conv)([12])", r".\1\2", k): v for k, v in source.items()}
    torch.save(torchvision_names, tmp_path / "densenet121.pt")
    target = Classifier(ClassifierConfig(input_size=32, seed=2), 1, FINDING_NAMES).net
    head = target.class_layers.out.weight.clone()
    load_pretrained(target, tmp_path / "densenet121.pt")
    assert torch.equal(target.state_dict()["features.denseblock4.denselayer16.layers.conv2.weight"],
                       source["features.denseblock4.denselayer16.layers.conv2.weight"])
    assert torch.equal(target.class_layers.out.weight, head)  # the classification layer stays random
    grey_native = Classifier(ClassifierConfig(seed=2), 1, FINDING_NAMES).net  # 1 input channel: conv0 does not fit
    with pytest.raises(ValueError, match="another shape"):
        load_pretrained(grey_native, tmp_path / "densenet121.pt")


# ---- utility on two tiny settings -------------------------------------------------------------------


def test_evaluate_utility_writes_all_numbers_and_reuses_the_real_classifier(tmp_path):
    real, synthetic = finding_setting(tmp_path, "real", seed=4), finding_setting(tmp_path, "synthetic", seed=5)
    config = ClassifierConfig(max_epochs=1, **FAST_CLASSIFIER)
    out = tmp_path / "utility"
    result = evaluate_utility(real, synthetic, config, out, log=lambda m: None, progress=False)
    saved = json.loads((out / "utility.json").read_text())
    assert set(saved) == {
        "real_setting", "synthetic_setting", "real_setting_identity", "synthetic_setting_identity", "label_names",
        "test_images", "auc_real", "auc_syn", "auc_syn_on_syn", "auc_real_on_syn", "auc_real_minus_auc_syn",
        "delta_syn", "auc_real_release_flip", "auc_syn_release_flip", "auc_real_minus_auc_syn_release_flip", "config",
        "real_classifier", "synthetic_classifier", "images_per_row"}
    assert saved["images_per_row"] == 1  # the real rows once, as the paper compares
    assert saved["test_images"] == 20 and saved["label_names"] == FINDING_NAMES and saved["config"] == config.to_dict()
    assert set(saved["auc_real"]["per_label"]) == set(FINDING_NAMES)
    assert set(saved["auc_real_on_syn"]["per_label"]) == set(FINDING_NAMES)  # real classifier on synthetic test images
    assert saved["auc_real_minus_auc_syn"] == pytest.approx(saved["auc_real"]["mean"] - saved["auc_syn"]["mean"])
    assert saved["delta_syn"] == pytest.approx(saved["auc_syn_on_syn"]["mean"] - saved["auc_syn"]["mean"])
    for role in ("real", "syn"):  # beside the honest values, never instead of them
        honest, flip = saved[f"auc_{role}"], saved[f"auc_{role}_release_flip"]
        assert flip["per_label"] == {k: max(v, 1 - v) for k, v in honest["per_label"].items()}
        assert flip["flipped"] == [k for k, v in honest["per_label"].items() if v < 0.5]
    assert saved["auc_real_minus_auc_syn_release_flip"] == pytest.approx(
        saved["auc_real_release_flip"]["mean"] - saved["auc_syn_release_flip"]["mean"])
    assert saved["real_classifier"]["reused"] is False and len(saved["synthetic_classifier"]["history"]["epochs"]) == 1
    assert (out / "real_classifier.pt").is_file() and (out / "synthetic_classifier.pt").is_file()

    logs: list[str] = []
    again = evaluate_utility(real, synthetic, config, out, log=logs.append, progress=False)
    assert again["real_classifier"]["reused"] is True and any("reusing" in m for m in logs)
    assert again["auc_real"] == result["auc_real"]


def test_a_real_classifier_trained_under_bf16_auto_is_reused_only_where_it_would_train_alike(tmp_path, monkeypatch):
    real = BenchmarkSetting(finding_setting(tmp_path, "real", seed=4))
    config, path = ClassifierConfig(max_epochs=1, bf16="auto", **FAST_CLASSIFIER), tmp_path / "real_classifier.pt"

    def on_a_cpu_where_bf16(fast: bool):
        monkeypatch.setattr(device_module, "bf16_is_fast", lambda device: fast)
        return real_classifier(real, config, path, log=lambda m: None, progress=False)

    _, first, _ = on_a_cpu_where_bf16(True)
    assert first["bf16"] is True
    assert on_a_cpu_where_bf16(True)[2] is True  # reused
    _, retrained, reused = on_a_cpu_where_bf16(False)
    assert reused is False and retrained["bf16"] is False


def test_the_real_classifier_alone_from_the_cli_is_the_one_evaluate_utility_trains(tmp_path, capsys):
    real, synthetic = finding_setting(tmp_path, "real", seed=4), finding_setting(tmp_path, "synthetic", seed=5)
    sets = ["max_epochs=1", "batch_size=16", "lr=0.001", "threads=1", "seed=1000"]
    assert run_cli(["evaluate", "real-classifier", "--real", str(real), "--out", str(tmp_path / "checker"),
                    "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "mean AUROC on the real test fold" in capsys.readouterr().out
    alone, _ = load_classifier(tmp_path / "checker" / "real_classifier.pt")
    config = ClassifierConfig(max_epochs=1, **FAST_CLASSIFIER, seed=1000)
    evaluate_utility(real, synthetic, config, tmp_path / "utility", log=lambda m: None, progress=False)
    paired, _ = load_classifier(tmp_path / "utility" / "real_classifier.pt")
    images = BenchmarkSetting(synthetic).images("test")  # the same seed and config: the same network
    np.testing.assert_array_equal(alone.predict(images), paired.predict(images))
