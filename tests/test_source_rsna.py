"""The rsna-ich source on a generated Kaggle-like tree, through to a prepared store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from synthmed.data.sources import load_source
from synthmed.data.sources.rsna_ich import KAGGLE_TYPES, LABEL_NAMES, SUBTYPES, load
from synthmed.data.store import prepare
from synthmed.errors import DataError

N_IMAGES, N_PATIENTS, N_POSITIVE = 40, 12, 14
HEADER = "ID,Label\n"


def image_id(i: int) -> str:
    return f"ID_{(i * 2654435761) % 16**9:09x}"


def patient_id(i: int) -> str:
    return f"PATXQ-{i % N_PATIENTS:02d}-RAW"  # image i belongs to patient i mod 12


def subtypes_of(i: int) -> list[float]:
    """Images 0..13 show a haemorrhage (one or two subtypes, some as probabilities)."""
    if i >= N_POSITIVE:
        return [0.0] * 5
    values = [0.0] * 5
    values[i % 5] = 1.0 if i % 3 else 0.25
    if i % 4 == 0:
        values[(i + 2) % 5] = 1.0
    return values


def stored_pixels(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(900, 1300, size=(20, 24)).astype(np.int16)


def scaling(i: int) -> tuple[int, int]:
    """(RescaleSlope, RescaleIntercept): some images store HU at half scale."""
    return (2, -2048) if i % 7 == 3 else (1, -1024)


def write_dicom(path: Path, i: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id(i)
    pixels = stored_pixels(i)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 1
    ds.PhotometricInterpretation = "MONOCHROME1" if i % 5 == 2 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = scaling(i)
    ds.WindowCenter, ds.WindowWidth = [40, 80], [80, 200]
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_csv(path: Path, rows: list[str]) -> None:
    path.write_text(HEADER + "".join(row + "\n" for row in rows))


def kaggle_rows(i: int) -> list[str]:
    values = subtypes_of(i)
    return [f"{image_id(i)}_{t},{v:g}" for t, v in zip(KAGGLE_TYPES, [*values, float(max(values) > 0)])]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    (root / "stage_2_train").mkdir()
    for i in range(N_IMAGES):
        write_dicom(root / "stage_2_train" / f"{image_id(i)}.dcm", i)
    # Kaggle's row order is not grouped by image: interleave the images' rows.
    rows = [row for k in range(6) for i in range(N_IMAGES) for row in [kaggle_rows(i)[k]]]
    write_csv(root / "stage_2_train.csv", rows)
    return root


def expected_labels(i: int) -> tuple[int, ...]:
    present = [int(v > 0) for v in subtypes_of(i)]
    return (*present, int(not any(present)))


def test_pivot_to_the_six_labels(tree):
    source = load(tree, max_no_finding_fraction=1)
    assert source.name == "rsna-ich"
    assert source.label_names == [*SUBTYPES, "No Finding"] == LABEL_NAMES
    by_key = {record.key: record for record in source.records}
    assert len(by_key) == N_IMAGES
    for i in range(N_IMAGES):
        record = by_key[image_id(i)]
        assert record.labels == expected_labels(i)
        assert record.path == f"stage_2_train/{image_id(i)}.dcm"
        assert record.group is None  # the store takes PatientID from the header
    # image 0: epidural 0.25 (a probability > 0 counts) and intraventricular 1
    assert by_key[image_id(0)].labels == (1, 0, 1, 0, 0, 0)
    assert by_key[image_id(20)].labels == (0, 0, 0, 0, 0, 1)
    assert source.params["counts"] == {
        "images": 40, "haemorrhage": 14, "no_finding": 26, "no_finding_kept": 26, "kept": 40,
    }


def test_no_finding_undersampling(tree):
    source = load(tree)
    labels = np.array([r.labels for r in source.records])
    assert labels[:, :5].any(axis=1).sum() == N_POSITIVE  # every haemorrhage image is kept
    assert labels[:, 5].sum() == N_POSITIVE  # no-finding cut to exactly half: 14 of 28
    assert source.params["counts"]["no_finding_kept"] == 14 and source.params["counts"]["kept"] == 28
    assert source.params["seed"] == 0 and source.params["windows"] == [[40.0, 80.0]]

    def kept(**options) -> list[str]:
        return [r.key for r in load(tree, **options).records]

    assert kept(seed=0) == kept(seed=0)
    assert kept(seed=0) != kept(seed=1)
    for fraction, negatives in [(0.25, 4), (0.0, 0), (0.5, 14), (1.0, 26)]:
        # largest k with k / (14 + k) <= fraction
        records = load(tree, max_no_finding_fraction=fraction).records
        assert sum(r.labels[5] for r in records) == negatives
        assert len(records) == N_POSITIVE + negatives
    with pytest.raises(DataError, match="max_no_finding_fraction"):
        load(tree, max_no_finding_fraction=1.5)


def test_windowed_pixels_by_hand(tree):
    records = {r.key: r for r in load(tree, max_no_finding_fraction=1).records}
    i = 17  # slope 2 / intercept -2048, MONOCHROME1
    assert scaling(i) == (2, -2048) and i % 5 == 2
    pixels, patient = records[image_id(i)].loader.load()
    assert patient == patient_id(i)
    hu = stored_pixels(i).astype(np.float64) * 2 - 2048
    brain = np.clip((hu - 0) / 80, 0, 1) * 255  # brain window [0, 80] HU
    np.testing.assert_allclose(pixels, (255 - brain)[None], atol=1e-3)
    # stored 1040 -> HU 32 -> 32 / 80 * 255 = 102, inverted 153
    stored = stored_pixels(i)
    row, col = np.argwhere(stored == 1040)[0]
    assert pixels[0, row, col] == pytest.approx(153.0, abs=1e-3)

    j = 1  # slope 1 / intercept -1024, MONOCHROME2
    hu = stored_pixels(j).astype(np.float64) - 1024
    multi, _ = load(tree, window="multi", max_no_finding_fraction=1).records[0].loader.load()
    custom = {r.key: r for r in load(tree, window="100,50", max_no_finding_fraction=1).records}
    pixels, _ = custom[image_id(j)].loader.load()
    np.testing.assert_allclose(pixels[0], np.clip((hu - 75) / 50, 0, 1) * 255, atol=1e-3)
    assert multi.shape[0] == 3
    with pytest.raises(DataError, match="window"):
        load(tree, window="lungs")


def test_prepared_store_groups_by_patient_and_keeps_no_patient_id(tree, tmp_path):
    source = load_source("rsna-ich", tree)
    out = tmp_path / "store"
    store = prepare(source, out, resolutions=[16], workers=1, progress=False, log=lambda m: None)
    records = store.records
    assert len(records) == 28 and store.images(16).shape == (28, 1, 16, 16)
    patient_of = {image_id(i): patient_id(i) for i in range(N_IMAGES)}
    patients = records["key"].map(patient_of)
    pairs = set(zip(patients, records["group"]))
    assert len(pairs) == patients.nunique() == records["group"].nunique() == N_PATIENTS
    assert store.manifest["n_groups"] == N_PATIENTS and store.manifest["group_method"] == "patient id"
    assert (records.groupby(patients)["split"].nunique() == 1).all()  # no patient in two splits
    assert set(records["split"]) == {"train", "val", "test"}
    np.testing.assert_array_equal(store.labels, np.array([r.labels for r in source.records]))

    raw_ids = {patient_id(i).encode() for i in range(N_IMAGES)}
    files = [path for path in out.rglob("*") if path.is_file()]
    assert {p.name for p in files} >= {"manifest.json", "records.parquet", "labels.npy", "images_16.npy"}
    for path in files:
        content = path.read_bytes()
        assert not any(pid in content for pid in raw_ids), path
    cells = records.astype(str).to_numpy().ravel()  # the parquet is compressed: check its values too
    assert not any(patient_id(0)[:5] in cell for cell in cells)


def test_truncated_dicom_fails_the_store_and_leaves_nothing(tree, tmp_path):
    root = tmp_path / "copy"
    (root / "stage_2_train").mkdir(parents=True)
    (root / "stage_2_train.csv").write_bytes((tree / "stage_2_train.csv").read_bytes())
    for path in (tree / "stage_2_train").iterdir():
        (root / "stage_2_train" / path.name).write_bytes(path.read_bytes())
    broken = root / "stage_2_train" / f"{image_id(5)}.dcm"
    broken.write_bytes(broken.read_bytes()[:-300])
    source = load(root)
    out = tmp_path / "store"
    with pytest.raises(DataError, match=f"stage_2_train/{image_id(5)}.dcm: .*pixel data"):
        prepare(source, out, resolutions=[16], workers=1, progress=False, log=lambda m: None, max_bad_fraction=0)
    assert not out.exists() and not out.with_name("store.partial").exists()

    store = prepare(source, out, resolutions=[16], workers=1, progress=False, log=lambda m: None, max_bad_fraction=0.1)
    assert len(store) == 27 and store.manifest["n_skipped"] == 1
    assert image_id(5) in (out / "skipped.csv").read_text()


def bad_csv(tmp_path, rows: list[str], header: str = HEADER) -> Path:
    (tmp_path / "stage_2_train").mkdir(parents=True, exist_ok=True)
    (tmp_path / "stage_2_train.csv").write_text(header + "".join(row + "\n" for row in rows))
    return tmp_path


def image_rows(image: str, values=(0, 0, 0, 0, 0, 0)) -> list[str]:
    return [f"{image}_{t},{v}" for t, v in zip(KAGGLE_TYPES, values)]


GOOD = image_rows("ID_aaa", (0, 1, 0, 0, 0, 1)) + image_rows("ID_bbb")  # CSV lines 2-7 and 8-13
BAD_CSVS = {
    "missing column": (["ID_aaa_any,0"], "ID,Value\n", r"field 'Label'.*missing column 'Label'"),
    "empty file": ([], "", "empty"),
    "header only": ([], HEADER, "no rows"),
    "unknown type": (GOOD + ["ID_ccc_haemorrhage,0"], HEADER, r"row 14, field 'ID': malformed ID 'ID_ccc_haemorrhage'"),
    "malformed ID": (GOOD + ["IDccc_any,0"], HEADER, r"row 14, field 'ID': malformed ID"),
    "word label": (GOOD[:3] + ["ID_aaa_subarachnoid,yes"] + GOOD[4:], HEADER, r"row 5, field 'Label': label 'yes'"),
    "label above 1": (GOOD[:3] + ["ID_aaa_subarachnoid,1.5"] + GOOD[4:], HEADER, r"row 5, field 'Label': label '1.5'"),
    "negative label": (GOOD[:3] + ["ID_aaa_subarachnoid,-0.1"] + GOOD[4:], HEADER, "row 5.*not a number in"),
    "blank label": (GOOD[:3] + ["ID_aaa_subarachnoid,"] + GOOD[4:], HEADER, "row 5.*label ''"),
    "conflicting duplicate": (GOOD + ["ID_bbb_epidural,1"], HEADER, r"row 14.*rows 8 and 14 name the same one"),
    "missing type": (GOOD[:-1], HEADER, r"row 8, field 'ID': image ID_bbb has no row for type\(s\) \['any'\]"),
    "any without subtype": (image_rows("ID_aaa", (0, 0, 0, 0, 0, 1)), HEADER, "row 2.*image ID_aaa: 'any' is 1"),
    "subtype without any": (image_rows("ID_aaa", (0, 1, 0, 0, 0, 0)), HEADER, "image ID_aaa: 'any' is 0"),
}


@pytest.mark.parametrize("case", BAD_CSVS)
def test_bad_csv(tmp_path, case):
    rows, header, message = BAD_CSVS[case]
    with pytest.raises(DataError, match=message) as caught:
        load(bad_csv(tmp_path, rows, header))
    assert "stage_2_train.csv" in str(caught.value)


def test_identical_repeated_rows_are_tolerated(tmp_path):
    """Kaggle's own CSV repeats some rows verbatim; a repeat with the same value is not a conflict."""
    root = bad_csv(tmp_path, image_rows("ID_aaa", (0, 1, 0, 0, 0, 1)) + ["ID_aaa_intraparenchymal,1"])
    write_dicom(root / "stage_2_train" / "ID_aaa.dcm", 0)
    assert [r.labels for r in load(root).records] == [(0, 1, 0, 0, 0, 0)]


def test_missing_dicom_is_left_to_prepare_to_skip(tmp_path):
    root = bad_csv(tmp_path, image_rows("ID_aaa", (0, 1, 0, 0, 0, 1)) + image_rows("ID_bbb"))
    write_dicom(root / "stage_2_train" / "ID_aaa.dcm", 0)
    missing = [r for r in load(root).records if r.key == "ID_bbb"]  # prepare lists it in skipped.csv, as unreadable
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*stage_2_train/ID_bbb\.dcm"):
        missing[0].loader.load()
    with pytest.raises(DataError, match="DICOM folder not found"):
        load(root, images="elsewhere")


def test_no_haemorrhage_at_all_keeps_nothing_and_says_so(tmp_path):
    root = bad_csv(tmp_path, image_rows("ID_aaa"))
    write_dicom(root / "stage_2_train" / "ID_aaa.dcm", 0)
    with pytest.raises(DataError, match="no image shows a haemorrhage"):
        load(root)
    assert len(load(root, max_no_finding_fraction=1).records) == 1
