"""The exact nearest-neighbour engine: neighbours against scikit-learn, k-NN radii and ball counts
against brute force, exact where the tiles' expansion is not (ties, duplicates, large norms)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from synthmed.metrics.knn import balls_holding, knn_radii, nearest_neighbours
from synthmed.metrics.registered import registered_nearest, registrations


def brute_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


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


def brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = brute_distances(x, x)
    np.fill_diagonal(d, np.inf)  # the row itself, by index: a duplicate row still counts at distance 0
    return np.sort(d, axis=1)[:, k - 1]


def tricky_rows(seed: int, n: int = 40) -> np.ndarray:
    """Duplicated rows (exactly equal distances, a k-th neighbour at distance 0) far from the origin,
    where the expansion ||p||^2 - 2 p.c + ||c||^2 rounds by far more than the gaps between distances."""
    x = np.random.default_rng(seed).normal(size=(n, 16)) + 100.0
    return np.concatenate([x, x[: n // 4]])


@pytest.mark.parametrize("block", [7, 4096])
def test_knn_radii_equal_brute_force_exactly(block: int) -> None:
    x = tricky_rows(2)
    for k in (1, 3, 5):
        np.testing.assert_array_equal(knn_radii(x, k, block=block), brute_radii(x, k))
    assert (brute_radii(x, 1) == 0).sum() == 20  # each duplicated row is its copy's nearest neighbour
    with pytest.raises(ValueError, match=r"k must be in \[1, 49\]"):
        knn_radii(x, 50)


@pytest.mark.parametrize("block", [7, 4096])
def test_balls_holding_equals_brute_force_exactly_on_ties(block: int) -> None:
    centres = tricky_rows(3)
    points = np.concatenate([centres[5:25], tricky_rows(4)[:13]])  # copies of centres sit on their neighbours' edges
    radii = knn_radii(centres, 3, block=block)
    inside = brute_distances(points, centres) <= radii[None, :]
    # points exactly on a ball's edge: the test would mean nothing without them
    assert (brute_distances(points, centres) == radii[None, :]).sum() > 20
    per_point, per_centre = balls_holding(points, centres, radii, block=block)
    np.testing.assert_array_equal(per_point, inside.sum(axis=1))
    np.testing.assert_array_equal(per_centre, inside.sum(axis=0))


def test_balls_holding_refuses_a_radius_per_wrong_thing() -> None:
    with pytest.raises(ValueError, match="expected 5 radii"):
        balls_holding(np.zeros((3, 2)), np.zeros((5, 2)), np.zeros(3))


def test_balls_holding_decides_a_tile_of_duplicates_a_block_of_pairs_at_a_time() -> None:
    # every pair sits on the edge of a radius-0 ball, so every pair is recomputed, more pairs than a block
    same = np.ones((12, 3))
    per_point, per_centre = balls_holding(same, same, knn_radii(same, 2, block=5), block=5)
    assert per_point.tolist() == [12] * 12 and per_centre.tolist() == [12] * 12


# ---- registered pixel distances (metrics.registered) ----------------------------------------------------


def _smooth(rng: np.random.Generator, n: int, side: int, channels: int = 1) -> np.ndarray:
    """Images of smooth random blobs, like coarse anatomy: noise averaged over 3x3 windows."""
    from scipy.ndimage import uniform_filter

    noise = rng.normal(size=(n, channels, side + 4, side + 4))
    return uniform_filter(noise, size=(1, 1, 3, 3))[:, :, 2:-2, 2:-2].astype(np.float32)


def brute_registered(queries: np.ndarray, references: np.ndarray, max_shift: float,
                     max_scale: float, blur: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The registered distance written out pair by pair: for each zoom and shift, the magnified image
    sampled bilinearly (scipy's map_coordinates) at the other's pixel centres, both cut to the pixels
    that fall on its content and smoothed there (scipy's gaussian_filter, ``blur`` > 0), 1 - Pearson r."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    def smoothed(channel: np.ndarray) -> np.ndarray:
        return (gaussian_filter(channel, blur, mode="nearest") if blur > 0 else channel).ravel()

    side = queries.shape[-1]
    t, c = round(max_shift * side), (side - 1) / 2
    zooms = [1.0] + ([1 / max_scale, max_scale] if max_scale > 1 else [])
    d = np.full((len(queries), len(references)), np.inf)
    for a, q in enumerate(queries.astype(np.float64)):
        for b, r in enumerate(references.astype(np.float64)):
            for zoom in zooms:
                moving, fixed, z = (r, q, zoom) if zoom >= 1 else (q, r, 1 / zoom)
                for dy in range(-t, t + 1):
                    for dx in range(-t, t + 1):
                        u = (np.arange(side) - c) / z + c
                        ys, xs = u + dy, u + dx
                        rows = np.flatnonzero((ys >= -1e-9) & (ys <= side - 1 + 1e-9))
                        cols = np.flatnonzero((xs >= -1e-9) & (xs <= side - 1 + 1e-9))
                        yy, xx = np.meshgrid(ys[rows], xs[cols], indexing="ij")
                        sampled = [smoothed(map_coordinates(ch, [yy.ravel(), xx.ravel()], order=1).reshape(yy.shape))
                                   for ch in moving]
                        kept = [smoothed(ch[np.ix_(rows, cols)]) for ch in fixed]
                        r_ = np.corrcoef(np.concatenate(sampled), np.concatenate(kept))[0, 1]
                        d[a, b] = min(d[a, b], 1 - r_)
    return d.min(axis=1), d.argmin(axis=1)


def test_registered_distance_matches_a_brute_force_loop() -> None:
    rng = np.random.default_rng(0)
    queries, references = _smooth(rng, 4, 10, channels=2), _smooth(rng, 5, 10, channels=2)
    got_d, got_i = registered_nearest(queries, references, max_shift=0.2, max_scale=1.25)
    want_d, want_i = brute_registered(queries, references, max_shift=0.2, max_scale=1.25)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)
    np.testing.assert_array_equal(got_i, want_i)
    got_d, got_i = registered_nearest(queries, references, max_shift=0.2, max_scale=1.25, blur=0.7)
    want_d, want_i = brute_registered(queries, references, max_shift=0.2, max_scale=1.25, blur=0.7)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)
    np.testing.assert_array_equal(got_i, want_i)
    assert len(registrations((10, 10), 0.2, 1.25)) == 3 * 25 and registrations((10, 10), 0.2, 1.25)[0] == ((1.0, (0, 0)))


def test_the_registered_search_with_a_progress_bar_counts_every_registration_and_finds_the_same(capsys) -> None:
    rng = np.random.default_rng(0)
    queries, references = _smooth(rng, 4, 10), _smooth(rng, 5, 10)
    quiet = registered_nearest(queries, references, max_shift=0.2, max_scale=1.25)
    assert capsys.readouterr().out == ""
    shown = registered_nearest(queries, references, max_shift=0.2, max_scale=1.25, progress=True)
    for got, want in zip(shown, quiet):
        np.testing.assert_array_equal(got, want)
    bar = capsys.readouterr().out
    assert "pixel search, 4 against 5 images" in bar and "75/75" in bar, bar


def test_a_shifted_or_cropped_and_resized_copy_is_close_and_an_unrelated_image_is_not() -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    images = _smooth(rng, 6, 16)
    source = images[0, 0]
    shifted = np.pad(source, 2, mode="edge")[4:20, 0:16]  # 2 px down and 2 px right, borders repeated
    cropped = np.asarray(Image.fromarray(source[1:15, 1:15], mode="F").resize((16, 16), Image.BILINEAR))
    copies = np.stack([shifted, cropped])[:, None]
    d, i = registered_nearest(copies, images, max_shift=0.2, max_scale=16 / 14)
    assert np.all(i == 0) and d[0] < 1e-9 and d[1] < 1e-3, d  # Pillow treats the outermost pixels its own way
    smoothed, _ = registered_nearest(copies, images, max_shift=0.2, max_scale=16 / 14, blur=0.7)
    assert smoothed[0] < 1e-9 and smoothed[1] < 1e-3, smoothed  # smoothed on the overlap: the shift stays exact
    plain, _ = registered_nearest(copies, images, max_shift=0.0, max_scale=1.0)  # pixel by pixel only
    assert np.all(plain > 0.05), plain
    unrelated, _ = registered_nearest(images[1:], images[:1], max_shift=0.2, max_scale=16 / 14)
    assert np.all(unrelated > 100 * d.max()) and np.all(unrelated > 0.05), unrelated
    with pytest.raises(ValueError, match="one shape"):
        registered_nearest(images, images[:, :, :8, :8], 0.1, 1.0)
