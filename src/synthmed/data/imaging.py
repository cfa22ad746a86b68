"""Decoding images (PNG/JPEG, DICOM, NIfTI, arrays) and turning them into the store's pyramid.

Every loader returns float32 pixels shaped (channels, height, width) in 0..255 plus the
patient id where the file carries one. The pipeline then resizes to a square base size,
scales the intensity and builds the lower resolutions by repeated 2x2 box averaging, as
the paper's code did.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ""}
NIFTI_SUFFIXES = {".nii", ".nii.gz"}
SCALINGS = ("max", "minmax", "none")


@dataclass(frozen=True)
class Window:
    """A CT/MR display window: values in [center - width/2, center + width/2] map to 0..255."""

    center: float
    width: float

    def __post_init__(self) -> None:
        # A zero or negative width (seen in broken headers) would divide by zero or flip the image.
        if not (np.isfinite(self.center) and np.isfinite(self.width) and self.width > 0):
            raise ValueError(f"invalid window: level {self.center}, width {self.width} (width must be > 0)")

    def apply(self, values: np.ndarray) -> np.ndarray:
        low = self.center - self.width / 2
        return np.clip((values - low) / self.width, 0.0, 1.0).astype(np.float32) * 255.0


# Standard head-CT windows (level / width in HU); "multi" stacks them as channels.
NAMED_WINDOWS = {
    "brain": Window(40, 80),
    "subdural": Window(80, 200),
    "bone": Window(600, 2800),
}


def parse_windows(spec: str | list | tuple | None) -> tuple[Window, ...] | None:
    """Accept ``"brain"``, ``"multi"``, ``"40,80"``, ``[40, 80]`` or a list of those."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "multi":
            return tuple(NAMED_WINDOWS.values())
        if spec in NAMED_WINDOWS:
            return (NAMED_WINDOWS[spec],)
        try:
            center, width = (float(part) for part in spec.split(","))
        except ValueError:
            raise ValueError(
                f"unknown window {spec!r}: use one of {sorted(NAMED_WINDOWS)}, 'multi' or 'LEVEL,WIDTH'"
            ) from None
        return (Window(center, width),)
    if isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        return (Window(float(spec[0]), float(spec[1])),)
    windows: list[Window] = []
    for item in spec:
        windows.extend(parse_windows(item) or ())
    return tuple(windows)


def _minmax_to_255(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low) * 255.0).astype(np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, the same weights Pillow's ``convert('L')`` uses."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


def read_raster(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here with its name
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float32)
            pixels = pixels / 257.0 if pixels.max() > 255 else pixels
        else:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return pixels[None]


def read_dicom(path: str | Path, windows: tuple[Window, ...] | None = None) -> tuple[np.ndarray, str | None]:
    """Pixels in HU (slope/intercept applied), windowed to 0..255, MONOCHROME1 inverted.

    Without explicit ``windows`` the first window in the header is used, else min-max.
    """
    import pydicom

    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise ValueError("DICOM file has no pixel data")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:  # checked before decoding, which would read every frame
        raise ValueError(f"multi-frame DICOM ({frames} frames) is not a 2D image")
    # Raises on truncated or undecodable pixel data; the store reports it per file.
    pixels = dataset.pixel_array.astype(np.float32)
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        pixels = _gray(pixels)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    values = pixels * slope + intercept
    if windows is None:
        windows = _header_window(dataset)
    channels = [w.apply(values) for w in windows] if windows else [_minmax_to_255(values)]
    if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
        channels = [255.0 - c for c in channels]
    patient = dataset.get("PatientID")
    return np.stack(channels).astype(np.float32), (str(patient) if patient not in (None, "") else None)


def _header_window(dataset) -> tuple[Window, ...] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    return (Window(_first(center), _first(width)),)


def _first(value) -> float:
    """Window tags may hold several values (one window per VOI); the first is the default."""
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


def read_nifti(path: str | Path, slice_index: int | None = None, windows: tuple[Window, ...] | None = None) -> np.ndarray:
    """One axial slice (last axis; the middle one by default), windowed or min-max scaled."""
    import nibabel

    volume = np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32)
    if volume.ndim == 2:
        plane = volume
    elif volume.ndim == 3:
        index = volume.shape[2] // 2 if slice_index is None else slice_index
        if not 0 <= index < volume.shape[2]:
            raise ValueError(f"slice {index} is outside the volume's {volume.shape[2]} slices")
        plane = volume[:, :, index]
    else:
        raise ValueError(f"NIfTI with {volume.ndim} dimensions: expected a 2D image or a 3D volume")
    plane = np.rot90(plane)  # voxel (i, j) -> image rows top-down, as viewers show an axial slice
    channels = [w.apply(plane) for w in windows] if windows else [_minmax_to_255(plane)]
    return np.stack(channels).astype(np.float32)


def image_kind(path: str | Path) -> str:
    name = str(path).lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    suffix = Path(name).suffix
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    raise ValueError(f"unsupported image type {suffix!r}: expected PNG, JPEG, DICOM or NIfTI")


@dataclass(frozen=True)
class ImageFile:
    """An image file on disk; ``windows`` and ``slice_index`` apply to DICOM and NIfTI."""

    path: str
    windows: tuple[Window, ...] | None = None
    slice_index: int | None = None

    def fingerprint(self) -> str:
        """Path, options, size and modification time: a replaced file is decoded again."""
        stat = os.stat(self.path) if os.path.exists(self.path) else None
        return f"{self!r}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}"

    def load(self) -> tuple[np.ndarray, str | None]:
        if not os.path.isfile(self.path):  # the same words for every format (pydicom's differ)
            raise FileNotFoundError(f"image file not found: {self.path}")
        kind = image_kind(self.path)
        if kind == "raster":
            return read_raster(self.path), None
        if kind == "dicom":
            return read_dicom(self.path, self.windows)
        return read_nifti(self.path, self.slice_index, self.windows), None


@dataclass(frozen=True)
class ArrayImage:
    """Pixels already in memory (MedMNIST): uint8 (H, W) or (H, W, 3)."""

    pixels: np.ndarray

    def __repr__(self) -> str:
        return f"ArrayImage(shape={self.pixels.shape}, dtype={self.pixels.dtype})"

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()

    def load(self) -> tuple[np.ndarray, str | None]:
        pixels = self.pixels.astype(np.float32)
        if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
            pixels = _gray(pixels)
        if pixels.ndim != 2:
            raise ValueError(f"array image of shape {self.pixels.shape}: expected (H, W) or (H, W, 3)")
        return pixels[None], None


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize every channel to size x size (aspect ratio not kept, as in the paper's code).

    Pillow's bilinear filter widens its support when shrinking, so this is anti-aliased.
    """
    return np.stack(
        [np.asarray(Image.fromarray(c, mode="F").resize((size, size), Image.BILINEAR)) for c in pixels]
    ).astype(np.float32)


def scale_intensity(pixels: np.ndarray, scaling: str) -> np.ndarray:
    """``max``: x / max * 255 per image (the paper); ``minmax``: stretch to 0..255; ``none``: clip."""
    if scaling == "max":
        peak = float(pixels.max())
        if peak <= 0:
            raise ValueError("image is blank (maximum intensity is 0)")
        return pixels / peak * 255.0
    if scaling == "minmax":
        return _minmax_to_255(pixels)
    if scaling == "none":
        return np.clip(pixels, 0, 255)
    raise ValueError(f"unknown scaling {scaling!r}: expected one of {SCALINGS}")


def box_pyramid(base: np.ndarray, resolutions: list[int]) -> dict[int, np.ndarray]:
    """Repeated 2x2 box averaging from the base size down; uint8 at each requested size."""
    wanted = set(resolutions)
    out: dict[int, np.ndarray] = {}
    level = base.astype(np.float32)
    while True:
        size = level.shape[-1]
        if size in wanted:
            out[size] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
        if size <= min(wanted):
            return out
        c, h, w = level.shape
        level = level.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


# every image is resized to the base size in float32 before box averaging: 4096 is 64 MiB a channel in each
# worker, 65536 would be 16 GiB (a prepare at -r 65536 was killed for memory)
MAX_RESOLUTION = 4096


def check_resolution(resolution: int) -> None:
    """A store holds square images of a power of two >= 4 pixels (box averaging halves them), up to MAX_RESOLUTION."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution {resolution} is not a power of two >= 4")
    if resolution > MAX_RESOLUTION:
        raise ValueError(f"resolution {resolution} is above {MAX_RESOLUTION}, the largest a store holds")


def base_size(resolutions: list[int]) -> int:
    """Images are resized to 256 (512 where asked for), then box-averaged down."""
    for r in resolutions:
        check_resolution(r)
    return max(256, max(resolutions))


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash (9x8 Lanczos thumbnail, horizontal gradient signs)."""
    peak = float(gray.max()) or 1.0
    image = Image.fromarray(np.clip(gray / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    thumb = np.asarray(image.resize((9, 8), Image.LANCZOS), dtype=np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def mask_dtype(n_labels: int) -> np.dtype:
    """The unsigned integer type whose bits hold one lesion mask per label."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_labels <= np.iinfo(dtype).bits:
            return np.dtype(dtype)
    raise ValueError(f"{n_labels} labels: lesion masks are stored as bits of one integer, at most 64")


def mask_pyramid(masks: np.ndarray, resolutions: list[int]) -> dict[int, np.ndarray]:
    """Lesion masks (labels, H, W) -> one bit field (R, R) per resolution: bit j is label j's mask.

    Resized to the base size by nearest neighbour, then halved by max pooling: a pixel is in a
    finding's mask when any part of it is, so a small finding is not lost at low resolution.
    """
    size = base_size(resolutions)
    level = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((size, size), Image.NEAREST))
                      for m in masks]).astype(bool)
    dtype = mask_dtype(len(masks))
    out: dict[int, np.ndarray] = {}
    while True:
        if level.shape[-1] in resolutions:
            bits = np.zeros(level.shape[1:], dtype)
            for j, mask in enumerate(level):
                bits |= mask.astype(dtype) << dtype.type(j)
            out[level.shape[-1]] = bits
        if level.shape[-1] <= min(resolutions):
            return out
        n, h, w = level.shape
        level = level.reshape(n, h // 2, 2, w // 2, 2).any(axis=(2, 4))


def unpack_masks(bits: np.ndarray, n_labels: int) -> np.ndarray:
    """Bit fields (..., R, R) -> bool masks (..., n_labels, R, R)."""
    bits = np.asarray(bits)
    shifts = np.arange(n_labels, dtype=bits.dtype).reshape(n_labels, 1, 1)
    return (bits[..., None, :, :] >> shifts) & 1 == 1


@dataclass
class Decoded:
    """What a worker sends back for one record; ``masks`` only from a source with lesion masks."""

    pyramid: dict[int, np.ndarray]
    dhash: int
    patient_id: str | None
    masks: dict[int, np.ndarray] | None = None


def decode(loader, resolutions: list[int], scaling: str, masks: bool = False) -> Decoded:
    """The pyramid of one image; with ``masks``, the loader's ``load_with_masks`` gives its lesion masks too."""
    if masks:
        (pixels, lesions), patient = loader.load_with_masks(), None
    else:
        pixels, patient = loader.load()
    if pixels.ndim != 3 or min(pixels.shape[1:]) < 2:
        raise ValueError(f"image of shape {tuple(pixels.shape)} is too small to use")
    if not np.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    code = dhash(pixels.mean(axis=0))
    base = scale_intensity(resize_square(pixels, base_size(resolutions)), scaling)
    if not masks:
        return Decoded(box_pyramid(base, resolutions), code, patient)
    if lesions.shape[1:] != pixels.shape[1:]:
        raise ValueError(f"lesion masks of shape {lesions.shape[1:]} do not match the image's {pixels.shape[1:]}")
    return Decoded(box_pyramid(base, resolutions), code, patient, mask_pyramid(lesions, resolutions))
