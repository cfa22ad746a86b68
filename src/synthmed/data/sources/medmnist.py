"""medmnist: one MedMNIST (v2 or MedMNIST+) ``.npz`` file, with its official split.

``root`` is the ``.npz`` file itself, or a folder holding it. In a folder with several
files ``size`` picks one by MedMNIST's naming (``chestmnist.npz`` is 28 pixels,
``chestmnist_64.npz`` 64, ...); with a file, ``size`` is checked against its images.

The file holds ``{train,val,test}_images`` (uint8, N x H x W or N x H x W x 3) and
``{train,val,test}_labels`` (integers, N x L). L > 1 is a multi-label task (ChestMNIST):
the columns are the labels, each 0 or 1. L = 1 holds class ids, turned one-hot over
``max + 1`` classes, so that every image has an active label (see ``br35h``).

MedMNIST ships no patient ids, so every image is its own group, and its official split
is kept as published (the only split that results can be compared on).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthmed._io import open_npz, read_npz_member, sha256_file
from synthmed.data.imaging import ArrayImage
from synthmed.data.records import SPLITS, Record, SourceData
from synthmed.errors import DataError

# ChestMNIST's 14 columns, in its order, as the NIH ChestX-ray14 set names them.
CHESTMNIST_LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
DEFAULT_SIZE = 28  # MedMNIST files without a ``_<size>`` suffix


def find_npz(root: str | Path, size: int | None = None) -> Path:
    """The one ``.npz`` file that ``root`` (a file or a folder) and ``size`` designate."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError("not found: give a MedMNIST .npz file or the folder holding it", file=root)
    files = sorted(root.glob("*.npz"))
    if size is not None:
        files = [f for f in files if _size_from_name(f) == size]
    if len(files) != 1:
        wanted = "one .npz file" + (f" of size {size}" if size is not None else "")
        hint = " (pass size=... to choose)" if size is None and files else ""
        raise DataError(f"expected exactly {wanted}, found {[f.name for f in files]}{hint}", file=root)
    return files[0]


def _size_from_name(path: Path) -> int:
    match = re.search(r"_(\d+)$", path.stem)
    return int(match.group(1)) if match else DEFAULT_SIZE


def _read_arrays(path: Path, size: int | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Images and raw labels per split, with every key, shape and dtype checked."""
    images, labels = {}, {}
    with open_npz(path) as npz:
        for split in SPLITS:
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in npz.files:
                    raise DataError(f"missing array; the file has {sorted(npz.files)}", file=path, field=key)
                (images if key.endswith("images") else labels)[split] = read_npz_member(npz, key, path)
    for split in SPLITS:
        image_key, label_key = f"{split}_images", f"{split}_labels"
        x, y = images[split], labels[split]
        x0, y0 = images[SPLITS[0]], labels[SPLITS[0]]
        if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
            problem = f"{x.dtype} array of shape {x.shape}: expected uint8 N x H x W or N x H x W x 3"
        elif x.shape[1:] != x0.shape[1:]:
            problem = f"images of shape {x.shape[1:]}, the train images are {x0.shape[1:]}"
        elif size is not None and x.shape[1:3] != (size, size):
            problem = f"images are {x.shape[1]} x {x.shape[2]}, not the requested size {size}"
        else:
            problem = None
        if problem:
            raise DataError(problem, file=path, field=image_key)
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 2 or len(y) != len(x):
            problem = f"{y.dtype} array of shape {y.shape}: expected integers shaped {len(x)} x L"
        elif y.shape[1] != y0.shape[1]:
            problem = f"{y.shape[1]} label columns, the train labels have {y0.shape[1]}"
        if problem:
            raise DataError(problem, file=path, field=label_key)
    return images, labels


def _label_matrix(labels: dict[str, np.ndarray], multi_label: bool, path: Path) -> dict[str, np.ndarray]:
    """0/1 label rows per split: multi-label columns as they are, class ids one-hot."""
    for split, y in labels.items():
        bad = (y != 0) & (y != 1) if multi_label else y < 0
        if bad.any():
            i, j = np.argwhere(bad)[0]
            expected = "0 or 1" if multi_label else "a class id >= 0"
            problem = f"value {y[i, j]} at index [{i}, {j}] is not {expected}"
            raise DataError(problem, file=path, field=f"{split}_labels")
    if multi_label:
        return {split: y.astype(np.uint8) for split, y in labels.items()}
    n_classes = int(max(y.max(initial=0) for y in labels.values())) + 1
    return {split: np.eye(n_classes, dtype=np.uint8)[y[:, 0]] for split, y in labels.items()}


def load(root: str | Path, label_names: str | Sequence[str] | None = None, size: int | None = None) -> SourceData:
    """Records for every image of the file, in split order, with ``split`` set.

    ``label_names`` (a list or a comma-separated string) names the label columns, or the
    classes of a multi-class file; by default ``label_0``, ``label_1``, ... (ChestMNIST:
    the NIH ChestX-ray14 names).
    """
    path = find_npz(root, size)
    images, raw_labels = _read_arrays(path, size)
    multi_label = raw_labels[SPLITS[0]].shape[1] > 1
    labels = _label_matrix(raw_labels, multi_label, path)
    width = labels[SPLITS[0]].shape[1]
    if label_names is None:
        names = list(CHESTMNIST_LABELS) if multi_label and width == 14 else [f"label_{i}" for i in range(width)]
    else:
        names = [n.strip() for n in label_names.split(",")] if isinstance(label_names, str) else list(label_names)
        if len(names) != width:
            problem = f"{len(names)} label names given, the file has {width} labels"
            raise DataError(problem, file=path, field="label_names")

    records = []
    for split in SPLITS:
        for i, row in enumerate(labels[split].tolist()):
            key = f"{split}:{i}"
            records.append(
                Record(
                    key=key,
                    loader=ArrayImage(images[split][i]),
                    labels=tuple(row),
                    path=f"{path.name}:{split}_images[{i}]",
                    group=key,
                    split=split,
                )
            )
    # The store fingerprints records by their loaders' repr, which numpy abbreviates for
    # large images: the file's hash makes a changed file prepare again.
    params = {"file": str(path), "sha256": sha256_file(path), "size": int(images[SPLITS[0]].shape[1])}
    return SourceData("medmnist", names, records, params=params)
