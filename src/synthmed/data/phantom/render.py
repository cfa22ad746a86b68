"""One phantom radiograph: findings, then anatomy variation, then the detector.

Per image, from its own seed: the findings of its label row are added to the atlas's line
integral (each with its mask); the patient varies in size (the line integral scales with
the body's depth), aspect, position, a small rotation and inspiration depth (the
diaphragm moves and the lungs stretch with it), all as one warp of the image and masks;
then a soft-tissue field (habitus), the exposure (photon count, so quantum noise),
detector blur and the display curve. Masks are warped with the image, so they stay on
their finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthmed.data.phantom.atlas import COLS, ROWS, SIZE, Atlas
from synthmed.data.phantom.findings import FINDINGS, smooth_noise

# Part of every phantom store's fingerprint: change it with anything that changes the pixels or
# masks, so that a store (or a half-made one) from the old renderer is made again, not resumed.
RENDER_VERSION = 1
WATER_MU = 0.02  # attenuation of water per mm at a chest radiograph's mean energy (~60-70 keV)


@dataclass
class Phantom:
    """A rendered image and what is known about it."""

    pixels: np.ndarray  # float32 (SIZE, SIZE), 0..255, bones bright
    masks: np.ndarray  # bool (n_labels, SIZE, SIZE); all False for absent findings and "No Finding"
    lung_field: np.ndarray  # bool (SIZE, SIZE): the lungs, warped like the image


def render(atlas: Atlas, label_names: Sequence[str], labels: Sequence[int], rng: np.random.Generator) -> Phantom:
    """The phantom of one label row. Findings draw from their own generator, one per label, so the
    same ``rng`` gives the same patient and exposure whatever the labels (and a finding looks the same
    beside any other)."""
    finding_seeds = rng.spawn(len(label_names))
    line_integral = atlas.tissue.copy()
    masks = np.zeros((len(label_names), SIZE, SIZE), bool)
    for j, (name, present) in enumerate(zip(label_names, labels)):
        if present and name in FINDINGS:
            delta, masks[j] = FINDINGS[name](atlas, finding_seeds[j])
            line_integral += delta
    line_integral -= _bowel_gas(atlas, rng)
    line_integral *= rng.uniform(0.85, 1.2)  # body depth

    coordinates = _anatomy_warp(atlas, rng)
    line_integral = ndimage.map_coordinates(line_integral, coordinates, order=1, mode="constant")
    masks = np.stack([_warp_mask(m, coordinates) if m.any() else m for m in masks])
    lung_field = _warp_mask(atlas.lung_field, coordinates)

    # soft tissue, breasts, habitus: inside the body only (it fades out where the body gets thin)
    body = np.clip(line_integral / 50.0, 0.0, 1.0)
    line_integral += (smooth_noise(rng, 64.0) - 0.5) * rng.uniform(10.0, 50.0) * body
    return Phantom(_detector(line_integral, _exposed_field(rng), rng), masks, lung_field)


def _exposed_field(rng: np.random.Generator) -> np.ndarray:
    """Inside the collimator's shutters, which often cut into the image on some sides."""
    top, bottom, left, right = rng.uniform(0.0, 0.12, size=4) * SIZE * (rng.random(4) < 0.7)
    return (ROWS >= top) & (ROWS <= SIZE - 1 - bottom) & (COLS >= left) & (COLS <= SIZE - 1 - right)


def _bowel_gas(atlas: Atlas, rng: np.random.Generator) -> np.ndarray:
    """Gas in the stomach and bowel under the diaphragm: lucent patches that differ in every person."""
    lungs = atlas.lung_field
    rows = np.nonzero(lungs.any(axis=1))[0]
    below = ROWS > rows.max() - 0.25 * (rows.max() - rows.min())  # the domes rise above the lungs' lowest edge
    abdomen = below & ~ndimage.binary_dilation(lungs, iterations=4)
    gas = np.clip(smooth_noise(rng, rng.uniform(16.0, 32.0)) - rng.uniform(0.45, 0.7), 0.0, None)
    gas = ndimage.gaussian_filter(gas * abdomen, 2.0) * rng.uniform(60.0, 160.0)
    return np.minimum(gas, 0.5 * atlas.tissue)  # gas displaces at most half of what a ray crosses


def _warp_mask(mask: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(mask.astype(np.float32), coordinates, order=1, mode="constant") >= 0.5


def _anatomy_warp(atlas: Atlas, rng: np.random.Generator) -> np.ndarray:
    """Source coordinates (2, SIZE, SIZE) of each output pixel: scale, aspect, rotation, shift, inspiration,
    and a smooth elastic deformation (hearts, lungs and ribs differ in shape between people)."""
    scale = rng.uniform(0.8, 1.3)  # framing: from a wide field to a tight collimation
    aspect = rng.uniform(0.88, 1.12)
    angle = np.deg2rad(rng.uniform(-8.0, 8.0))
    shift_rows, shift_cols = rng.uniform(-0.12, 0.12, size=2) * SIZE
    centre = (SIZE - 1) / 2
    rows, cols = ROWS - centre - shift_rows, COLS - centre - shift_cols
    cos, sin = np.cos(angle), np.sin(angle)
    source_rows = (cos * rows - sin * cols) / (scale * aspect) + centre
    source_cols = (sin * rows + cos * cols) / (scale / aspect) + centre
    # Inspiration: the chest between the lung apices and the diaphragm stretches by ``depth``,
    # and everything below it moves down by as much.
    top, bottom = np.nonzero(atlas.lung_field.any(axis=1))[0][[0, -1]]
    depth = rng.uniform(-0.08, 0.12)
    stretched_bottom = top + (bottom - top) * (1 + depth)
    source_rows = np.where(source_rows <= top, source_rows,
                           np.where(source_rows <= stretched_bottom, top + (source_rows - top) / (1 + depth),
                                    source_rows - (stretched_bottom - bottom)))
    elastic = rng.uniform(4.0, 12.0)  # pixels of displacement
    source_rows = source_rows + (smooth_noise(rng, 80.0) - 0.5) * 2 * elastic
    source_cols = source_cols + (smooth_noise(rng, 80.0) - 0.5) * 2 * elastic
    return np.stack([source_rows, source_cols]).astype(np.float32)


def _detector(line_integral: np.ndarray, exposed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon counts with quantum noise, detector blur, then the log image and a display curve.

    Behind the shutters only scatter arrives (0.1 % here): white, and left out of the display window."""
    # The heel effect: the tube's output falls off along one direction of the field (up to 25 %).
    direction = rng.uniform(0.0, 2 * np.pi)
    heel = 1.0 + rng.uniform(0.0, 0.25) * ((ROWS * np.sin(direction) + COLS * np.cos(direction)) / SIZE - 0.5)
    photons = rng.uniform(3e3, 3e4) * heel * np.exp(-WATER_MU * np.clip(line_integral, 0.0, None))
    photons *= np.where(exposed, 1.0, 1e-3)
    noisy = np.maximum(photons + rng.standard_normal(photons.shape).astype(np.float32) * np.sqrt(photons), 0.5)
    noisy = ndimage.gaussian_filter(noisy, rng.uniform(0.4, 1.2))
    log_image = -np.log(noisy / photons.max())  # back to attenuation: bones bright
    # The window spans the image's own range, so the unattenuated background keeps its heel gradient.
    low, high = np.percentile(log_image[exposed], [0.1, 99.5])
    high *= rng.uniform(0.95, 1.1)
    shown = np.clip((log_image - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return (shown * 255.0).astype(np.float32)
