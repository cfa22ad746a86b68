"""DICOM and NIfTI decoding against values computed by hand from the raw pixels and header.

The real files come from ``pydicom-data`` (693_UNCR: a CQ500 head CT; RG1_UNCR: a
MONOCHROME1 chest CR) and pydicom's own test files. Expected values are computed here with
plain numpy from ``pixel_array`` and the header tags, not with the code under test.
"""

from __future__ import annotations

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from helpers import require_asset
from synthmed.data.imaging import (
    NAMED_WINDOWS,
    ImageFile,
    Window,
    parse_windows,
    read_dicom,
    read_nifti,
)


def data_file(name: str) -> str:
    path = get_testdata_file(name)
    require_asset(path is not None, f"pydicom-data (DICOM test file {name})")
    return str(path)


def window_by_hand(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.clip((hu - (center - width / 2)) / width, 0, 1) * 255


def copy_of_ct_small(tmp_path, name: str = "ct.dcm", **tags) -> tuple[str, np.ndarray]:
    """CT_small.dcm (uncompressed, no window tags) with some tags changed; also its raw pixels."""
    dataset = pydicom.dcmread(data_file("CT_small.dcm"))
    for tag, value in tags.items():
        setattr(dataset, tag, value)
    path = tmp_path / name
    dataset.save_as(path)
    return str(path), dataset.pixel_array.astype(np.float64)


def test_head_ct_uses_the_header_window_on_hounsfield_units():
    path = data_file("693_UNCR.dcm")
    header = pydicom.dcmread(path)
    assert (float(header.WindowCenter), float(header.WindowWidth)) == (40, 100)
    assert (float(header.RescaleSlope), float(header.RescaleIntercept)) == (1, -1024)

    pixels, patient = read_dicom(path)
    assert pixels.shape == (1, 512, 512) and pixels.dtype == np.float32
    assert patient == "CQ500-CT-310"
    raw = header.pixel_array
    # window [40 - 50, 40 + 50] = [-10, 90] HU -> 0..255
    by_hand = {
        (0, 0): (-2000, 0.0),  # HU -3024: below the window
        (100, 256): (984, 0.0),  # HU -40
        (256, 256): (1048, 86.7),  # HU 24: (24 + 10) / 100 * 255
        (122, 242): (1064, 127.5),  # HU 40: the window centre
        (200, 256): (1057, 109.65),  # HU 33: 43 / 100 * 255
        (256, 60): (1273, 255.0),  # HU 249: above the window
    }
    for (row, col), (stored, value) in by_hand.items():
        assert raw[row, col] == stored
        assert pixels[0, row, col] == pytest.approx(value, abs=1e-3)
    hu = raw.astype(np.float64) * 1 - 1024
    np.testing.assert_allclose(pixels[0], window_by_hand(hu, 40, 100), atol=1e-3)


def test_monochrome1_is_inverted_after_windowing():
    path = data_file("RG1_UNCR.dcm")
    header = pydicom.dcmread(path)
    assert header.PhotometricInterpretation == "MONOCHROME1"
    assert (float(header.WindowCenter), float(header.WindowWidth)) == (15000, 30000)
    assert "RescaleSlope" not in header

    pixels, patient = read_dicom(path)
    assert patient == "9RG1"
    raw = header.pixel_array
    # window [0, 30000]; MONOCHROME1 means high values are dark: 255 - v / 30000 * 255
    by_hand = {(0, 0): (18889, 94.4435), (1000, 900): (3606, 224.349), (500, 500): (14591, 130.9765)}
    for (row, col), (stored, value) in by_hand.items():
        assert raw[row, col] == stored
        assert pixels[0, row, col] == pytest.approx(value, abs=1e-3)
    np.testing.assert_allclose(pixels[0], 255 - window_by_hand(raw.astype(np.float64), 15000, 30000), atol=1e-3)


def test_an_explicit_window_overrides_the_header():
    path = data_file("693_UNCR.dcm")
    pixels, _ = read_dicom(path, (Window(0, 2000),))
    # window [-1000, 1000] HU
    assert pixels[0, 256, 256] == pytest.approx(130.56, abs=1e-3)  # HU 24: 1024 / 2000 * 255
    assert pixels[0, 256, 100] == pytest.approx(4.9725, abs=1e-3)  # HU -961: 39 / 2000 * 255
    hu = pydicom.dcmread(path).pixel_array.astype(np.float64) - 1024
    np.testing.assert_allclose(pixels[0], window_by_hand(hu, 0, 2000), atol=1e-3)

    several, _ = ImageFile(path, windows=parse_windows("multi")).load()
    assert several.shape == (3, 512, 512)
    for channel, window in zip(several, NAMED_WINDOWS.values()):
        np.testing.assert_allclose(channel, window_by_hand(hu, window.center, window.width), atol=1e-3)


def test_without_a_header_window_the_range_is_stretched(tmp_path):
    path = data_file("CT_small.dcm")
    assert "WindowCenter" not in pydicom.dcmread(path)
    pixels, _ = read_dicom(path)
    hu = pydicom.dcmread(path).pixel_array.astype(np.float64) - 1024
    np.testing.assert_allclose(pixels[0], (hu - hu.min()) / (hu.max() - hu.min()) * 255, atol=1e-3)


def test_slope_intercept_and_the_first_of_several_header_windows(tmp_path):
    path, raw = copy_of_ct_small(
        tmp_path, RescaleSlope=2, RescaleIntercept=-2000, WindowCenter=[400, 50], WindowWidth=[1000, 350]
    )
    pixels, _ = read_dicom(path)
    np.testing.assert_allclose(pixels[0], window_by_hand(raw * 2 - 2000, 400, 1000), atol=1e-3)
    # stored 1000 -> HU 0 -> (0 - (400 - 500)) / 1000 * 255 = 25.5
    row, col = np.argwhere(raw == 1000)[0]
    assert pixels[0, row, col] == pytest.approx(25.5, abs=1e-3)


def test_compressed_multi_window_file():
    """JPEG 2000: Pillow (a dependency) decodes it, so a decoder error is a failure, not a skip."""
    path = data_file("J2K_pixelrep_mismatch.dcm")
    header = pydicom.dcmread(path)
    raw = header.pixel_array.astype(np.float64)
    assert list(header.WindowWidth) == [100, 100, 200]
    pixels, _ = read_dicom(path)
    hu = raw * float(header.RescaleSlope) + float(header.RescaleIntercept)
    np.testing.assert_allclose(pixels[0], window_by_hand(hu, 40, 100), atol=1e-3)


def test_monochrome1_inverts_a_copy_of_the_same_pixels(tmp_path):
    normal, _ = copy_of_ct_small(tmp_path, "m2.dcm")
    inverted, _ = copy_of_ct_small(tmp_path, "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    windows = (Window(40, 400),)
    np.testing.assert_allclose(read_dicom(inverted, windows)[0], 255 - read_dicom(normal, windows)[0], atol=1e-4)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_dicom_raises(tmp_path, keep):
    data = open(data_file("CT_small.dcm"), "rb").read()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="pixel data"):
        ImageFile(str(path)).load()


def test_not_a_dicom_file_raises(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not a dicom file" * 20)
    with pytest.raises(Exception, match="DICM"):
        read_dicom(path)


def test_window_specs():
    assert parse_windows("brain") == (Window(40, 80),)
    assert parse_windows("multi") == (Window(40, 80), Window(80, 200), Window(600, 2800))
    assert parse_windows("-600, 1500") == (Window(-600, 1500),)
    assert parse_windows(None) is None
    for bad in ("lung", "40", "40,80,1", "a,b"):
        with pytest.raises(ValueError, match="unknown window"):
            parse_windows(bad)
    with pytest.raises(ValueError, match="width must be > 0"):
        parse_windows("40,0")


def test_a_header_window_of_width_zero_fails_the_file(tmp_path):
    path, _ = copy_of_ct_small(tmp_path, WindowCenter=40, WindowWidth=0)
    with pytest.raises(ValueError, match="width must be > 0"):
        read_dicom(path)


def test_nifti_slice_scaling_and_window(tmp_path):
    i, j, k = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    stored = (100 * k + 10 * i + j).astype(np.int16)  # each voxel's value names its position
    image = nibabel.Nifti1Image(stored, np.eye(4))
    image.header["scl_slope"], image.header["scl_inter"] = 2, -100
    path = tmp_path / "volume.nii.gz"
    nibabel.save(image, path)

    pixels = read_nifti(path, windows=(Window(300, 200),))
    assert pixels.shape == (1, 5, 6)  # the middle slice k = 2, rotated: (i, j) -> rows of j, columns of i
    # top-left pixel = voxel (0, 4, 2): stored 204 -> 2 * 204 - 100 = 308 -> (308 - 200) / 200 * 255
    assert pixels[0, 0, 0] == pytest.approx(137.7, abs=1e-3)
    # bottom-right = voxel (5, 0, 2): stored 250 -> 400 -> above the window
    assert pixels[0, 4, 5] == 255
    expected = window_by_hand(np.rot90(stored[:, :, 2] * 2.0 - 100), 300, 200)
    np.testing.assert_allclose(pixels[0], expected, atol=1e-3)

    first = read_nifti(path, slice_index=0)  # no window: min-max of that slice
    plane = np.rot90(stored[:, :, 0] * 2.0 - 100)
    np.testing.assert_allclose(first[0], (plane - plane.min()) / (plane.max() - plane.min()) * 255, atol=1e-3)
    with pytest.raises(ValueError, match="outside"):
        read_nifti(path, slice_index=4)
