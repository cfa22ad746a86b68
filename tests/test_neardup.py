"""Near-duplicate pairs and groups against brute-force references; dHash behaviour on images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthmed.data import neardup
from synthmed.data.imaging import dhash
from synthmed.data.neardup import hamming_pairs, near_duplicate_groups

_POPCOUNT_BYTE = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def clustered_hashes(n: int, n_centres: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes around a few centres (0..4 bits flipped): many pairs near any threshold."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**64, size=n_centres, dtype=np.uint64)
    hashes = centres[rng.integers(0, n_centres, size=n)].copy()
    for i in range(n):
        for bit in rng.choice(64, size=int(rng.integers(0, 5)), replace=False):
            hashes[i] ^= np.uint64(1) << np.uint64(bit)
    return hashes


def python_pairs(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    """Plain Python, every pair."""
    values = [int(h) for h in hashes]
    return {
        (i, j)
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= threshold
    }


def table_pairs(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    """Every pair too, row by row, with a byte-table popcount (not np.bitwise_count)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = set()
    for i in range(len(hashes) - 1):
        rest = (hashes[i + 1 :] ^ hashes[i]).view(np.uint8).reshape(-1, 8)
        distance = _POPCOUNT_BYTE[rest].sum(axis=1, dtype=np.int64)
        pairs.update((i, i + 1 + int(k)) for k in np.nonzero(distance <= threshold)[0])
    return pairs


def as_set(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    pairs = list(zip(i.tolist(), j.tolist()))
    assert len(pairs) == len(set(pairs)), "no pair is reported twice"
    return set(pairs)


@pytest.mark.parametrize("threshold", [0, 3, 6])
def test_pairs_match_python_brute_force(threshold):
    hashes = clustered_hashes(400, 40, seed=threshold)
    expected = python_pairs(hashes, threshold)
    assert expected, "the clustered hashes must produce some pairs"
    assert as_set(*hamming_pairs(hashes, threshold)) == expected


def test_pairs_match_brute_force_across_block_boundaries(monkeypatch):
    blocks = sorted({neardup._BLOCK, 4096})  # the current block size and the original 4096
    hashes = clustered_hashes(5000, 600, seed=42)
    # planted: near copies of rows just before each block boundary after it, and within later blocks
    planted = [(17, 4999)]
    for block in blocks:
        planted += [(0, block), (block - 1, block + 1), (block + 5, block + 900)]
    for k, (i, j) in enumerate(planted):
        hashes[j] = hashes[i] ^ (np.uint64(1) << np.uint64(k)) if k % 2 else hashes[i]
    hashes[np.random.default_rng(1).integers(0, 5000, 3)] = hashes[4500]  # exact duplicates somewhere
    for threshold in (1, 3):
        expected = table_pairs(hashes, threshold)
        assert set(planted) <= expected
        for block in blocks:
            assert any(i < block <= j for i, j in expected) and any(block <= i for i, _ in expected)
            monkeypatch.setattr(neardup, "_BLOCK", block)
            got = as_set(*hamming_pairs(hashes, threshold))
            assert got == expected, (block, threshold, len(got - expected), len(expected - got))


def test_pairs_of_nothing_and_of_one():
    i, j = hamming_pairs(np.empty(0, dtype=np.uint64), 3)
    assert len(i) == len(j) == 0
    i, j = hamming_pairs(np.array([5], dtype=np.uint64), 3)
    assert len(i) == len(j) == 0
    assert len(near_duplicate_groups(np.empty(0, dtype=np.uint64))) == 0


def test_groups_are_transitive():
    a = np.uint64(0)
    b = a ^ np.uint64(0b111)  # 3 bits from a
    c = b ^ np.uint64(0b111000)  # 3 bits from b, 6 from a
    far = np.uint64(2**64 - 1)
    groups = near_duplicate_groups(np.array([a, far, c, b], dtype=np.uint64), threshold=3)
    assert groups[0] == groups[2] == groups[3] != groups[1]
    # without the link b the chain breaks
    groups = near_duplicate_groups(np.array([a, far, c], dtype=np.uint64), threshold=3)
    assert len(set(groups.tolist())) == 3


def test_groups_are_the_connected_components():
    hashes = clustered_hashes(600, 120, seed=9)
    parent = list(range(len(hashes)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in python_pairs(hashes, 3):
        parent[root(i)] = root(j)
    expected = [root(i) for i in range(len(hashes))]
    groups = near_duplicate_groups(hashes, 3)
    assert groups.min() == 0 and groups.max() == len(set(groups.tolist())) - 1
    # the same partition
    assert len(set(zip(expected, groups.tolist()))) == len(set(expected)) == len(set(groups.tolist()))


def smooth_image(seed: int, height: int = 120, width: int = 100) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(10, 246, size=(8, 9)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)


def test_dhash_ignores_brightness_scaling():
    image = smooth_image(0)
    code = dhash(image)
    assert 0 <= code < 2**64
    for factor in (0.25, 0.5, 2.0, 4.0):  # exact in floating point: the same hash
        assert dhash(image * factor) == code, factor
    for factor in (0.3, 0.7, 1.3):  # rounding may move a near-tie, but stays a near-duplicate
        assert (dhash(image * factor) ^ code).bit_count() <= 2, factor


def test_dhash_tells_different_images_apart():
    image = smooth_image(0)
    assert (dhash(smooth_image(1)) ^ dhash(image)).bit_count() >= 10
    assert (dhash(image[:, ::-1].copy()) ^ dhash(image)).bit_count() >= 10  # mirrored
    noisy = np.clip(image + np.random.default_rng(2).normal(0, 2, image.shape), 0, 255).astype(np.float32)
    assert (dhash(noisy) ^ dhash(image)).bit_count() <= neardup.DEFAULT_THRESHOLD
