"""The CheXpert source on a small CheXpert-like tree, and its label parser on the real train.csv."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import real_chexpert_csv
from synthmed.data.sources import load_source
from synthmed.data.sources.chexpert import FINDINGS, labels_from_csv, load
from synthmed.data.store import Store, prepare
from synthmed.errors import DataError

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]
ROOT_NAME = "CheXpert-v1.0-small"


def row(path: str, view: str = "Frontal", **findings: str) -> dict[str, str]:
    """A CSV row; findings given by name with spaces as underscores, others blank."""
    cells = {name: "" for name in FINDINGS}
    cells.update({name.replace("_", " "): value for name, value in findings.items()})
    first = {"Path": f"{ROOT_NAME}/{path}", "Sex": "Female", "Age": "60", "Frontal/Lateral": view, "AP/PA": "AP"}
    return {**first, **cells}


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(20, 255, (24, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


# Rows 2.. of train.csv (line numbers as in error messages: header = line 1).
TRAIN = [
    row("train/patient00001/study1/view1_frontal.jpg", No_Finding="1.0", Pneumothorax="0.0"),
    row("train/patient00001/study1/view2_lateral.jpg", view="Lateral", No_Finding="1.0"),
    row("train/patient00002/study1/view1_frontal.jpg", Lung_Opacity="1.0", Consolidation="-1.0", Fracture="1"),
    row("train/patient00003/study1/view1_frontal.jpg", Edema="-1.0", Pneumothorax="0.0"),  # only uncertain
    row("train/patient00004/study1/view1_frontal.jpg"),  # all blank: dropped
    row("train/patient00004/study2/view1_frontal.jpg", Pleural_Effusion="1.0", Support_Devices="0.0"),
] + [
    # one more patient per finding (patient00005..), each with that finding alone
    row(f"train/patient{5 + i:05d}/study1/view1_frontal.jpg", **{name.replace(" ", "_"): "1.0"})
    for i, name in enumerate(FINDINGS[1:9])
] + [
    # ten normal patients (00013..00022): the store's stratified split needs a combination
    # with at least as many rows as it has folds
    row(f"train/patient{13 + i:05d}/study1/view1_frontal.jpg", No_Finding="1.0")
    for i in range(10)
]
# valid.csv is fully labelled (radiologist consensus): every cell 0.0 or 1.0.
ZEROS = {name.replace(" ", "_"): "0.0" for name in FINDINGS}
VALID = [
    row("valid/patient64541/study1/view1_frontal.jpg", **dict(ZEROS, No_Finding="1.0")),
    row("valid/patient64541/study1/view2_lateral.jpg", view="Lateral", Cardiomegaly="1.0"),
    row("valid/patient64542/study1/view1_frontal.jpg", **dict(ZEROS, Cardiomegaly="1.0")),
]


def vector(*names: str) -> tuple[int, ...]:
    return tuple(int(name in names) for name in FINDINGS)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / ROOT_NAME
    root.mkdir()
    write_csv(root / "train.csv", TRAIN)
    write_csv(root / "valid.csv", VALID)
    for seed, r in enumerate(TRAIN + VALID):
        if r["Frontal/Lateral"] == "Frontal":  # lateral images are never opened: leave them out
            write_jpeg(tmp_path / r["Path"], seed)
    return root


def test_uones_frontal_only_drops_all_zero(root: Path) -> None:
    data = load(root)
    got = {r.key: r for r in data.records}
    train = f"{ROOT_NAME}/train"
    assert data.label_names == FINDINGS
    assert got[f"{train}/patient00001/study1/view1_frontal.jpg"].labels == vector("No Finding")
    assert got[f"{train}/patient00002/study1/view1_frontal.jpg"].labels == vector(
        "Lung Opacity", "Consolidation", "Fracture"
    )
    assert got[f"{train}/patient00003/study1/view1_frontal.jpg"].labels == vector("Edema")
    assert got[f"{train}/patient00004/study2/view1_frontal.jpg"].labels == vector("Pleural Effusion")
    assert got[f"{ROOT_NAME}/valid/patient64542/study1/view1_frontal.jpg"].labels == vector("Cardiomegaly")
    assert not any("lateral" in key for key in got)
    assert f"{train}/patient00004/study1/view1_frontal.jpg" not in got  # all blank
    assert len(data.records) == 22 + 2
    assert all(r.split is None and r.path == r.key for r in data.records)
    patients = {f"patient{i:05d}" for i in range(1, 23)} | {"patient64541", "patient64542"}
    assert {r.group for r in data.records} == patients
    assert got[f"{train}/patient00004/study2/view1_frontal.jpg"].group == "patient00004"
    assert Path(got[f"{train}/patient00002/study1/view1_frontal.jpg"].loader.path) == (
        root / "train/patient00002/study1/view1_frontal.jpg"
    ).absolute()


def test_uzeros_turns_uncertain_into_zero(root: Path) -> None:
    got = {r.key: r.labels for r in load(root, uncertain="zeros").records}
    assert got[f"{ROOT_NAME}/train/patient00002/study1/view1_frontal.jpg"] == vector("Lung Opacity", "Fracture")
    assert f"{ROOT_NAME}/train/patient00003/study1/view1_frontal.jpg" not in got  # uncertain only: now all zero
    assert len(got) == 23


def test_labels_from_csv_needs_no_images(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", TRAIN)
    table = labels_from_csv(tmp_path / "train.csv")
    assert list(table.columns) == ["path", "patient", *FINDINGS]
    assert list(table.index[:3]) == [2, 4, 5]  # CSV line numbers; line 3 is the lateral view
    assert table.loc[4, "patient"] == "patient00002"
    assert tuple(table.loc[4, FINDINGS]) == vector("Lung Opacity", "Consolidation", "Fracture")


def test_paths_relative_to_a_renamed_root(root: Path, tmp_path: Path) -> None:
    """A folder not named like the CSV's first component: paths are taken from the root."""
    renamed = tmp_path / "chexpert"
    root.rename(renamed)  # the images move along: renamed/train/patient...
    rows = [dict(r, Path=r["Path"].removeprefix(f"{ROOT_NAME}/")) for r in TRAIN]
    write_csv(renamed / "train.csv", rows)
    data = load(renamed, csvs="train.csv")
    assert data.records[0].key == "train/patient00001/study1/view1_frontal.jpg"
    assert len(data.records) == 22


def test_prepare_store_keeps_patients_apart(root: Path, tmp_path: Path) -> None:
    data = load_source("chexpert", root)
    store = prepare(data, tmp_path / "store", resolutions=[8, 16], workers=1, progress=False, log=lambda m: None)
    assert isinstance(store, Store) and store.label_names == FINDINGS
    records = store.records
    expected = {r.key: r.labels for r in data.records}
    assert len(records) == len(expected) == 24
    assert [tuple(v) for v in store.labels.tolist()] == [expected[k] for k in records["key"]]
    assert store.images(16).shape == (24, 1, 16, 16) and store.images(8).shape == (24, 1, 8, 8)
    patients = records["key"].str.extract(r"(patient\d+)", expand=False)
    assert (records.groupby(patients)["split"].nunique() == 1).all()
    assert (records.groupby(patients)["group"].nunique() == 1).all()
    assert set(records["split"]) == {"train", "val", "test"}


def test_corrupt_jpeg_fails_prepare_without_leftovers(root: Path, tmp_path: Path) -> None:
    bad = root / "train/patient00003/study1/view1_frontal.jpg"
    bad.write_bytes(b"this is not a JPEG file at all" * 10)
    out = tmp_path / "store"
    with pytest.raises(DataError, match=r"1 of 24 images could not be read.*patient00003/study1/view1_frontal\.jpg"):
        prepare(load(root), out, resolutions=[8], max_bad_fraction=0, workers=1, progress=False, log=lambda m: None)
    assert not out.exists() and not (tmp_path / "store.partial").exists()


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2", "yes", "1.5", "-2"])
def test_unknown_label_value(root: Path, value: str) -> None:
    rows = [dict(r) for r in TRAIN]
    rows[2]["Cardiomegaly"] = value  # line 4
    write_csv(root / "train.csv", rows)
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'train.csv'))}, row 4, field 'Cardiomegaly': "
                       rf"label value '{re.escape(value)}' is not allowed"):
        load(root)


def test_missing_column(root: Path) -> None:
    table = pd.read_csv(root / "valid.csv", dtype=str).drop(columns=["Edema"])
    table.to_csv(root / "valid.csv", index=False)
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'valid.csv'))}, field 'Edema': missing column"):
        load(root)


def test_empty_csv(root: Path) -> None:
    write_csv(root / "valid.csv", [])
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'valid.csv'))}: CSV file has a header but no rows"):
        load(root)
    (root / "valid.csv").write_bytes(b"")
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'valid.csv'))}: CSV file is empty"):
        load(root)


def test_missing_csv_and_missing_image(root: Path) -> None:
    with pytest.raises(DataError, match=rf"{re.escape(str(root / 'test.csv'))}: CSV file not found"):
        load(root, csvs=["train.csv", "test.csv"])
    (root / "train/patient00002/study1/view1_frontal.jpg").unlink()
    missing = [r for r in load(root).records if r.group == "patient00002"]  # prepare skips it, as unreadable
    with pytest.raises(FileNotFoundError, match="image file not found: .*patient00002/study1/view1_frontal.jpg"):
        missing[0].loader.load()


def test_path_without_patient_and_escaping_path(root: Path, tmp_path: Path) -> None:
    rows = [dict(r) for r in TRAIN]
    rows[3]["Path"] = f"{ROOT_NAME}/train/someone/study1/view1_frontal.jpg"  # line 5
    write_csv(root / "train.csv", rows)
    with pytest.raises(DataError, match=r"train\.csv, row 5, field 'Path': path .* has no patientNNNNN folder"):
        load(root)
    write_jpeg(tmp_path / "patient00099" / "x.jpg", 0)
    rows[3]["Path"] = f"{ROOT_NAME}/../patient00099/x.jpg"
    write_csv(root / "train.csv", rows)
    with pytest.raises(DataError, match=r"train\.csv, row 5, field 'Path': path .* points outside the data folder"):
        load(root)


def test_duplicate_path_and_bad_view_and_bad_option(root: Path) -> None:
    write_csv(root / "train.csv", TRAIN + [TRAIN[0]])  # line 26 repeats line 2
    with pytest.raises(DataError, match=r"train\.csv, row 26, field 'Path': duplicate image path .*rows 2 and 26"):
        load(root)
    write_csv(root / "train.csv", [dict(TRAIN[0], **{"Frontal/Lateral": "PA"})])
    with pytest.raises(DataError, match=r"train\.csv, row 2, field 'Frontal/Lateral': view 'PA'"):
        load(root)
    with pytest.raises(DataError, match=r"field 'uncertain': unknown uncertain-label policy 'maybe'"):
        load(root, uncertain="maybe")


# ---- the real CheXpert train.csv shipped with torchxrayvision ------------------------------


@pytest.fixture(scope="module")
def real_csv() -> tuple[Path, pd.DataFrame]:
    path = real_chexpert_csv()
    return path, pd.read_csv(path)  # pandas' own number parsing: blank -> NaN


@pytest.mark.parametrize("uncertain", ["ones", "zeros"])
def test_real_chexpert_labels_match_an_independent_count(real_csv: tuple[Path, pd.DataFrame], uncertain: str) -> None:
    path, raw = real_csv
    table = labels_from_csv(path, uncertain)

    assert len(raw) == 223_414
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"]
    assert len(frontal) == 191_027  # raw["Frontal/Lateral"].value_counts()
    values = frontal[FINDINGS].replace(-1.0, 1.0 if uncertain == "ones" else 0.0).fillna(0.0)
    assert set(np.unique(values)) == {0.0, 1.0}
    kept = values[values.sum(axis=1) > 0]
    assert len(table) == len(kept)
    assert (table.index.to_numpy() - 2 == kept.index.to_numpy()).all()  # line numbers
    assert np.array_equal(table[FINDINGS].to_numpy(), kept.to_numpy().astype(np.uint8))
    prefix = "CheXpert-v1.0-small/train/"
    paths = frontal.loc[kept.index, "Path"]
    assert paths.str.startswith(prefix).all()
    assert table["patient"].tolist() == paths.str.slice(len(prefix), len(prefix) + len("patient00001")).tolist()
