"""The MedMNIST source on small .npz files in MedMNIST's own layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from synthmed.data.sources import load_source
from synthmed.data.sources.medmnist import CHESTMNIST_LABELS, load
from synthmed.data.store import prepare
from synthmed.errors import DataError

SIZES = {"train": 6, "val": 3, "test": 3}


def arrays(seed: int = 0, classes: int | None = None, rgb: bool = False, side: int = 8) -> dict[str, np.ndarray]:
    """MedMNIST-style arrays: multi-label ChestMNIST (14 columns) or N x 1 class ids."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SIZES.items():
        shape = (n, side, side, 3) if rgb else (n, side, side)
        out[f"{split}_images"] = rng.integers(10, 255, shape, dtype=np.uint8)
        if classes is None:
            out[f"{split}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
        else:
            out[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % classes)[:, None]
    return out


def write(path: Path, data: dict[str, np.ndarray]) -> Path:
    np.savez_compressed(path, **data)
    return path


def test_chestmnist_multi_label(tmp_path: Path) -> None:
    data = arrays()
    source = load(write(tmp_path / "chestmnist.npz", data))
    assert source.label_names == CHESTMNIST_LABELS
    assert len(source.records) == sum(SIZES.values())
    assert [r.split for r in source.records] == [s for s, n in SIZES.items() for _ in range(n)]
    record = source.records[7]  # val:1
    assert (record.key, record.group, record.split) == ("val:1", "val:1", "val")
    assert record.path == "chestmnist.npz:val_images[1]"
    assert record.labels == tuple(data["val_labels"][1].tolist())
    pixels, patient = record.loader.load()
    assert patient is None and np.array_equal(pixels[0], data["val_images"][1].astype(np.float32))


def test_multi_class_is_one_hot_over_all_splits(tmp_path: Path) -> None:
    data = arrays(classes=3)
    data["test_labels"][-1, 0] = 4  # the largest id only in the test split: 5 classes
    source = load(write(tmp_path / "organmnist.npz", data))
    assert source.label_names == [f"label_{i}" for i in range(5)]
    got = {r.key: r.labels for r in source.records}
    assert got["train:0"] == (1, 0, 0, 0, 0)
    assert got["train:5"] == (0, 0, 1, 0, 0)
    assert got["test:2"] == (0, 0, 0, 0, 1)
    named = load(tmp_path / "organmnist.npz", label_names="a, b,c,d,e")
    assert named.label_names == ["a", "b", "c", "d", "e"]
    with pytest.raises(DataError, match=r"organmnist\.npz, field 'label_names': 2 label names given, the file has 5"):
        load(tmp_path / "organmnist.npz", label_names=["a", "b"])


def test_rgb_images_and_picking_by_size(tmp_path: Path) -> None:
    write(tmp_path / "pathmnist.npz", arrays(classes=2, rgb=True, side=28))
    write(tmp_path / "pathmnist_16.npz", arrays(classes=2, rgb=True, side=16))
    with pytest.raises(DataError, match=r"expected exactly one \.npz file, found .*pass size"):
        load(tmp_path)
    source = load_source("medmnist", tmp_path, size=16)
    assert source.params["file"].endswith("pathmnist_16.npz") and source.params["size"] == 16
    pixels, _ = source.records[0].loader.load()
    assert pixels.shape == (1, 16, 16)  # RGB turned to gray
    assert load(tmp_path, size=28).params["file"].endswith("pathmnist.npz")  # no suffix: 28 by MedMNIST's naming
    expected = r"pathmnist\.npz, field 'train_images': images are 28 x 28, not the requested size 16"
    with pytest.raises(DataError, match=expected):
        load(tmp_path / "pathmnist.npz", size=16)
    with pytest.raises(DataError, match=r"expected exactly one \.npz file of size 64, found \[\]"):
        load(tmp_path, size=64)


def test_prepare_keeps_the_official_split(tmp_path: Path) -> None:
    data = arrays()
    source = load(write(tmp_path / "chestmnist.npz", data))
    store = prepare(source, tmp_path / "store", resolutions=[8, 16], workers=1, progress=False, log=lambda m: None)
    records = store.records
    assert store.label_names == CHESTMNIST_LABELS
    assert records["split"].tolist() == [s for s, n in SIZES.items() for _ in range(n)]
    assert store.manifest["split_method"] == "official split of the source"
    assert records["group"].nunique() == len(records)  # one group per image: none spans two splits
    expected = np.concatenate([data[f"{s}_labels"] for s in SIZES])
    assert np.array_equal(store.labels, expected)
    assert store.images(16).shape == (12, 1, 16, 16)


# ---- bad input ------------------------------------------------------------------------------


def test_bad_keys_shapes_and_dtypes(tmp_path: Path) -> None:
    cases = {
        "val_labels": (lambda d: d.pop("val_labels"), r"field 'val_labels': missing array"),
        "float images": (lambda d: d.update(test_images=d["test_images"].astype(np.float32)),
                         r"field 'test_images': float32 array of shape \(3, 8, 8\): expected uint8"),
        "image size": (lambda d: d.update(val_images=np.zeros((3, 9, 9), np.uint8)),
                       r"field 'val_images': images of shape \(9, 9\), the train images are \(8, 8\)"),
        "label rows": (lambda d: d.update(train_labels=d["train_labels"][:5]),
                       r"field 'train_labels': uint8 array of shape \(5, 14\): expected integers shaped 6 x L"),
        "label columns": (lambda d: d.update(test_labels=d["test_labels"][:, :13]),
                          r"field 'test_labels': 13 label columns, the train labels have 14"),
        "float labels": (lambda d: d.update(val_labels=d["val_labels"].astype(float)),
                         r"field 'val_labels': float64 array"),
    }
    for name, (change, pattern) in cases.items():
        data = arrays()
        change(data)
        path = write(tmp_path / f"{name}.npz", data)
        with pytest.raises(DataError, match=re.escape(str(path)) + ", " + pattern):
            load(path)


def test_bad_label_values(tmp_path: Path) -> None:
    data = arrays()
    data["val_labels"][2, 5] = 2
    path = write(tmp_path / "chestmnist.npz", data)
    expected = r"chestmnist\.npz, field 'val_labels': value 2 at index \[2, 5\] is not 0 or 1"
    with pytest.raises(DataError, match=expected):
        load(path)
    data = arrays(classes=3)
    data["test_labels"] = data["test_labels"].astype(np.int64)
    data["test_labels"][1, 0] = -1
    path = write(tmp_path / "bloodmnist.npz", data)
    with pytest.raises(DataError, match=r"field 'test_labels': value -1 at index \[1, 0\] is not a class id >= 0"):
        load(path)


def test_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match=r"broken\.npz: is not a \.npz file"):
        load(tmp_path / "broken.npz")
    with pytest.raises(DataError, match=r"missing: not found"):
        load(tmp_path / "missing")
