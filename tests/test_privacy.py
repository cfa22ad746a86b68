"""Privacy metrics: exact neighbours, planted copies are found, copied sets fail."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from synthmed.evaluation.privacy import _GAP, nearest_neighbours, nn_grid, privacy_report


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Positive features, like pooled ReLU activations, so cosine distances are not trivially large.
    draw = lambda n: np.abs(rng.normal(size=(n, 32)))  # noqa: E731
    return draw(400), draw(200), draw(200)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_matches_sklearn_across_blocks_and_ties(metric: str) -> None:
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(50, 8))
    refs[30] = refs[3]  # exact duplicate: a tie for queries near row 3
    refs[41] = 2.5 * refs[7]  # same direction: a cosine tie only
    queries = np.concatenate([rng.normal(size=(20, 8)), refs[[3, 7, 30]] + 1e-9, np.zeros((1, 8))])
    if metric == "euclidean":
        queries = queries[:-1]  # the zero vector only matters for cosine
    want_d, _ = NearestNeighbors(n_neighbors=3, metric=metric, algorithm="brute").fit(refs).kneighbors(queries)
    # block=7 splits both queries and references over several tiles, not evenly.
    got_d, got_i = nearest_neighbours(queries, refs, metric=metric, k=3, block=7)
    # sklearn's euclidean uses the squared-norm expansion: ~1e-8 error at near-zero distance.
    np.testing.assert_allclose(got_d, want_d, atol=1e-10 if metric == "cosine" else 1e-7)
    assert np.all(np.diff(got_d, axis=1) >= 0)
    # Returned indices really have the returned distances (tied references are interchangeable).
    exact = np.sqrt(((queries[:, None] - refs[None]) ** 2).sum(-1)) if metric == "euclidean" else None
    if exact is not None:
        np.testing.assert_allclose(got_d, np.take_along_axis(exact, got_i, 1), rtol=1e-9, atol=1e-15)
    else:
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)  # noqa: E731
        cos = 1 - unit(queries) @ unit(refs).T
        np.testing.assert_allclose(got_d, np.take_along_axis(cos, got_i, 1), atol=1e-12)
    # Ties at k = 1 go to the lower index.
    _, first = nearest_neighbours(refs[[30]], refs, metric=metric, block=7)
    assert first[0, 0] == 3
    if metric == "cosine":
        assert nearest_neighbours(refs[[41]], refs, metric=metric, block=7)[1][0, 0] == 7


def test_planted_copies_are_found_and_clean_set_passes() -> None:
    train, holdout, fresh = _data()
    rng = np.random.default_rng(2)
    planted = rng.choice(len(fresh), 20, replace=False)
    sources = rng.choice(len(train), 20, replace=False)
    synthetic = fresh.copy()
    synthetic[planted[:10]] = train[sources[:10]]
    noisy = train[sources[10:]]
    synthetic[planted[10:]] = noisy + 1e-3 * np.abs(noisy).mean() * rng.normal(size=noisy.shape)

    report = privacy_report(train, holdout, synthetic)
    dcr, _ = nearest_neighbours(synthetic[planted], train)
    assert np.all(dcr[:, 0] < report["copy"]["threshold"])
    assert report["copy"]["rate"] >= 20 / len(synthetic)
    assert report["verdict"] == "fail" and report["copy"]["quantile"] == 0.01

    clean = privacy_report(train, holdout, fresh)
    assert clean["copy"]["rate"] <= 0.05
    assert clean["verdict"] != "fail", clean["reasons"]
    assert 0.35 < clean["mia"]["auc"] < 0.65
    assert 0.5 < clean["dcr"]["median_ratio"] < 2.0


def test_synthetic_set_of_training_copies_fails_membership_inference() -> None:
    train, holdout, _ = _data()
    report = privacy_report(train, holdout, train[::-1].copy())
    assert report["mia"]["auc"] > 0.99 and report["mia"]["n_per_side"] == 200
    assert report["verdict"] == "fail"
    assert report["dcr"]["synthetic"]["median"] < 1e-12
    assert report["thresholds"]["mia_auc_fail"] == 0.6
    assert privacy_report(train, holdout, train, seed=3)["mia"]["seed"] == 3


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
