"""rsna-ich: the Kaggle RSNA intracranial haemorrhage head CTs (``stage_2_train.csv`` + DICOMs).

The CSV is long-format: one row ``ID_<image>_<type>,Label`` per image and type, the types
being the five haemorrhage subtypes and ``any``. It is pivoted to the paper's six labels:
the five subtypes plus "No Finding" (none of the five), which replaces ``any`` so that every
label vector has an active label (see ``br35h``). ``Label`` may be a probability; any value
above 0 counts as present.

The CSV has no patient id: the records leave ``group`` unset and the store takes PatientID
from each DICOM header (it keeps only a hash of it). About six in seven images show no
haemorrhage, so the no-finding images are undersampled (seeded) to at most
``max_no_finding_fraction`` of the kept images.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synthmed.data.imaging import ImageFile, parse_windows
from synthmed.data.records import Record, SourceData
from synthmed.data.sources._tables import check_unique, read_table
from synthmed.errors import DataError

SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
LABEL_NAMES = [*SUBTYPES, "No Finding"]
KAGGLE_TYPES = [*SUBTYPES, "any"]
ID_PATTERN = rf"^(?P<image>ID_[0-9A-Za-z]+)_(?P<type>{'|'.join(KAGGLE_TYPES)})$"


def labels_from_csv(csv_path: str | Path) -> pd.DataFrame:
    """One row per image (sorted by id): the five subtypes and ``any`` as 0/1, and ``line``,
    the CSV line number of the image's first row (for error messages)."""
    table = read_table(csv_path, ["ID", "Label"])
    # Arrow's C++ regex: the real CSV has 4.5M rows, where pandas' str.extract takes ~25 s.
    matched = pc.extract_regex(pa.array(table["ID"].to_numpy(), type=pa.string()), ID_PATTERN)
    # flatten(), unlike field(), makes a non-matching row null in every field.
    image_ids, types = (field.to_numpy(zero_copy_only=False) for field in matched.flatten())
    parts = pd.DataFrame({"image": image_ids, "type": types}, index=table.index)
    if parts["image"].isna().any():
        line = int(parts["image"].isna().idxmax())
        raise DataError(
            f"malformed ID {table['ID'][line]!r}: expected ID_<image>_<type> with type one of {KAGGLE_TYPES}",
            file=csv_path, row=line, field="ID",
        )
    value = pd.to_numeric(table["Label"], errors="coerce")
    bad = value.isna() | ~value.between(0.0, 1.0)
    if bad.any():
        line = int(bad.idxmax())
        raise DataError(
            f"label {table['Label'][line]!r} is not a number in [0, 1]", file=csv_path, row=line, field="Label"
        )
    # Kaggle's stage_1/stage_2 CSVs repeat a few rows verbatim; only a repeat that disagrees is an error.
    long = parts.assign(ID=table["ID"], value=value, positive=(value > 0).astype(np.uint8))
    long = long[~long.duplicated(["ID", "value"])]
    check_unique(long["ID"], file=csv_path, column="ID", what="image and type")

    wide = long.pivot(index="image", columns="type", values="positive").reindex(columns=KAGGLE_TYPES)
    wide["line"] = long.reset_index().groupby("image")["line"].min()
    missing = wide[KAGGLE_TYPES].isna()
    if missing.to_numpy().any():
        image = missing.any(axis=1).idxmax()
        absent = [t for t in KAGGLE_TYPES if missing.at[image, t]]
        raise DataError(
            f"image {image} has no row for type(s) {absent}; every image needs all of {KAGGLE_TYPES}",
            file=csv_path, row=int(wide.at[image, "line"]), field="ID",
        )
    wide = wide.astype(np.int64)
    inconsistent = wide["any"] != wide[SUBTYPES].max(axis=1)
    if inconsistent.any():
        image = inconsistent.idxmax()
        raise DataError(
            f"image {image}: 'any' is {wide.at[image, 'any']} but the subtypes are "
            f"{wide.loc[image, SUBTYPES].tolist()} (any must be 1 exactly when a subtype is)",
            file=csv_path, row=int(wide.at[image, "line"]), field="Label",
        )
    return wide


def undersample(no_finding: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices kept: every haemorrhage image and a seeded random subset of the others, as many
    as keep the no-finding share at or below ``fraction``."""
    positives, negatives = np.flatnonzero(~no_finding), np.flatnonzero(no_finding)
    # Largest k with k / (positives + k) <= fraction; the epsilon absorbs float error at exact ratios.
    allowed = len(negatives) if fraction >= 1 else int(np.floor(fraction * len(positives) / (1 - fraction) + 1e-9))
    if allowed < len(negatives):
        negatives = np.random.default_rng(seed).choice(negatives, size=allowed, replace=False)
    return np.sort(np.concatenate([positives, negatives]))


def load(
    root: str | Path,
    csv: str = "stage_2_train.csv",
    images: str = "stage_2_train",
    window: str = "brain",
    seed: int = 0,
    max_no_finding_fraction: float = 0.5,
) -> SourceData:
    """Records for the images of ``root/csv`` whose DICOMs lie in ``root/images``.

    ``window``: ``brain`` (WL 40 / WW 80), ``subdural``, ``bone``, ``multi`` (those three as
    channels) or ``LEVEL,WIDTH`` in HU.
    """
    root = Path(root)
    try:
        windows = parse_windows(window)
    except ValueError as error:
        raise DataError(str(error), field="window") from None
    if not 0 <= max_no_finding_fraction <= 1:
        raise DataError(f"{max_no_finding_fraction} is not in [0, 1]", field="max_no_finding_fraction")
    csv_path = root / csv
    wide = labels_from_csv(csv_path)

    folder = root / images
    if not folder.is_dir():
        raise DataError("DICOM folder not found", file=folder)
    # An image without its <id>.dcm is not checked here: like an unreadable one, it is skipped when
    # decoded and counted against max_bad_fraction, so one lost file does not stop the whole set.
    no_finding = (wide["any"] == 0).to_numpy()
    kept = undersample(no_finding, max_no_finding_fraction, seed)
    labels = np.column_stack([wide[SUBTYPES].to_numpy(), no_finding]).astype(int)
    ids = wide.index.to_numpy()
    records = [
        Record(
            key=ids[i],
            loader=ImageFile(str(folder / f"{ids[i]}.dcm"), windows=windows),
            labels=tuple(labels[i].tolist()),
            path=f"{images}/{ids[i]}.dcm",
        )
        for i in kept
    ]
    if not records:
        raise DataError("no image shows a haemorrhage, so undersampling keeps none", file=csv_path)
    params = {
        "root": str(root),
        "csv": csv,
        "images": images,
        "window": window,
        "windows": [[w.center, w.width] for w in windows or ()],
        "seed": seed,
        "max_no_finding_fraction": max_no_finding_fraction,
        "counts": {
            "images": len(wide),
            "haemorrhage": int((~no_finding).sum()),
            "no_finding": int(no_finding.sum()),
            "no_finding_kept": int(no_finding[kept].sum()),
            "kept": len(kept),
        },
    }
    versions = {"pydicom": importlib.metadata.version("pydicom")}
    return SourceData("rsna-ich", list(LABEL_NAMES), records, params=params, versions=versions)
