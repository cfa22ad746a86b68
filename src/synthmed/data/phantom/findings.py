"""Each CheXpert finding as a change of the projected chest, placed where it belongs.

A finding function takes the atlas and a random generator and returns ``(delta, mask)``:
``delta`` is added to the attenuation line integral (mm of water; negative where air
replaces tissue) and ``mask`` (bool) is where the finding is, the lesion mask stored with
the image. Everything is in the atlas's unwarped frame; the renderer warps it with the
anatomy afterwards. Severity and position are drawn from ``rng``.

Lung findings replace lung by fluid or tissue along a ray: ``fill`` in 0..1 is the share of
the lung crossed by that ray that becomes water-dense, so the added attenuation is
``(1 - lung density) * lung thickness * fill`` and nothing is added outside the lung field
(a pleural effusion adds a fluid layer on top: at least a few centimetres of water per ray).
Their mask is where the fill reaches a quarter of its peak: the finding's own extent,
whatever its severity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from synthmed.data.phantom.atlas import COLS, ROWS, SIZE, Atlas

Finding = Callable[[Atlas, np.random.Generator], tuple[np.ndarray, np.ndarray]]
MASK_SHARE = 0.25  # a lung pixel is in a finding's mask where its fill is at least this share of the peak
FLUID_MM = (60.0, 100.0)  # water crossed by a ray through a pleural effusion's fluid layer
METAL_MM = (250.0, 400.0)  # water-equivalent of a wire or a device can: white on any radiograph


def smooth_noise(rng: np.random.Generator, scale: float) -> np.ndarray:
    """A random field in 0..1 whose blobs are about ``scale`` pixels across."""
    coarse = max(2, int(SIZE / scale))
    noise = Image.fromarray(rng.standard_normal((coarse, coarse)).astype(np.float32), mode="F")
    field = np.asarray(noise.resize((SIZE, SIZE), Image.BICUBIC))  # Pillow: ten times faster than ndimage.zoom
    low, high = field.min(), field.max()
    return (field - low) / (high - low + 1e-6)


def _side(rng: np.random.Generator) -> str:
    return "left" if rng.random() < 0.5 else "right"


def _random_pixel(rng: np.random.Generator, where: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(where)
    i = rng.integers(len(rows))
    return int(rows[i]), int(cols[i])


def _lung_fill(atlas: Atlas, fill: np.ndarray, field: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fluid-dense filling of the lung by ``fill`` (0..1), inside ``field`` (default: both lungs)."""
    field = atlas.lung_field if field is None else field
    fill = np.clip(fill, 0.0, 1.0) * field
    delta = (1.0 - atlas.lung_density) * atlas.lung * fill
    return delta.astype(np.float32), fill >= max(MASK_SHARE * float(fill.max()), 1e-3)


def _scaled(thickness: np.ndarray, centre: tuple[float, float], scale_rows: float, scale_cols: float) -> np.ndarray:
    """A structure scaled about ``centre`` in the image plane; for parallel rays its depth scales with it too."""
    r0, c0 = centre
    coordinates = [r0 + (ROWS - r0) / scale_rows, c0 + (COLS - c0) / scale_cols]
    return ndimage.map_coordinates(thickness, coordinates, order=1, mode="constant") * max(scale_rows, scale_cols)


def _enlarged(atlas: Atlas, thickness: np.ndarray, scale_rows: float, scale_cols: float,
              centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A soft-tissue structure grown into the lung around it: lung is replaced, nothing else moves."""
    grown = _scaled(thickness, centre, scale_rows, scale_cols)
    displaced = np.minimum(np.maximum(grown - thickness, 0.0), atlas.lung)
    delta = (atlas.soft_density - atlas.lung_density) * displaced
    return delta.astype(np.float32), displaced > 2.0  # where the silhouette grew


def _centroid(weights: np.ndarray) -> tuple[float, float]:
    total = weights.sum()
    return float((ROWS * weights).sum() / total), float((COLS * weights).sum() / total)


def _lateral(atlas: Atlas, side: str) -> np.ndarray:
    """0 at the lung field's medial edge, 1 at its lateral edge (per row, by column)."""
    cols = COLS[0][atlas.sides[side].any(axis=0)]
    medial, lateral = (cols.min(), cols.max()) if side == "left" else (cols.max(), cols.min())
    return np.clip((COLS - medial) / (lateral - medial), 0.0, 1.0)


def _rows_of(mask: np.ndarray) -> tuple[int, int]:
    rows = np.nonzero(mask.any(axis=1))[0]
    return int(rows.min()), int(rows.max())


# ---- the findings ---------------------------------------------------------------------------------


def pleural_effusion(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fluid at the lung base, one side or both, its surface rising laterally (a meniscus)."""
    sides = ["left", "right"] if rng.random() < 0.4 else [_side(rng)]
    fill = np.zeros((SIZE, SIZE), np.float32)
    for side in sides:
        top, bottom = _rows_of(atlas.sides[side])
        depth = rng.uniform(0.2, 0.45) * (bottom - top)  # fluid height at the medial side
        meniscus = rng.uniform(0.3, 0.8) * depth * _lateral(atlas, side) ** 2
        level = bottom - depth - meniscus  # the fluid's upper surface, row per column
        # Fluid layers posteriorly, so rays cross more of it lower down: the density grows below the surface.
        fill += np.clip((ROWS - level) / rng.uniform(4.0, 12.0), 0.0, 1.0) * rng.uniform(0.85, 1.0) * atlas.sides[side]
    fill = np.clip(fill, 0.0, 1.0)
    # The fluid lies in the pleural space behind the lung, so a ray crosses centimetres of it even at the
    # base, where the lung it compresses is thin: at least FLUID_MM of water, or all the lung replaced;
    # but no ray through it crosses more than the densest anatomy does (spine, upper abdomen): fluid is
    # white, not whiter than the rest of the body.
    thickness = np.maximum((1.0 - atlas.lung_density) * atlas.lung, rng.uniform(*FLUID_MM))
    ceiling = np.maximum(np.percentile(atlas.tissue, 99.0) - atlas.tissue, 0.0)
    return np.minimum(thickness * fill, ceiling).astype(np.float32), fill >= MASK_SHARE * float(fill.max())


def pneumothorax(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Air between the chest wall and a collapsed lung: a lucent apical-lateral rim without lung markings."""
    side = _side(rng)
    top, bottom = _rows_of(atlas.sides[side])
    width = rng.uniform(12.0, 28.0)
    distance = atlas.edge_distance[side]
    reach = top + rng.uniform(0.5, 0.85) * (bottom - top)
    rim = atlas.sides[side] & (distance <= width) & (ROWS <= reach) & (_lateral(atlas, side) > 0.3)
    pleural_line = atlas.sides[side] & (np.abs(distance - width) < 1.2) & (ROWS <= reach)
    # The collapsed lung's edge, a band inside the pleural line, holds the tissue that left the rim: denser.
    collapsed = atlas.sides[side] & (distance > width) & (distance <= 1.8 * width) & (ROWS <= reach)
    delta = (-atlas.lung_attenuation * rim + rng.uniform(6.0, 10.0) * pleural_line
             + (1.0 - atlas.lung_density) * atlas.lung * rng.uniform(0.5, 0.8) * collapsed)
    return delta.astype(np.float32), rim


def cardiomegaly(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The heart enlarged about its centre, mostly sideways, into the lungs."""
    scale = rng.uniform(1.3, 1.6)
    return _enlarged(atlas, atlas.heart, 1.0 + (scale - 1.0) * 0.5, scale, _centroid(atlas.heart))


def enlarged_cardiomediastinum(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The upper mediastinum (the vessels above the heart) widened about the midline."""
    upper = atlas.mediastinum * (ROWS < _centroid(atlas.heart)[0])
    return _enlarged(atlas, upper, 1.0, rng.uniform(1.8, 2.5), _centroid(upper))


def consolidation(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dense, sharply bounded filling of part of one lobe (lobar or segmental)."""
    lobe = rng.choice(list(atlas.lobes), p=[0.15, 0.3, 0.15, 0.1, 0.3])
    share = np.clip(atlas.lobes[lobe] / np.maximum(atlas.lung, 1.0), 0.0, 1.0)
    field = smooth_noise(rng, 48.0)
    extent = field >= np.quantile(field[share > 0.5], rng.uniform(0.0, 0.3))  # 70-100 % of the lobe
    fill = ndimage.gaussian_filter(share * extent, 1.5) * rng.uniform(0.9, 1.0)
    return _lung_fill(atlas, fill)


def pneumonia(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patchy, ill-defined clusters of blobs around one spot, mostly in a lower zone."""
    lower = atlas.lobes["left lower"] + atlas.lobes["right lower"] + atlas.lobes["right middle"] > 10.0
    row, col = _random_pixel(rng, lower & atlas.lung_field)
    fill = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(rng.integers(5, 10)):
        r, c = row + rng.normal(0, 14), col + rng.normal(0, 12)
        radius = rng.uniform(8.0, 16.0)
        fill += np.exp(-((ROWS - r) ** 2 + (COLS - c) ** 2) / (2 * radius**2))
    fill = np.clip(fill, 0, 1) * (0.6 + 0.4 * smooth_noise(rng, 8.0)) * rng.uniform(0.7, 0.95)
    return _lung_fill(atlas, fill)


def lung_opacity(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hazy, multifocal opacity: soft patches of a random field anywhere in the lungs."""
    field = smooth_noise(rng, 32.0)
    threshold = np.quantile(field[atlas.lung_field], rng.uniform(0.6, 0.85))  # 15-40 % of the lung fields
    fill = np.clip((field - threshold) / (1.0 - threshold), 0, 1) ** 0.5 * rng.uniform(0.65, 0.9)
    return _lung_fill(atlas, fill)


def edema(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral perihilar haze (a butterfly) with short horizontal septal lines at the bases."""
    fill = np.zeros((SIZE, SIZE), np.float32)
    spread = rng.uniform(26.0, 40.0)
    for side in ("left", "right"):
        top, bottom = _rows_of(atlas.sides[side])
        hilum_row = top + 0.55 * (bottom - top)
        hilum_col = COLS[0][_lateral(atlas, side)[0] == 0.0][-1 if side == "left" else 0]  # the medial edge
        fill += np.exp(-((ROWS - hilum_row) ** 2 / 1.5 + (COLS - hilum_col) ** 2) / (2 * spread**2))
        septal = (np.abs(((ROWS - bottom) % 6) - 3) < 0.7) & (ROWS > bottom - 30) & (_lateral(atlas, side) > 0.75)
        fill += 0.6 * septal * atlas.sides[side]
    return _lung_fill(atlas, fill * rng.uniform(0.8, 1.0))


def atelectasis(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plate-like (discoid) band across the lower half of one lung."""
    side = _side(rng)
    top, bottom = _rows_of(atlas.sides[side])
    row = rng.uniform(top + 0.55 * (bottom - top), top + 0.85 * (bottom - top))
    tilt = rng.uniform(-0.25, 0.25)
    centre_col = float(COLS[0][atlas.sides[side].any(axis=0)].mean())
    distance = np.abs(ROWS - row - tilt * (COLS - centre_col))
    band = np.clip(rng.uniform(4.0, 7.0) + 1.0 - distance, 0.0, 1.0) * rng.uniform(0.9, 1.0)
    return _lung_fill(atlas, band, atlas.sides[side])


def lung_lesion(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A round nodule or mass (a sphere of soft tissue) well inside a lung."""
    side = _side(rng)
    radius = rng.uniform(7.0, 16.0)
    inside = atlas.edge_distance[side] > radius + 2
    if not inside.any():
        inside = atlas.sides[side]
    row, col = _random_pixel(rng, inside)
    squared = ((ROWS - row) ** 2 + (COLS - col) ** 2) / radius**2
    pixel_mm = 360.0 / SIZE  # the sphere's depth along the ray, in mm
    depth = 2 * radius * pixel_mm * np.sqrt(np.clip(1.0 - squared, 0.0, None))
    displaced = np.minimum(depth, atlas.lung)
    delta = (atlas.soft_density - atlas.lung_density) * displaced * atlas.sides[side]
    return delta.astype(np.float32), (squared <= 1.0) & atlas.sides[side]


def pleural_other(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pleural thickening: a dense band along the lateral chest wall or an apical cap."""
    side = _side(rng)
    top, bottom = _rows_of(atlas.sides[side])
    start = rng.uniform(top, top + 0.6 * (bottom - top))
    span = rng.uniform(0.15, 0.4) * (bottom - top)
    band = (atlas.sides[side] & (atlas.edge_distance[side] <= rng.uniform(4.0, 8.0))
            & (ROWS >= start) & (ROWS <= start + span) & (_lateral(atlas, side) > 0.4))
    delta = ndimage.gaussian_filter(band.astype(np.float32), 0.7) * rng.uniform(25.0, 45.0)
    return delta, band


def fracture(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rib broken across its shaft: a lucent gap and a step-off of one fragment."""
    ribs = [i for i in range(len(atlas.ribs)) if (i % 12) in range(2, 10) and atlas.ribs[i].max() > 5.0]
    rib = atlas.ribs[rng.choice(ribs)]
    row, col = _random_pixel(rng, rib > 0.6 * rib.max())
    angle = rng.uniform(-0.5, 0.5) + np.pi / 2  # across the rib, which runs roughly sideways
    along = (ROWS - row) * np.sin(angle) + (COLS - col) * np.cos(angle)
    near = ((ROWS - row) ** 2 + (COLS - col) ** 2) <= 10.0**2
    gap = np.clip(rng.uniform(2.0, 3.5) - np.abs(along), 0.0, 1.0) * near
    step = rng.uniform(2.5, 4.5) * rng.choice([-1, 1])
    shifted = ndimage.shift(rib, (step, 0.0), order=1)
    delta = -rib * gap + (shifted - rib) * (along > 0) * near * (1 - gap)
    return delta.astype(np.float32), near & (rib > 0.2 * rib.max())


def support_devices(atlas: Atlas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Radio-opaque lines (central line, tube) and, sometimes, a pacemaker: wires and the pacemaker's can are
    metal (METAL_MM), much denser than any tissue; the tube is plastic with a radio-opaque stripe."""
    devices = np.zeros((SIZE, SIZE), np.float32)
    svc_row, svc_col = _centroid(atlas.svc)
    trachea_row, trachea_col = _centroid(atlas.trachea)
    kinds = [k for k in ("central line", "tube", "pacemaker") if rng.random() < 0.5] or ["central line"]
    for kind in kinds:
        if kind == "central line":  # from below a clavicle to the SVC, curving in
            start = (rng.uniform(30, 60), rng.choice([rng.uniform(20, 60), rng.uniform(196, 236)]))
            end = (svc_row + rng.uniform(0, 25), svc_col + rng.normal(0, 3))
            bend = (start[0] + rng.uniform(-5, 20), (start[1] + end[1]) / 2)
            devices += _line(_bezier(start, bend, end), rng.uniform(*METAL_MM), width=1.4)  # a 2-4 mm catheter
        elif kind == "tube":  # endotracheal tube down the trachea
            end_row = trachea_row + rng.uniform(0, 30)
            path = np.stack([np.linspace(0, end_row, 80), trachea_col + rng.normal(0, 2) + np.zeros(80)], 1)
            devices += _line(path, rng.uniform(80.0, 140.0), width=1.6)
        else:  # the generator's can under the left clavicle, with a lead to the heart
            row, col = rng.uniform(35, 70), rng.uniform(170, 215)
            half_h, half_w = rng.uniform(8, 12), rng.uniform(10, 15)
            box = np.maximum(np.abs(ROWS - row) / half_h, np.abs(COLS - col) / half_w)
            devices += ndimage.gaussian_filter((box <= 1.0).astype(np.float32), 0.7) * rng.uniform(*METAL_MM)
            heart_row, heart_col = _centroid(atlas.heart)
            lead = _bezier((row, col - half_w), (svc_row, svc_col), (heart_row, heart_col))
            devices += _line(lead, rng.uniform(*METAL_MM), width=1.2)
    return devices, ndimage.binary_dilation(devices > 10.0, iterations=1)


def _bezier(start, bend, end, n: int = 120) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.array(start) + 2 * (1 - t) * t * np.array(bend) + t**2 * np.array(end)


def _line(points: np.ndarray, density: float, width: float = 0.8) -> np.ndarray:
    """A thin dense stripe through ``points`` (row, col), ``density`` mm of water at its centre."""
    canvas = np.zeros((SIZE, SIZE), np.float32)
    rows, cols = np.clip(np.rint(points).astype(int), 0, SIZE - 1).T
    canvas[rows, cols] = 1.0
    canvas = ndimage.gaussian_filter(canvas, width)
    return canvas / max(float(canvas.max()), 1e-6) * density


FINDINGS: dict[str, Finding] = {
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
    "Cardiomegaly": cardiomegaly,
    "Lung Opacity": lung_opacity,
    "Lung Lesion": lung_lesion,
    "Edema": edema,
    "Consolidation": consolidation,
    "Pneumonia": pneumonia,
    "Atelectasis": atelectasis,
    "Pneumothorax": pneumothorax,
    "Pleural Effusion": pleural_effusion,
    "Pleural Other": pleural_other,
    "Fracture": fracture,
    "Support Devices": support_devices,
}
# Findings whose mask lies in the lung fields by construction (the tests check it).
LUNG_FINDINGS = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                 "Pneumothorax", "Pleural Effusion", "Pleural Other")
