"""folder: any labelled images listed in a CSV file (PNG, JPEG, DICOM or NIfTI).

The CSV (``labels.csv`` in ``root`` by default) has an image-path column, relative to
``root`` and staying inside it, and 0/1 label columns: by default every column that is
not the image, patient or slice column. Labels are strict: a blank cell is an error,
since guessing 0 for a missing label would teach the generator a wrong condition.

An optional patient column groups images by patient; a blank cell there leaves the
choice to the store (the DICOM header's PatientID, else near-duplicate hashing).
DICOM and NIfTI values are windowed with ``window`` (``"brain"``, ``"subdural"``,
``"bone"``, ``"multi"`` for all three as channels, or ``"LEVEL,WIDTH"``); without one a
DICOM uses its header window and a NIfTI slice is min-max scaled. A NIfTI volume gives
one axial slice: the one in ``slice_column`` (blank: the middle one).

Records keep the CSV's row order, so the same CSV always gives the same store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthmed.data.imaging import ImageFile, image_kind, parse_windows
from synthmed.data.records import Record, SourceData
from synthmed.data.sources._tables import (
    check_unique,
    first_repeat,
    parse_labels,
    read_table,
    resolve_in_root,
)
from synthmed.errors import DataError


def _column_list(columns: str | Sequence[str]) -> list[str]:
    """A list of column names, also from the command line's comma-separated form."""
    return [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)


def load(
    root: str | Path,
    csv: str = "labels.csv",
    image_column: str = "path",
    label_columns: str | Sequence[str] | None = None,
    patient_column: str | None = None,
    window: str | None = None,
    slice_column: str | None = None,
) -> SourceData:
    """Records for every row of ``root/csv``, in the CSV's order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder: give the folder that holds the images and the CSV", file=root)
    csv_path = root / csv
    try:
        windows = parse_windows(window)
    except ValueError as error:
        raise DataError(str(error), field="window") from None
    special = [c for c in (image_column, patient_column, slice_column) if c is not None]
    wanted = _column_list(label_columns) if label_columns is not None else []
    if repeat := first_repeat(wanted):  # the store would hold the column twice, under one name
        raise DataError(f"label column {repeat[0]!r} is listed {repeat[1]} times", field="label_columns")
    table = read_table(csv_path, special + wanted)
    names = wanted or [c for c in table.columns if c not in special]
    if not names:
        raise DataError(f"no label columns: the CSV has only {list(table.columns)}", file=csv_path)
    for name in names:
        if name in special:
            raise DataError("is both a label column and the image, patient or slice column", file=csv_path, field=name)
    labels = np.stack([parse_labels(table, name, csv_path) for name in names], axis=1).tolist()

    records = []
    for line, row_labels, value in zip(table.index, labels, table[image_column]):
        row = int(line)
        file, relative = resolve_in_root(root, value, file=csv_path, row=row, column=image_column)
        try:
            kind = image_kind(file)
        except ValueError as error:
            raise DataError(str(error), file=csv_path, row=row, field=image_column) from None
        slice_index = None
        if slice_column:
            slice_index = _slice_index(table[slice_column][line], kind, csv_path, row, slice_column)
        patient = table[patient_column][line] if patient_column else ""
        records.append(
            Record(
                # several slices of one volume are several images
                key=relative if slice_index is None else f"{relative}#{slice_index}",
                loader=ImageFile(str(file), windows=None if kind == "raster" else windows, slice_index=slice_index),
                labels=tuple(row_labels),
                path=relative,
                group=patient or None,
            )
        )
    keys = pd.Series([r.key for r in records], index=table.index)
    check_unique(keys, file=csv_path, column=image_column, what="image")
    params = {
        "root": str(root),
        "csv": csv,
        "image_column": image_column,
        "label_columns": names,
        "patient_column": patient_column,
        "window": window,
        "slice_column": slice_column,
    }
    return SourceData("folder", names, records, params=params)


def _slice_index(cell: str, kind: str, csv_path: Path, row: int, column: str) -> int | None:
    """The axial slice of a NIfTI row; a slice on any other image is a mistake in the CSV."""
    if cell == "":
        return None
    if kind != "nifti":
        problem = f"slice index {cell!r} given for an image that is not a NIfTI volume"
        raise DataError(problem, file=csv_path, row=row, field=column)
    if not (cell.isascii() and cell.isdigit()):
        raise DataError(f"slice index {cell!r} is not a whole number >= 0", file=csv_path, row=row, field=column)
    return int(cell)
