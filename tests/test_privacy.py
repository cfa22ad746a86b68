"""The privacy audit: calibrated tests against their references, planted copies
found, copied sets fail, clean sets pass, options checked by name, the audit in words."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.neighbors import NearestNeighbors

from synthmed.errors import ConfigError, DataError
from synthmed.evaluation.privacy import (
    _GAP,
    DEFAULT_OPTIONS,
    PIXEL_BLUR,
    Groups,
    Sets,
    check_options,
    nearest_in_space,
    nn_grid,
    pixel_images,
    privacy_report,
)
from synthmed.evaluation.privacy_words import describe
from synthmed.evaluation.stats import auc_test, holm
from synthmed.metrics.knn import nearest_neighbours
from synthmed.metrics.registered import registered_nearest


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Positive features, like pooled ReLU activations, so cosine distances are not trivially large.
    draw = lambda n: np.abs(rng.normal(size=(n, 32)))  # noqa: E731
    return draw(400), draw(200), draw(200)


def _audit(train, holdout, synthetic, **kwargs) -> dict:
    """The audit with the same vectors standing for both spaces."""
    sets = Sets(train, holdout, synthetic)
    return privacy_report(sets, sets, **kwargs)


def test_planted_copies_fail_and_a_clean_set_passes() -> None:
    train, holdout, fresh = _data()
    rng = np.random.default_rng(2)
    planted = rng.choice(len(fresh), 20, replace=False)
    sources = rng.choice(len(train), 20, replace=False)
    synthetic = fresh.copy()
    synthetic[planted[:10]] = train[sources[:10]]
    noisy = train[sources[10:]]
    synthetic[planted[10:]] = noisy + 1e-3 * np.abs(noisy).mean() * rng.normal(size=noisy.shape)

    report = _audit(train, holdout, synthetic)
    copies = report["tests"]["copies/pixels"]
    dcr, _ = nearest_neighbours(synthetic[planted], train)
    assert np.all(dcr[:, 0] < copies["distance_threshold"]) and copies["count"] >= 20
    assert report["verdict"] == "fail" and report["decided_by"] == "copies/pixels"
    assert report["reason"].startswith("fail: copies in pixels: ")

    clean = _audit(train, holdout, fresh)
    assert clean["verdict"] == "pass", clean["reason"]
    assert not any(t["significant"] for t in clean["tests"].values() if t["in_verdict"])
    assert 0.5 < clean["dcr"]["features"]["median_ratio"] < 2.0


def test_membership_and_copy_tests_match_their_references() -> None:
    """The AUC is sklearn's on minus the distance to the closest synthetic image (sklearn's neighbours),
    its p-value scipy's Mann-Whitney U; the copy count, its exact p-value and interval recomputed by hand."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    train, holdout, synthetic = _data(4)
    synthetic[:40] = train[:40] + 0.05 * np.abs(train[:40]).mean() * np.random.default_rng(5).normal(size=(40, 32))
    report = _audit(train[:200], holdout, synthetic, seed=7)
    nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(synthetic)
    d = nn.kneighbors(np.concatenate([train[:200], holdout]))[0][:, 0]
    m = report["tests"]["membership"]
    assert m["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(200), np.zeros(200)], -d), abs=1e-9)
    assert m["p_value"] == pytest.approx(stats.mannwhitneyu(-d[:200], -d[200:], alternative="greater").pvalue)
    assert (m["n_members"], m["n_nonmembers"]) == (200, 200)

    to_train = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(train[:200])
    syn_d, hold_d = to_train.kneighbors(synthetic)[0][:, 0], to_train.kneighbors(holdout)[0][:, 0]
    c = report["tests"]["copies/features"]
    k = max(1, int(0.005 * 200))
    threshold = np.sort(hold_d)[k - 1]
    count = int((syn_d < threshold - 1e-9).sum())
    assert (c["k"], c["count"]) == (k, count) and c["distance_threshold"] == pytest.approx(threshold, abs=1e-9)
    assert c["p_value"] == pytest.approx(stats.hypergeom.sf(count - 1, 400, 200, count + k - 1))
    ci = stats.binomtest(count, 200).proportion_ci(0.95, method="exact")
    assert c["interval"] == pytest.approx([ci.low, ci.high]) and c["chance_rate"] == pytest.approx(k / 201)
    assert report["verdict"] == "fail"


def test_verdict_needs_significance_and_an_effect_and_holds_the_tests_together() -> None:
    train, holdout, _ = _data()
    copies = train[::-1].copy()  # every synthetic image a training image
    report = _audit(train, holdout, copies)
    tests = report["tests"]
    assert list(tests) == ["membership", "copies/features", "copies/pixels"]
    decisive = [tests["membership"], tests["copies/pixels"]]  # the features' copies stand beside the verdict
    assert [t["in_verdict"] for t in tests.values()] == [True, False, True]
    np.testing.assert_allclose([t["p_adjusted"] for t in decisive], holm([t["p_value"] for t in decisive]))
    assert tests["copies/features"]["p_adjusted"] is None and tests["copies/features"]["significant"] is None
    assert tests["membership"]["auc"] > 0.99 and tests["membership"]["n_members"] == 400
    assert all(t["significant"] and t["effect_reached"] for t in decisive)
    assert report["verdict"] == "fail" and report["dcr"]["features"]["synthetic"]["median"] < 1e-12
    # half of them copies, judged against thresholds they do not reach: significant, so "warn"
    half = np.concatenate([copies[:100], _data(9)[2][100:]])
    lenient = _audit(train, holdout, half, mia_auc_threshold=0.99, copy_excess_threshold=0.9)
    assert lenient["verdict"] == "warn" and lenient["reason"].startswith("warn: ")
    assert lenient["decided_by"] == min(("membership", "copies/pixels"),
                                        key=lambda k: lenient["tests"][k]["p_adjusted"])
    assert lenient["options"]["mia_auc_threshold"] == 0.99 and lenient["options"]["seed"] == 0


def test_no_leakage_passes_at_the_stated_level() -> None:
    """Independent training, holdout and synthetic sets: at most about alpha of the verdicts flag them."""
    rng = np.random.default_rng(11)
    verdicts = [privacy_report(Sets(*(np.abs(rng.normal(size=(60, 8))) for _ in range(3))),
                               Sets(*(rng.normal(size=(60, 8)) for _ in range(3))), seed=rep)["verdict"]
                for rep in range(150)]
    assert np.mean(np.array(verdicts) != "pass") <= 0.08, verdicts.count("pass")


def test_density_attack_sees_synthetic_mass_piled_on_members_and_splits_by_group() -> None:
    """Synthetic images scattered tightly around training images (no single one close enough to be a copy
    at this distance scale): the density ratio ranks members above non-members."""
    rng = np.random.default_rng(6)
    train, holdout = rng.normal(size=(150, 6)), rng.normal(size=(150, 6))
    synthetic = np.repeat(train, 3, axis=0) + 0.3 * rng.normal(size=(450, 6))
    patients = np.repeat(np.arange(50), 3)  # three images per patient
    groups = Groups(patients, patients)
    report = _audit(train, holdout, synthetic, groups=groups)
    d = report["density_attack"]
    assert d["auc"] > 0.7 and d["p_value"] < 1e-4 and d["in_verdict"] is False and d["k"] == 5
    assert d["n_reference"] + d["n_nonmembers"] == 50 and d["n_members"] == 50  # whole patients
    with pytest.raises(ValueError, match="groups.holdout has 3 entries for 150 images"):
        _audit(train, holdout, synthetic, groups=Groups(groups.train, groups.holdout[:3]))


def test_a_patient_with_many_images_counts_once() -> None:
    """Each holdout image three times over, as one patient's alike images: the evidence stays that of
    the single images (counting them apart would triple it and flag a set that leaks nothing)."""
    train, holdout, synthetic = _data(12)
    single = _audit(train, holdout, synthetic)
    triple = _audit(train, np.repeat(holdout, 3, axis=0), synthetic,
                            groups=Groups(np.arange(len(train)), np.repeat(np.arange(len(holdout)), 3)))
    for name in ("membership", "copies/features"):
        for key in ("auc", "count", "p_value", "n_nonmembers", "n_holdout"):
            assert single["tests"][name].get(key) == pytest.approx(triple["tests"][name].get(key)), (name, key)


def test_a_fold_too_small_for_the_audit_is_a_data_error_that_says_so() -> None:
    """Three holdout patients cannot be split into a member-reference and a test half: a user's tiny
    setting gets one line naming the counts, not a traceback."""
    train, holdout, synthetic = _data(3)
    with pytest.raises(DataError, match="too small for the privacy audit.*400 and 3"):
        _audit(train, holdout[:3], synthetic)


def test_membership_is_judged_in_pixels_where_the_classifier_has_no_pull() -> None:
    """A classifier trained on the members places them nearer to any real-looking image in its features
    (here: members lean towards the common direction). Membership by feature distance would take that
    for a leak; the audit measures membership in pixels, and the copy tests compare synthetic with
    unseen images, which the classifier treats alike."""
    rng = np.random.default_rng(13)
    features = Sets(np.abs(rng.normal(size=(300, 16))) + 0.5, *(np.abs(rng.normal(size=(300, 16))) for _ in range(2)))
    pixels = Sets(*(rng.normal(size=(300, 16)) for _ in range(3)))
    d = nearest_neighbours(np.concatenate([features.train, features.holdout]), features.synthetic)[0][:, 0]
    assert auc_test(-d[:300], -d[300:])["auc"] > 0.7  # what a feature-space attack would report
    report = privacy_report(features, pixels)
    assert report["tests"]["membership"]["space"] == "pixels" and report["verdict"] == "pass", report["reason"]


def test_pixel_images_average_blocks_and_the_distance_ignores_brightness_and_contrast() -> None:
    rng = np.random.default_rng(8)
    images = rng.integers(0, 200, (3, 1, 64, 64), dtype=np.uint8)
    pixels = pixel_images(images, side=32)
    blocks = images.astype(np.float32).reshape(3, 1, 32, 2, 32, 2).mean(axis=(3, 5)) / 255
    np.testing.assert_allclose(pixels, blocks, atol=1e-6)
    brighter = np.clip(images.astype(np.int32) * 1.2 + 10, 0, 255).astype(np.uint8)  # stays below 255: linear
    d, _ = nearest_in_space(pixel_images(brighter), pixels, DEFAULT_OPTIONS)
    assert d[0] < 1e-4  # 1 - Pearson correlation of an image with its brighter, stronger copy
    assert pixel_images(images[:, :, :16, :16]).shape == (3, 1, 16, 16)  # small images are kept as they are


def test_pixel_noise_does_not_hide_a_copy() -> None:
    """A training image plus pixel noise against another patient's image that differs from it only
    in smooth shapes (a near-identical slice): unsmoothed, the noise puts the copy further from its
    source than the other patient; with the audit's smoothing (PIXEL_BLUR) the copy is the closer one."""
    rng = np.random.default_rng(3)
    anatomy = ndimage.gaussian_filter(rng.normal(0, 1, (32, 32)), 2.0)
    source = 128 + 60 * anatomy / anatomy.std()
    shapes = ndimage.gaussian_filter(rng.normal(0, 1, (32, 32)), 2.0)
    neighbour = source + 5.5 * shapes / shapes.std()
    copy = source + rng.normal(0, 6, (32, 32))
    images = np.clip(np.round(np.stack([source, neighbour, copy]))[:, None], 0, 255).astype(np.uint8)

    pixels = pixel_images(images)
    unsmoothed = registered_nearest(pixels[1:], pixels[:1], max_shift=0.0, max_scale=1.0, blur=0.0)[0]
    assert unsmoothed[1] > unsmoothed[0]  # the noisy copy looks further away than the other patient
    smoothed = nearest_in_space(pixels[1:], pixels[:1], {"max_shift": 0.0, "max_scale": 1.0})[0]
    assert PIXEL_BLUR > 0 and smoothed[1] < smoothed[0] / 2


@pytest.mark.parametrize("options, message", [
    ({"alpha": 0.0}, "alpha = 0.0 must be a number in (0, 0.5]"),
    ({"copy_quantile": 1.5}, "copy_quantile = 1.5 must be a number in (0, 1)"),
    ({"mia_auc_threshold": 0.4}, "mia_auc_threshold = 0.4 must be a number in [0.5, 1]"),
    ({"copy_excess_threshold": "x"}, "copy_excess_threshold = 'x' must be a finite number"),
    ({"seed": 1.5}, "seed = 1.5 must be a whole number"),
    ({"max_shift": 0.3}, "max_shift = 0.3 must be a number in [0, 0.25]: the largest shift tried in pixels"),
    ({"max_scale": 0.9}, "max_scale = 0.9 must be a number in [1, 1.5]: the largest zoom tried in pixels"),
    ({"copy_rate": 0.1}, "privacy: unknown key(s) ['copy_rate']"),
])
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options(options)


def test_the_audit_in_words_states_tests_intervals_and_limits() -> None:
    train, holdout, fresh = _data()
    lines = describe(_audit(train, holdout, fresh))
    assert lines[0].startswith("Verdict: pass: no test is significant at the 0.05 false-alarm level")
    assert "Membership inference" in lines[1] and "95 % CI" in lines[1]
    assert lines[2].startswith("Copies in the real classifier's features") and lines[3].startswith("Copies in pixels")
    assert "beside the verdict, not part of it" in lines[4] and "not a proof of privacy" in lines[5]


@pytest.mark.parametrize("channels", [1, 3])
def test_nn_grid_writes_png_of_the_right_size(tmp_path, channels: int) -> None:
    rng = np.random.default_rng(3)
    synthetic = rng.integers(0, 256, (10, channels, 12, 16), dtype=np.uint8)
    real = rng.integers(0, 256, (30, channels, 12, 16), dtype=np.uint8)
    indices = rng.integers(0, 30, (10, 1))
    path = tmp_path / "figs" / "nn.png"
    nn_grid(synthetic, real, indices, path, n=4)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (4 * 16 + 3 * _GAP, 2 * 12 + _GAP)
        pixels = np.asarray(image)
    top_left = pixels[:12, :16] if channels == 1 else np.moveaxis(pixels[:12, :16], -1, 0)
    bottom_left = pixels[12 + _GAP :, :16] if channels == 1 else np.moveaxis(pixels[12 + _GAP :, :16], -1, 0)
    assert np.array_equal(top_left.reshape(synthetic[0].shape), synthetic[0])
    assert np.array_equal(bottom_left.reshape(real[0].shape), real[indices[0, 0]])
    assert [p.name for p in path.parent.iterdir()] == ["nn.png"]  # no temporary left behind


def test_the_command_line_states_the_default_options() -> None:
    import typing

    from synthmed.cli import evaluate_privacy_command

    hints = typing.get_type_hints(evaluate_privacy_command, include_extras=True)
    for name, value in DEFAULT_OPTIONS.items():
        assert f"(default {value:g})" in hints[name].__metadata__[0].help, name


def test_images_gathered_near_one_training_image_in_features_only_do_not_decide() -> None:
    """Unlike any real image, a third of the synthetic set lands near one training image in the
    classifier's features (a hub, as noisy GAN images did on the phantom classes axis) while no image is
    near a training image in pixels: the feature-space copy test sees it and says so beside the verdict,
    which passes."""
    train, holdout, fresh = _data(5)
    rng = np.random.default_rng(6)
    hub = fresh.copy()
    hub[::3] = train[0] + 0.01 * np.abs(train[0]).mean() * rng.normal(size=hub[::3].shape)
    pixels = Sets(*(rng.normal(size=(len(x), 16)) for x in (train, holdout, fresh)))
    report = privacy_report(Sets(train, holdout, hub), pixels)
    features = report["tests"]["copies/features"]
    assert features["count"] >= len(hub[::3]) and features["p_value"] < 1e-6 and not features["in_verdict"]
    assert report["verdict"] == "pass" and report["decided_by"] != "copies/features", report["reason"]
    assert "Beside the verdict, not part of it" in describe(report)[2]
