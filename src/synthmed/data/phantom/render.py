"""One phantom radiograph: findings, then anatomy variation, then the detector and the site's processing.

Per image, from its own seed: the findings of its label row are added to the atlas's line
integral (each with its mask); the patient varies in size (the line integral scales with
the body's depth), aspect, position, rotation, inspiration depth (each hemidiaphragm moves
and the lungs stretch with it) and shape (a smooth elastic deformation at two scales), all
as one warp of the image and masks; then a soft-tissue field (habitus), the exposure
(photon count, so quantum noise), detector blur, the site's processing (large-scale
contrast partly taken out), the display curve, and burned-in text (laterality marker, view
labels). Masks are warped with the image, so they stay on their finding.

One CT gives every image the same anatomy; these per-image variations are what keep the
64-bit difference hash that groups near-duplicates from joining phantoms (docs/phantom.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from synthmed.data.phantom.atlas import COLS, ROWS, SIZE, Atlas
from synthmed.data.phantom.findings import FINDINGS, METAL_MM, smooth_noise

# Part of every phantom store's fingerprint: change it with anything that changes the pixels or
# masks, so that a store (or a half-made one) from the old renderer is made again, not resumed.
RENDER_VERSION = 3
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
    metal = np.zeros((SIZE, SIZE), bool)
    for j, (name, present) in enumerate(zip(label_names, labels)):
        if present and name in FINDINGS:
            delta, masks[j] = FINDINGS[name](atlas, finding_seeds[j])
            line_integral += delta
            if name == "Support Devices":  # where its wires and can are: denser than anything in a body
                metal |= delta > 0.5 * METAL_MM[0]
    line_integral -= _bowel_gas(atlas, rng)
    line_integral *= rng.uniform(0.85, 1.2)  # body depth

    coordinates = _anatomy_warp(atlas, rng)
    line_integral = ndimage.map_coordinates(line_integral, coordinates, order=1, mode="constant")
    masks = np.stack([_warp_mask(m, coordinates) if m.any() else m for m in masks])
    lung_field = _warp_mask(atlas.lung_field, coordinates)
    metal = _warp_mask(metal, coordinates) if metal.any() else metal

    # soft tissue, breasts, habitus: inside the body only (it fades out where the body gets thin)
    body = np.clip(line_integral / 50.0, 0.0, 1.0)
    line_integral += (smooth_noise(rng, rng.uniform(24.0, 64.0)) - 0.5) * rng.uniform(30.0, 100.0) * body
    pixels = _detector(line_integral, _exposed_field(rng), metal, rng)
    return Phantom(_burned_in_text(pixels, rng), masks, lung_field)


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
    """Source coordinates (2, SIZE, SIZE) of each output pixel: scale, aspect, rotation, shift, inspiration
    (each hemidiaphragm on its own), and a smooth elastic deformation at two scales (hearts, lungs, ribs
    and body outlines differ in shape between people)."""
    scale = rng.uniform(0.8, 1.3)  # framing: from a wide field to a tight collimation
    aspect = rng.uniform(0.85, 1.15)
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    shift_rows, shift_cols = rng.uniform(-0.12, 0.12, size=2) * SIZE
    centre = (SIZE - 1) / 2
    rows, cols = ROWS - centre - shift_rows, COLS - centre - shift_cols
    cos, sin = np.cos(angle), np.sin(angle)
    source_rows = (cos * rows - sin * cols) / (scale * aspect) + centre
    source_cols = (sin * rows + cos * cols) / (scale / aspect) + centre
    # Inspiration: the chest between the lung apices and the diaphragm stretches by ``depth``, and
    # everything below it moves down by as much. The two hemidiaphragms differ by up to a few cm.
    top, bottom = np.nonzero(atlas.lung_field.any(axis=1))[0][[0, -1]]
    right_depth, left_depth = rng.uniform(-0.08, 0.12) + rng.uniform(-0.06, 0.06, size=2)
    midline = float(COLS[0][atlas.lung_field.any(axis=0)].mean())
    to_left = 1.0 / (1.0 + np.exp(-(source_cols - midline) / 12.0))
    depth = right_depth + (left_depth - right_depth) * to_left
    stretched_bottom = top + (bottom - top) * (1 + depth)
    source_rows = np.where(source_rows <= top, source_rows,
                           np.where(source_rows <= stretched_bottom, top + (source_rows - top) / (1 + depth),
                                    source_rows - (stretched_bottom - bottom)))
    for scale_px, amplitude in ((64.0, rng.uniform(8.0, 18.0)), (40.0, rng.uniform(3.0, 8.0))):
        source_rows = source_rows + (smooth_noise(rng, scale_px) - 0.5) * 2 * amplitude
        source_cols = source_cols + (smooth_noise(rng, scale_px) - 0.5) * 2 * amplitude
    return np.stack([source_rows, source_cols]).astype(np.float32)


def _detector(line_integral: np.ndarray, exposed: np.ndarray, metal: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Photon counts with quantum noise, detector blur, then the log image and a display curve.

    Behind the shutters only scatter arrives (0.1 % here): white, and left out of the display window.
    Metal (devices' wires and cans) is left out of the processing too, as vendors' histogram analysis
    does, so that it shows white without darkening the anatomy around it."""
    # The heel effect: the tube's output falls off along one direction of the field (up to 25 %).
    direction = rng.uniform(0.0, 2 * np.pi)
    heel = 1.0 + rng.uniform(0.0, 0.25) * ((ROWS * np.sin(direction) + COLS * np.cos(direction)) / SIZE - 0.5)
    photons = rng.uniform(3e3, 3e4) * heel * np.exp(-WATER_MU * np.clip(line_integral, 0.0, None))
    photons *= np.where(exposed, 1.0, 1e-3)
    noisy = np.maximum(photons + rng.standard_normal(photons.shape).astype(np.float32) * np.sqrt(photons), 0.5)
    noisy = ndimage.gaussian_filter(noisy, rng.uniform(0.4, 1.2))
    log_image = -np.log(noisy / photons.max())  # back to attenuation: bones bright
    anatomy = exposed & ~metal
    log_image = _equalized(log_image, exposed, anatomy, rng)
    # The window spans the image's own range, so the unattenuated background keeps its heel gradient.
    low, high = np.percentile(log_image[anatomy], [0.1, 99.5])
    high *= rng.uniform(0.95, 1.1)
    shown = np.clip((log_image - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return (shown * 255.0).astype(np.float32)


def _equalized(log_image: np.ndarray, exposed: np.ndarray, anatomy: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """The vendor's processing: part of the large-scale contrast (lungs against abdomen) taken out, so that
    both show detail. Strength and kernel vary between sites and devices; the background is the anatomy's
    alone (shutters and metal left out), and it is taken out inside the shutters."""
    sigma = rng.uniform(8.0, 32.0)
    weight = ndimage.gaussian_filter(anatomy.astype(np.float32), sigma) + 1e-6
    background = ndimage.gaussian_filter(log_image * anatomy, sigma) / weight
    return log_image - rng.uniform(0.3, 0.9) * background * exposed


VIEW_LABELS = ("AP", "PA", "PORTABLE", "SUPINE", "ERECT", "UPRIGHT", "SEMI-ERECT")


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size)


def _burned_in_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The laterality marker (a lead letter on the detector, white) near a top corner, and often the site's
    view and position labels along an edge: where and how large differs between sites."""
    ink = Image.new("L", (SIZE, SIZE))
    draw = ImageDraw.Draw(ink)
    corner_col = rng.uniform(4.0, 48.0)
    marker_col = corner_col if rng.random() < 0.5 else SIZE - 24.0 - corner_col
    draw.text((marker_col, rng.uniform(4.0, 64.0)), "L" if rng.random() < 0.5 else "R", fill=255,
              font=_font(int(rng.integers(14, 29))))
    for _ in range(rng.binomial(2, 0.6)):
        label = VIEW_LABELS[rng.integers(len(VIEW_LABELS))]
        row = rng.uniform(4.0, 24.0) if rng.random() < 0.5 else rng.uniform(SIZE - 40.0, SIZE - 20.0)
        draw.text((rng.uniform(4.0, SIZE - 100.0), row), label, fill=255, font=_font(int(rng.integers(9, 17))))
    share = np.asarray(ink, np.float32) / 255.0
    return image * (1.0 - share) + rng.uniform(220.0, 255.0) * share
