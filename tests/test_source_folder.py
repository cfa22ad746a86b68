"""The generic folder source: a CSV listing PNG, JPEG, DICOM and NIfTI files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from synthmed.data.imaging import parse_windows
from synthmed.data.sources import load_source
from synthmed.data.sources.folder import load
from synthmed.data.store import prepare
from synthmed.errors import DataError

HEADER = ["path", "patient", "slice", "tumor", "bleed"]
HU_40 = 1064  # stored value that is 40 HU with the intercept below: the brain window's centre


def write_raster(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(20, 255, (20, 20), dtype=np.uint8)).save(path)


def write_dicom(path: Path, patient_id: str, seed: int) -> None:
    """A minimal CT slice: signed 16-bit values, HU = value - 1024, no header window."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient_id, "CT"
    pixels = np.random.default_rng(seed).integers(900, 1200, (16, 16)).astype(np.int16)
    pixels[0, 0] = HU_40
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# CSV rows (line 2 onwards): ten PNGs of ten patients, two JPEGs, three DICOMs whose
# patient comes from their header (P1 twice), a NIfTI volume twice (slice 1, middle).
ROWS = (
    [[f"images/img{i:02d}.png", f"p{i:02d}", "", "1", "0"] for i in range(10)]
    + [["images/a.jpg", "p10", "", "0", "1"], ["images/b.jpeg", "p11", "", "0", "1"]]
    + [["dicom/ct1.dcm", "", "", "1", "1"], ["dicom/ct2.dcm", "", "", "1", "1"], ["dicom/ct3.dcm", "", "", "1", "1"]]
    + [["vol.nii.gz", "v1", "1", "0", "1"], ["vol.nii.gz", "v1", "", "0", "0"]]
)
DICOM_PATIENTS = {"ct1": "P1", "ct2": "P1", "ct3": "P2"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(10):
        write_raster(root / f"images/img{i:02d}.png", i)
    write_raster(root / "images/a.jpg", 10)
    write_raster(root / "images/b.jpeg", 11)
    for seed, (name, patient) in enumerate(DICOM_PATIENTS.items()):
        write_dicom(root / f"dicom/{name}.dcm", patient, seed)
    volume = np.random.default_rng(0).normal(size=(12, 10, 4)).astype(np.float32)
    nibabel.Nifti1Image(volume, np.eye(4)).to_filename(root / "vol.nii.gz")
    write_csv(root / "labels.csv", ROWS)
    return root


def raises_at(file: Path, line: int | None, column: str | None, text: str):
    """``pytest.raises`` for a DataError that names the file, row, column, then ``text``."""
    where = [re.escape(str(file))] + ([f"row {line}"] if line else []) + ([f"field '{column}'"] if column else [])
    return pytest.raises(DataError, match=", ".join(where) + ": " + text)


def test_records_labels_groups_and_loaders(root: Path) -> None:
    data = load(root, patient_column="patient", slice_column="slice", window="brain")
    assert data.label_names == ["tumor", "bleed"]
    assert len(data.records) == len(ROWS)
    by_key = {r.key: r for r in data.records}
    assert by_key["images/img03.png"].labels == (1, 0) and by_key["images/img03.png"].group == "p03"
    assert by_key["images/a.jpg"].labels == (0, 1)
    assert by_key["dicom/ct1.dcm"].group is None  # blank: the store takes the header's PatientID
    assert by_key["images/img00.png"].loader.windows is None  # windows are for DICOM and NIfTI only
    assert by_key["dicom/ct2.dcm"].loader.windows == parse_windows("brain")
    pixels, patient = by_key["dicom/ct1.dcm"].loader.load()
    assert patient == "P1" and pixels.shape == (1, 16, 16) and pixels[0, 0, 0] == pytest.approx(127.5)
    multi = load(root, patient_column="patient", slice_column="slice", window="multi")
    assert multi.records[12].loader.load()[0].shape == (3, 16, 16)


def test_nifti_slices(root: Path) -> None:
    write_csv(root / "labels.csv", [["vol.nii.gz", "v1", "1", "0", "1"], ["sub/../vol.nii.gz", "v1", "", "1", "0"]])
    data = load(root, patient_column="patient", slice_column="slice")
    chosen, middle = data.records
    assert (chosen.loader.slice_index, middle.loader.slice_index) == (1, None)
    assert (chosen.key, middle.key) == ("vol.nii.gz#1", "vol.nii.gz")  # one image per slice; path normalised
    assert chosen.path == middle.path == "vol.nii.gz"
    volume = np.asarray(nibabel.load(root / "vol.nii.gz").dataobj)
    for record, index in [(chosen, 1), (middle, 2)]:
        plane = np.rot90(volume[:, :, index])
        expected = (plane - plane.min()) / (plane.max() - plane.min()) * 255
        np.testing.assert_allclose(record.loader.load()[0][0], expected, rtol=1e-5, atol=1e-3)


def test_default_label_columns_exclude_only_named_columns(root: Path) -> None:
    write_csv(root / "labels.csv", [r[:1] + r[3:] for r in ROWS[:12]], header=["path", "tumor", "bleed"])
    data = load(root)
    assert data.label_names == ["tumor", "bleed"] and all(r.group is None for r in data.records)
    assert load(root, label_columns="bleed").label_names == ["bleed"]


def test_prepare_groups_by_column_and_dicom_header(root: Path, tmp_path: Path) -> None:
    data = load_source("folder", root, patient_column="patient", slice_column="slice")
    store = prepare(data, tmp_path / "store", resolutions=[8, 16], workers=1, progress=False, log=lambda m: None)
    records = store.records.set_index("key")
    assert store.label_names == ["tumor", "bleed"]
    assert store.images(16).shape == (len(ROWS), 1, 16, 16)
    assert [tuple(v) for v in store.labels.tolist()] == [r.labels for r in data.records]
    group = records["group"]
    assert group["dicom/ct1.dcm"] == group["dicom/ct2.dcm"] != group["dicom/ct3.dcm"]
    assert group.nunique() == 10 + 2 + 2 + 1  # PNG/JPEG patients, P1 and P2, v1
    assert group["vol.nii.gz"] == group["vol.nii.gz#1"]
    assert (records.groupby("group")["split"].nunique() == 1).all()


def test_absolute_path_inside_root_is_accepted(root: Path) -> None:
    write_csv(root / "labels.csv", [[str(root / "images/img01.png"), "", "", "1", "0"]])
    assert load(root, patient_column="patient", slice_column="slice").records[0].key == "images/img01.png"


def test_corrupt_jpeg_fails_prepare_without_leftovers(root: Path, tmp_path: Path) -> None:
    (root / "images/a.jpg").write_bytes(b"\xff\xd8 not really a JPEG " * 8)
    out = tmp_path / "store"
    data = load(root, patient_column="patient", slice_column="slice")
    with pytest.raises(DataError, match=r"1 of 17 images could not be read.*images/a\.jpg"):
        prepare(data, out, resolutions=[8], max_bad_fraction=0, workers=1, progress=False, log=lambda m: None)
    assert not out.exists() and not (tmp_path / "store.partial").exists()


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [("", "blank label is not allowed"), ("yes", "label value 'yes' is not allowed"),
     ("2", "label value '2' is not allowed"), ("-1", "label value '-1' is not allowed")],
)
def test_bad_label(root: Path, value: str, text: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[2][4] = value  # line 4, column bleed
    write_csv(root / "labels.csv", rows)
    with raises_at(root / "labels.csv", 4, "bleed", text):
        load(root, patient_column="patient", slice_column="slice")


def test_missing_columns(root: Path) -> None:
    with raises_at(root / "labels.csv", None, "size", r"missing column 'size'"):
        load(root, label_columns=["tumor", "size"])
    with raises_at(root / "labels.csv", None, "file", r"missing column 'file'"):
        load(root, image_column="file")
    with raises_at(root / "labels.csv", None, "patient", "is both a label column"):
        load(root, patient_column="patient", label_columns="tumor,patient")


def test_empty_csv(root: Path) -> None:
    write_csv(root / "labels.csv", [])
    with raises_at(root / "labels.csv", None, None, "CSV file has a header but no rows"):
        load(root)
    (root / "labels.csv").write_bytes(b"")
    with raises_at(root / "labels.csv", None, None, "CSV file is empty"):
        load(root)
    with raises_at(root / "other.csv", None, None, "CSV file not found"):
        load(root, csv="other.csv")


def test_paths_outside_the_root_or_missing(root: Path, tmp_path: Path) -> None:
    write_raster(tmp_path / "outside.png", 0)  # exists, but outside the data folder
    for value in ["../outside.png", str(tmp_path / "outside.png"), "images/../../outside.png"]:
        write_csv(root / "labels.csv", [ROWS[0], [value, "", "", "1", "0"]])
        with raises_at(root / "labels.csv", 3, "path", f"path {re.escape(repr(value))} points outside the data folder"):
            load(root, patient_column="patient", slice_column="slice")
    write_csv(root / "labels.csv", [ROWS[0], ["images/nothere.png", "", "", "1", "0"]])
    missing = load(root, patient_column="patient", slice_column="slice").records[1]  # skipped by prepare, as unreadable
    assert missing.path == "images/nothere.png"
    with pytest.raises(FileNotFoundError, match=re.escape(f"image file not found: {root / 'images/nothere.png'}")):
        missing.loader.load()
    write_csv(root / "labels.csv", [["", "", "", "1", "0"]])
    with raises_at(root / "labels.csv", 2, "path", "blank image path"):
        load(root, patient_column="patient", slice_column="slice")


def test_duplicate_paths(root: Path) -> None:
    write_csv(root / "labels.csv", ROWS[:3] + [["./images/img01.png", "p01", "", "1", "0"]])
    with raises_at(root / "labels.csv", 5, "path", r"duplicate image 'images/img01\.png': rows 3 and 5"):
        load(root, patient_column="patient", slice_column="slice")
    write_csv(root / "labels.csv", ROWS + [["./vol.nii.gz", "v1", "1", "1", "1"]])  # same volume, same slice
    with raises_at(root / "labels.csv", 19, "path", r"duplicate image 'vol\.nii\.gz#1': rows 17 and 19"):
        load(root, patient_column="patient", slice_column="slice")


def test_bad_image_type_slice_and_window(root: Path) -> None:
    (root / "notes.txt").write_text("not an image")
    write_csv(root / "labels.csv", [ROWS[0], ["notes.txt", "", "", "1", "0"]])
    with raises_at(root / "labels.csv", 3, "path", r"unsupported image type '\.txt'"):
        load(root, patient_column="patient", slice_column="slice")
    write_csv(root / "labels.csv", [["images/img00.png", "", "3", "1", "0"]])
    with raises_at(root / "labels.csv", 2, "slice", "slice index '3' given for an image that is not a NIfTI volume"):
        load(root, patient_column="patient", slice_column="slice")
    write_csv(root / "labels.csv", [["vol.nii.gz", "", "middle", "1", "0"]])
    with raises_at(root / "labels.csv", 2, "slice", r"slice index 'middle' is not a whole number >= 0"):
        load(root, patient_column="patient", slice_column="slice")
    with pytest.raises(DataError, match=r"field 'window': unknown window 'lung'"):
        load(root, window="lung")


def test_blank_lines_are_left_out_and_rows_keep_their_line_numbers(root: Path) -> None:
    """pandas skipped blank lines, so every row after one was reported one line early."""
    lines = [",".join(HEADER)] + [",".join(row) for row in ROWS[:2]] + ["", ",,,,", ",".join(ROWS[2]), "", ""]
    (root / "labels.csv").write_text("\n".join(lines))
    data = load(root, patient_column="patient", slice_column="slice")
    assert [r.path for r in data.records] == [row[0] for row in ROWS[:3]]
    lines[5] = lines[5].replace(",1,0", ",yes,0")  # line 6 of the file
    (root / "labels.csv").write_text("\n".join(lines))
    with raises_at(root / "labels.csv", 6, "tumor", "label value 'yes' is not allowed"):
        load(root, patient_column="patient", slice_column="slice")
    (root / "labels.csv").write_text("path,tumor,\nimages/img00.png,1,\n")
    with raises_at(root / "labels.csv", 1, None, "column 3 of the header has no name"):
        load(root)
    write_csv(root / "labels.csv", ROWS)
    with pytest.raises(DataError, match="field 'label_columns': label column 'tumor' is listed 2 times"):
        load(root, label_columns="tumor,bleed,tumor")
