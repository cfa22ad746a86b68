"""Occlusion attribution maps (paper S.7): the windowed, batched maps against plain one-mask passes,
the similarity scores against scipy and torchmetrics, and `evaluate importance` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from PIL import Image
from scipy.stats import pearsonr
from torch import nn
from torchmetrics.image import StructuralSimilarityIndexMeasure

from helpers import FINDING_NAMES, finding_setting, one_setting, phantom_store
from synthmed.cli import main
from synthmed.data.imaging import mask_pyramid, unpack_masks
from synthmed.data.settings import BenchmarkSetting
from synthmed.errors import ConfigError, DataError
from synthmed.evaluation.classifier import Classifier, ClassifierConfig
from synthmed.evaluation.importance import (
    classifier_maps,
    in_mask_share,
    lesion_scores,
    lesion_union,
    map_similarity,
    mask_area_share,
    mask_positions,
    masked_losses,
    occlusion_map,
    pearson,
    pointing_hit,
    resize_mask,
    spread_sample,
    ssim,
)
from synthmed.evaluation.suite import evaluate_importance_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def naive_map(net: nn.Module, image: torch.Tensor, target: torch.Tensor, patch: int, stride: int) -> np.ndarray:
    """The definition, one masked copy per forward pass: zero, loss increase floored, mean per pixel, max-normalised."""
    loss = nn.BCEWithLogitsLoss(reduction="sum")
    total, count = np.zeros(image.shape[-2:]), np.zeros(image.shape[-2:])
    with torch.no_grad():
        base = loss(net(image[None]), target[None]).item()
        for r in mask_positions(image.shape[-2], patch, stride):
            for c in mask_positions(image.shape[-1], patch, stride):
                masked = image.clone()
                masked[:, r:r + patch, c:c + patch] = 0
                total[r:r + patch, c:c + patch] += max(loss(net(masked[None]), target[None]).item() - base, 0.0)
                count[r:r + patch, c:c + patch] += 1
    spread = total / np.maximum(count, 1)
    return spread / spread.max() if spread.max() > 0 else spread


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(0)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()


@pytest.mark.parametrize("size, patch, stride", [(40, 6, 4), (64, 8, 8)])
def test_windowed_batched_map_equals_one_mask_at_a_time(densenet, size, patch, stride):
    """40 px with overlapping patches and a last patch flush with the edge; 64 px keeps windows through block 1."""
    torch.manual_seed(size)
    image, target = torch.randn(1, size, size), torch.tensor([1.0, 0.0])
    expected = naive_map(densenet, image, target, patch, stride)
    for channels_last in (True, False):
        got = occlusion_map(densenet, image[None], target[None], patch, stride, batch_size=7,
                            channels_last=channels_last)[0]
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert got.shape == (size, size) and got.max() == pytest.approx(1.0)
    assert densenet.features.conv0.weight.is_contiguous()  # the caller's network keeps its layout


def test_masked_losses_match_plain_forward_passes(densenet):
    torch.manual_seed(1)
    image, target = torch.randn(1, 48, 48), torch.tensor([0.0, 1.0])
    losses, base = masked_losses(densenet, image, target, patch=4, stride=4, batch_size=32)
    loss = nn.BCEWithLogitsLoss(reduction="sum")
    with torch.no_grad():
        assert base == pytest.approx(loss(densenet(image[None]), target[None]).item(), rel=1e-6)
        for r, c in [(0, 0), (5, 11), (11, 11), (6, 0)]:
            masked = image.clone()
            masked[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0
            assert losses[r, c] == pytest.approx(loss(densenet(masked[None]), target[None]).item(), rel=1e-5)


class OnePixel(nn.Module):
    """A logit that reads one pixel only (its own forward: the masked copies run in full)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x[:, :1, 5, 7]


def one_pixel_sequential(size: int) -> nn.Module:
    """The same, as layers the windowed forward knows: an identity 3x3 conv, ReLU, a one-hot linear layer."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    linear = nn.Linear(size * size, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()[0, 0, 1, 1] = 1
        linear.weight.zero_()[0, 5 * size + 7] = 4
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear).eval()


@pytest.mark.parametrize("net", [OnePixel().eval(), one_pixel_sequential(12)], ids=["module", "sequential"])
def test_a_network_that_reads_one_pixel_gets_a_map_peaked_there(net):
    image, target = torch.full((1, 1, 12, 12), 0.5), torch.ones(1, 1)
    single = occlusion_map(net, image, target, patch=1, stride=1)[0]
    expected = np.zeros((12, 12), np.float32)
    expected[5, 7] = 1
    np.testing.assert_array_equal(single, expected)
    overlapping = occlusion_map(net, image, target, patch=2, stride=1)[0]
    assert np.unravel_index(overlapping.argmax(), overlapping.shape) == (5, 7) and overlapping.max() == 1
    assert overlapping[4, 6] == pytest.approx(0.25)  # one of its four patches covers the pixel
    assert occlusion_map(net, image, 1 - target, patch=1, stride=1)[0].max() == 0  # masking only helps: all zero


def test_pearson_matches_scipy_and_is_undefined_for_a_constant_map():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    b = 0.5 * a + 0.5 * rng.random((32, 32))
    assert pearson(a, b) == pytest.approx(pearsonr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert pearson(a, np.zeros((32, 32))) is None and map_similarity(np.ones((32, 32)), a)["pearson"] is None


def test_ssim_matches_torchmetrics():
    """Same window, sigma, constants and range. torchmetrics also averages the border windows of a reflect-padded
    map; MONAI (ours) only the windows inside the map, which are the inner part of torchmetrics' full SSIM image."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:40, :40]
    smooth = np.exp(-((y - 18) ** 2 + (x - 22) ** 2) / 60.0)
    reference = StructuralSimilarityIndexMeasure(gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
                                                 k1=0.01, k2=0.03, return_full_image=True)
    for a, b in [(smooth, np.clip(smooth + 0.1 * rng.random((40, 40)), 0, 1)), (rng.random((40, 40)), smooth),
                 (smooth, np.zeros((40, 40)))]:
        _, full = reference(*(torch.tensor(m[None, None], dtype=torch.float32) for m in (a, b)))
        assert ssim(a, b) == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), abs=1e-5)
    assert ssim(smooth, smooth) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        map_similarity(smooth, smooth[:32])


def test_spread_sample_takes_each_label_combination_in_turn():
    labels = np.array([[1, 0]] * 6 + [[0, 1]] * 3 + [[1, 1]] * 1)
    rows = spread_sample(labels, 5, seed=3)
    assert len(set(rows)) == 5
    assert sorted(map(tuple, labels[rows[:3]])) == [(0, 1), (1, 0), (1, 1)]  # one of each before any repeats
    np.testing.assert_array_equal(rows, spread_sample(labels, 5, seed=3))
    assert len(spread_sample(labels, 50)) == 10


# ---- scores against lesion masks ----------------------------------------------------------------

PEAKED = np.array([[0.0, 0.5, 0.0, 0.0],
                   [0.0, 1.0, 0.0, 0.0],
                   [0.0, 0.0, 0.0, 0.5],
                   [0.0, 0.0, 0.0, 0.0]])  # mass 2, its peak at (1, 1)


def corner(rows: slice, cols: slice, size: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[rows, cols] = True
    return mask


def test_in_mask_share_and_pointing_game_by_hand():
    top_left, right = corner(slice(0, 2), slice(0, 2)), corner(slice(2, 4), slice(2, 4))
    assert in_mask_share(PEAKED, top_left) == pytest.approx(1.5 / 2)
    assert in_mask_share(PEAKED, right) == pytest.approx(0.5 / 2)
    with_negative = PEAKED.copy()
    with_negative[3, 0] = -3  # negative attribution is no mass: floored at 0
    assert in_mask_share(with_negative, top_left) == pytest.approx(0.75)
    assert pointing_hit(PEAKED, top_left) is True and pointing_hit(PEAKED, right) is False
    assert mask_area_share(top_left) == 0.25 and mask_area_share(corner(slice(0, 1), slice(0, 3))) == 3 / 16
    # a uniform map scores the mask's area share
    assert in_mask_share(np.ones((4, 4)), corner(slice(0, 1), slice(0, 3))) == pytest.approx(3 / 16)


def test_pointing_game_ties_and_tolerance():
    tied = np.zeros((4, 4))
    tied[0, 0] = tied[3, 3] = 1.0
    assert pointing_hit(tied, corner(slice(3, 4), slice(3, 4))) is True  # any tied maximum inside: the peak patch
    assert pointing_hit(tied, corner(slice(0, 1), slice(2, 4))) is False
    far = np.zeros((6, 6))
    far[5, 5] = 1.0
    mask = corner(slice(5, 6), slice(2, 3), size=6)  # 3 px left of the peak
    assert pointing_hit(far, mask) is False
    assert pointing_hit(far, mask, tolerance=3) is False  # TorchRay's disc: distance < tolerance
    assert pointing_hit(far, mask, tolerance=4) is True
    with pytest.raises(ConfigError, match="tolerance = -1"):
        pointing_hit(far, mask, tolerance=-1)


def test_scores_are_undefined_without_a_lesion_or_without_mass():
    empty, mask = np.zeros((4, 4), bool), corner(slice(0, 2), slice(0, 2))
    assert in_mask_share(PEAKED, empty) is None and pointing_hit(PEAKED, empty) is None
    assert mask_area_share(empty) is None
    assert in_mask_share(np.zeros((4, 4)), mask) is None and pointing_hit(np.zeros((4, 4)), mask) is None
    assert pointing_hit(np.full((4, 4), 0.3), mask) is None  # a constant map points nowhere
    with pytest.raises(ValueError, match="one"):
        in_mask_share(PEAKED, np.zeros((3, 3), bool))


def test_resize_mask_keeps_every_pixel_a_lesion_touches():
    rng = np.random.default_rng(5)
    fine = rng.random((256, 256)) > 0.995
    # the store's own rule: nearest to 256 px, then max pooling down
    [pooled] = unpack_masks(mask_pyramid(fine[None], [32])[32], 1)
    np.testing.assert_array_equal(resize_mask(fine, (32, 32)), pooled)
    small = rng.random((8, 8)) > 0.7
    np.testing.assert_array_equal(resize_mask(small, (56, 56)), np.kron(small, np.ones((7, 7), bool)))  # 7x: nearest
    # 2 -> 3 px: the middle output pixel overlaps both input pixels
    np.testing.assert_array_equal(resize_mask(np.array([[True, False], [False, False]]), (3, 3)),
                                  [[True, True, False], [True, True, False], [False, False, False]])


def test_lesion_scores_per_image_and_per_label_by_hand():
    names = ["No Finding", "A", "B"]
    a, b = corner(slice(0, 2), slice(0, 2)), corner(slice(2, 4), slice(2, 4))
    masks = np.stack([np.stack([np.zeros((4, 4), bool), a, b]), np.zeros((3, 4, 4), bool)])
    labels = np.array([[0, 1, 1], [1, 0, 0]])  # the second image shows no finding
    maps = {"real": [PEAKED, PEAKED], "synthetic": [np.ones((4, 4)), PEAKED]}
    per_image, summaries = lesion_scores(maps, masks, labels, names)
    first, second = per_image
    assert first["area_share"] == 0.5 and first["real"] == {"in_mask_share": pytest.approx(2 / 2), "pointing_hit": True}
    assert first["synthetic"] == {"in_mask_share": pytest.approx(0.5), "pointing_hit": None}  # constant map
    assert set(first["by_label"]) == {"A", "B"}
    assert first["by_label"]["B"]["real"] == {"in_mask_share": pytest.approx(0.25), "pointing_hit": False}
    assert second["area_share"] is None and second["real"] == {"in_mask_share": None, "pointing_hit": None}
    assert second["by_label"]["No Finding"]["area_share"] is None
    images = summaries["images"]
    assert images["n_images"] == 2 and images["area_share"]["n_defined"] == 1  # undefined, not 0
    assert images["real"]["in_mask_share"]["mean"] == pytest.approx(1.0)
    assert images["real"]["pointing"] == {"rate": 1.0, "hits": 1, "n_defined": 1}
    assert images["synthetic"]["pointing"] == {"rate": None, "hits": 0, "n_defined": 0}
    assert summaries["by_label"]["B"]["real"]["pointing"] == {"rate": 0.0, "hits": 0, "n_defined": 1}
    assert summaries["by_label"]["No Finding"]["n_images"] == 1
    assert summaries["by_label"]["No Finding"]["area_share"]["n_defined"] == 0
    np.testing.assert_array_equal(lesion_union(masks, labels), [a | b, np.zeros((4, 4), bool)])


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory):
    """The tiny 32 px setting and two saved classifiers (random weights: only the plumbing is tested)."""
    root = tmp_path_factory.mktemp("importance")
    setting = finding_setting(root, "real", seed=4)
    for name, seed in (("real", 1), ("synthetic", 2)):
        Classifier(ClassifierConfig(seed=seed), 1, FINDING_NAMES).save(root / f"{name}_classifier.pt")
    return setting, root / "real_classifier.pt", root / "synthetic_classifier.pt"


def test_evaluate_importance_run_writes_json_and_figure(run_inputs, tmp_path):
    setting, real, synthetic = run_inputs
    result = evaluate_importance_run(setting, real, synthetic, tmp_path, n_images=3, patch=4, stride=4,
                                     log=lambda m: None)
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["map_size"] == [32, 32] and saved["input_size"] is None and (saved["patch"], saved["stride"]) == (4, 4)
    assert len(saved["images"]) == 3 and len({tuple(row["labels"]) for row in saved["images"]}) == 3
    for row in saved["images"]:
        assert 0 <= row["test_row"] < 20 and set(row["labels"]) <= set(FINDING_NAMES)
        assert -1 <= row["ssim"] <= 1 and (row["pearson"] is None or -1 <= row["pearson"] <= 1)
    assert set(saved["ssim"]) == {"mean", "std", "ddof", "n_defined"} and saved["ssim"]["n_defined"] == 3
    assert Image.open(tmp_path / "importance.png").format == "PNG"
    assert "lesion_masks" not in saved and "lesion_masks" not in saved["images"][0]  # a store without masks: as before


def test_importance_on_phantoms_scores_the_maps_against_their_lesions(tmp_path):
    """A 40-phantom store (lesion masks), its one 32 px setting (label columns without a positive dropped)."""
    store = phantom_store(tmp_path / "store", n=40, seed=2)
    setting = BenchmarkSetting(one_setting(store, tmp_path / "settings", 32))
    for name, seed in (("real", 1), ("synthetic", 2)):
        Classifier(ClassifierConfig(seed=seed), 1, setting.label_names).save(tmp_path / f"{name}.pt")
    result = evaluate_importance_run(setting.path, tmp_path / "real.pt", tmp_path / "synthetic.pt", tmp_path / "out",
                                     n_images=4, patch=8, stride=8, log=lambda m: None)
    saved = json.loads((tmp_path / "out" / "importance.json").read_text())
    assert saved == json.loads(json.dumps(result))
    lesions = saved["lesion_masks"]
    assert lesions["mask_resolution"] == 32 and lesions["pointing_tolerance_px"] == 0
    assert set(lesions["by_label"]) == set(setting.label_names)
    test_rows, columns = setting.rows("test"), setting.meta["label_columns"]
    with_lesion = 0
    for image in saved["images"]:
        store_row = test_rows[image["test_row"]]
        masks = store.masks(32, store_row)[columns][setting.labels("test")[image["test_row"]].astype(bool)]
        union = masks.any(0)
        scored = image["lesion_masks"]
        assert scored["area_share"] == (pytest.approx(union.mean()) if union.any() else None)
        assert set(scored["by_label"]) == set(image["labels"])
        for role in ("real", "synthetic"):
            defined = scored[role]["in_mask_share"] is not None
            assert defined == bool(union.any()) and (scored[role]["pointing_hit"] is not None) <= defined
            assert not defined or 0 <= scored[role]["in_mask_share"] <= 1
        with_lesion += bool(union.any())
    assert lesions["images"]["n_images"] == 4 and lesions["images"]["area_share"]["n_defined"] == with_lesion
    assert with_lesion >= 1
    assert Image.open(tmp_path / "out" / "importance.png").format == "PNG"


def test_maps_come_at_the_classifier_input_size_and_sizes_must_agree(run_inputs, tmp_path):
    setting, real, _ = run_inputs
    resized = Classifier(ClassifierConfig(input_size=48, seed=3), 1, FINDING_NAMES)
    images = np.random.default_rng(0).integers(0, 255, (2, 1, 32, 32), dtype=np.uint8)
    maps = classifier_maps(resized, images, np.array([[1, 0], [0, 1]], np.uint8), patch=8, stride=8)
    assert maps.shape == (2, 48, 48) and maps.max() <= 1
    resized.save(tmp_path / "resized.pt")
    with pytest.raises(DataError, match="resized.pt: sees inputs of size 48, the real classifier None"):
        evaluate_importance_run(setting, real, tmp_path / "resized.pt", tmp_path, log=lambda m: None)


def test_cli_evaluate_importance(run_inputs, tmp_path, capsys):
    setting, real, synthetic = run_inputs
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "importance", "--real", str(setting), "--real-classifier", str(real),
              "--synthetic-classifier", str(synthetic), "--out", str(out), "--images", "2", "--patch", "8",
              "--stride", "8"])
    assert not exit_.value.code
    saved = json.loads((out / "importance.json").read_text())
    assert len(saved["images"]) == 2 and saved["patch"] == 8 and (out / "importance.png").is_file()
    assert "SSIM" in capsys.readouterr().out
