"""chexpert: the Stanford CheXpert chest radiographs (a ``CheXpert-v1.0`` or ``-small`` folder).

The root holds ``train.csv`` and ``valid.csv``. Their ``Path`` column starts with the
data set's own folder name (``CheXpert-v1.0-small/train/patient00001/...``), so that
first component is dropped when it equals the root's name; any other path is taken
relative to the root.

Labels follow the CheXpert paper: the 14 observations in its order; ``-1`` (uncertain)
becomes 1 under U-Ones (the default) or 0 under U-Zeros; a blank cell (not mentioned in
the report) is 0. Only frontal views are used, and rows with no positive label are
dropped: "No Finding" is itself a label, so an all-zero row is a study the labeller left
unlabelled, and a projection discriminator could not score it (see ``br35h``).

The patient id comes from the ``patientNNNNN`` folder of the path. No split is set: the
test labels are not public and valid.csv is only 200 patients, so the store makes its
patient-grouped 80/10/10 split of the pooled rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from synthmed.data.imaging import ImageFile
from synthmed.data.records import Record, SourceData
from synthmed.data.sources._tables import (
    BINARY,
    check_unique,
    parse_labels,
    read_table,
    resolve_in_root,
)
from synthmed.errors import DataError

FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
UNCERTAIN = {"ones": 1, "zeros": 0}  # U-Ones / U-Zeros
VIEWS = ("Frontal", "Lateral")


def labels_from_csv(csv_path: str | Path, uncertain: str = "ones") -> pd.DataFrame:
    """The rows ``load`` keeps, from the CSV alone (no image is opened).

    Columns ``path``, ``patient`` and the 14 findings (uint8 0/1); the index is the CSV
    line number (header = line 1), as in every error message.
    """
    if uncertain not in UNCERTAIN:
        raise DataError(
            f"unknown uncertain-label policy {uncertain!r}: expected 'ones' (U-Ones) or 'zeros' (U-Zeros)",
            field="uncertain",
        )
    table = read_table(csv_path, ["Path", "Frontal/Lateral", *FINDINGS])
    views = table["Frontal/Lateral"]
    unknown = ~views.isin(VIEWS)
    if unknown.any():
        line = int(unknown.idxmax())
        raise DataError(f"view {views[line]!r} is neither of {VIEWS}", file=csv_path, row=line, field="Frontal/Lateral")
    frontal = table[views == "Frontal"]
    check_unique(frontal["Path"], file=csv_path, column="Path", what="image path")
    upward = frontal["Path"].str.contains(r"(?:^|/)\.\.(?:/|$)")  # before the patient id, which it would lack
    if upward.any():
        line = int(upward.idxmax())
        raise DataError(f"path {frontal['Path'][line]!r} points outside the data folder ('..')",
                        file=csv_path, row=line, field="Path")

    patients = frontal["Path"].str.extract(r"(?:^|/)(patient\d+)(?:/|$)", expand=False)
    if patients.isna().any():
        line = int(patients.isna().idxmax())
        raise DataError(
            f"path {frontal['Path'][line]!r} has no patientNNNNN folder to take the patient id from",
            file=csv_path,
            row=line,
            field="Path",
        )
    values = {**BINARY, "-1": UNCERTAIN[uncertain], "-1.0": UNCERTAIN[uncertain]}
    labels = {name: parse_labels(frontal, name, csv_path, values=values, blank=0) for name in FINDINGS}
    out = pd.DataFrame({"path": frontal["Path"], "patient": patients, **labels}, index=frontal.index)
    return out[out[FINDINGS].to_numpy().any(axis=1)]


def load(
    root: str | Path,
    uncertain: str = "ones",
    csvs: str | Sequence[str] = ("train.csv", "valid.csv"),
) -> SourceData:
    """Records for the labelled frontal views listed in ``csvs`` (file names inside ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder: give the CheXpert folder that holds train.csv and valid.csv", file=root)
    csvs = [csvs] if isinstance(csvs, str) else list(csvs)
    folder_name = Path(os.path.abspath(root)).name
    records = []
    for name in csvs:
        csv_path = root / name
        table = labels_from_csv(csv_path, uncertain)
        label_rows = table[FINDINGS].to_numpy().tolist()
        for line, path, patient, labels in zip(table.index, table["path"], table["patient"], label_rows):
            parts = PurePosixPath(path).parts
            inside = "/".join(parts[1:]) if len(parts) > 1 and parts[0] == folder_name else path
            image, _ = resolve_in_root(root, inside, file=csv_path, row=int(line), column="Path")
            loader = ImageFile(str(image))
            records.append(Record(key=path, loader=loader, labels=tuple(labels), path=path, group=patient))
    params = {"root": str(root), "uncertain": uncertain, "csvs": csvs}
    return SourceData("chexpert", list(FINDINGS), records, params=params)
