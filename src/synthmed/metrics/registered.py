"""Closest images under small registrations: a shifted, cropped-and-resized or contrast-changed copy of an
image stays close to it.

Plain 1 - Pearson r on pixels is blind to brightness and contrast but not to geometry: at 32 px a copy
shifted by 2 pixels is as far from its source (1 - r near 0.3 on br35h) as another patient's image.
Copy detection therefore matches templates: normalised cross-correlation maximised over where the
template may sit (OpenCV's ``matchTemplate`` with ``TM_CCOEFF_NORMED``; learned copy detectors such as
SSCD are trained for the same invariances instead). Here, for each of a few zooms and whole-pixel shifts,
the image that is magnified relative to the other (the reference for a zoom above 1, the query below 1)
is resampled bilinearly onto the other's pixel grid, as a crop-and-resize would have made it, and the two
are compared by Pearson r over the pixels where the resampled image has content (its overlap), all
channels together. Upsampling only: shrinking one image would blur it and a resampled copy would no
longer match its source. The overlap, not padding: a padded border (edge, zeros or a reflection) is
made-up content that a copier may have filled differently. The overlap is the same rectangle for every
pair at a given registration, so each registration is one exact search of
``metrics.knn.nearest_neighbours`` and the distance is the minimum over the registrations: the cost is
that of the plain search times their number.

``blur`` > 0 smooths both overlaps by a Gaussian of that many pixels (scipy's ``gaussian_filter``, edges
repeated) before they are compared, so that pixel noise does not hide a copy. On the overlap, not on the
whole images: smoothing first would mix the content beyond the overlap into its edge pixels, and an
exactly shifted copy would no longer be at distance 0 from its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from synthmed.metrics.knn import BLOCK, nearest_neighbours
from synthmed.progress import progress_bar


class Registration(NamedTuple):
    """The query's content magnified ``zoom`` times relative to the reference's, and shifted by ``shift``
    (rows, columns) whole pixels of the image that is resampled."""

    zoom: float
    shift: tuple[int, int]


def registrations(shape: tuple[int, int], max_shift: float, max_scale: float) -> list[Registration]:
    """The registrations tried for images of ``shape`` (rows, columns), the identity first: shifts of up to
    ``max_shift`` times the shorter side along each axis, in whole pixels, at zooms 1 / ``max_scale``, 1
    and ``max_scale``."""
    t = round(max_shift * min(shape))
    shifts = sorted(((dy, dx) for dy in range(-t, t + 1) for dx in range(-t, t + 1)), key=lambda s: s != (0, 0))
    zooms = (1.0, 1 / max_scale, max_scale) if max_scale > 1 else (1.0,)
    return [Registration(zoom, shift) for zoom in zooms for shift in shifts]


def _positions(side: int, zoom: float, shift: int) -> tuple[torch.Tensor, slice]:
    """Where each pixel of a grid of ``side`` pixels falls in an image ``zoom`` times larger (zoom >= 1),
    centre to centre plus ``shift`` of its pixels, as grid_sample's coordinates (-1 and 1 the outer edges,
    align_corners=False), and the range of the grid's pixels that fall on the image's content."""
    centre = (side - 1) / 2
    u = (np.arange(side) - centre) / zoom + centre + shift  # in the magnified image's pixels
    inside = np.flatnonzero((u >= -1e-9) & (u <= side - 1 + 1e-9))  # bilinear between two real pixels
    rows = slice(int(inside[0]), int(inside[-1]) + 1) if len(inside) else slice(0, 0)
    return torch.from_numpy((2 * u + 1) / side - 1).float(), rows


def _resampled(images: np.ndarray, zoom: float, shift: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``images`` magnified ``zoom`` (>= 1) times about their centre plus ``shift`` of their own pixels, on
    their own grid, and the rows and columns where they have content."""
    (y, rows), (x, cols) = (_positions(side, zoom, s) for side, s in zip(images.shape[2:], shift))
    if zoom == 1:  # whole pixels: the values themselves, no interpolation
        out = np.zeros_like(images)
        out[:, :, rows, cols] = images[:, :, rows.start + shift[0]:rows.stop + shift[0],
                                       cols.start + shift[1]:cols.stop + shift[1]]
        return out, (rows, cols)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # (H, W, 2): x then y
    out = F.grid_sample(torch.from_numpy(images), grid.expand(len(images), *grid.shape), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.numpy(), (rows, cols)


def _centred(x: np.ndarray, blur: float) -> np.ndarray:
    """Images (smoothed by ``blur`` pixels) as rows, each minus its mean: the cosine distance of two such
    rows is 1 - Pearson r."""
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(0, 0, blur, blur), mode="nearest")
    rows = x.reshape(len(x), -1).astype(np.float64)
    return rows - rows.mean(axis=1, keepdims=True)


def registered_pairs(queries: np.ndarray, references: np.ndarray, max_shift: float, max_scale: float,
                     blur: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per registration (``registrations``), the query and reference images as centred float64 rows of
    the pixels they share, each overlap smoothed by ``blur`` pixels: the cosine distance of two such rows
    is their 1 - Pearson r there. Images are (N, C, H, W) arrays of one shape, checked when called (not at the
    first pair)."""
    queries, references = np.asarray(queries, dtype=np.float32), np.asarray(references, dtype=np.float32)
    if queries.ndim != 4 or queries.shape[1:] != references.shape[1:] or not len(queries) or not len(references):
        raise ValueError(f"queries and references must be non-empty (N, C, H, W) images of one shape, "
                         f"got {queries.shape} and {references.shape}")
    return _pairs(queries, references, registrations(queries.shape[2:], max_shift, max_scale), blur)


def _pairs(queries: np.ndarray, references: np.ndarray, tried: list[Registration],
           blur: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for zoom, shift in tried:
        if zoom >= 1:  # the query shows the reference magnified: the reference is resampled onto the query's grid
            moved, (rows, cols) = _resampled(references, zoom, shift)
            yield _centred(queries[:, :, rows, cols], blur), _centred(moved[:, :, rows, cols], blur)
        else:
            moved, (rows, cols) = _resampled(queries, 1 / zoom, shift)
            yield _centred(moved[:, :, rows, cols], blur), _centred(references[:, :, rows, cols], blur)


def registered_nearest(queries: np.ndarray, references: np.ndarray, max_shift: float, max_scale: float,
                       blur: float = 0.0, block: int = BLOCK, progress: bool = False,
                       step: str = "") -> tuple[np.ndarray, np.ndarray]:
    """For every query image, the smallest 1 - Pearson r to a reference image over ``registrations``,
    compared on the overlap (smoothed by ``blur`` pixels), and that reference's index: ``(distances (Q,),
    indices (Q,))``. On equal distances the earlier registration (the identity first) and then the lower
    index win. With ``progress``, a bar counting the registrations searched, its title led by ``step`` (the
    caller's name for this search) when given."""
    best_d, best_i = np.full(len(queries), np.inf), np.zeros(len(queries), np.int64)
    pairs = registered_pairs(queries, references, max_shift, max_scale, blur)  # refuses other input here
    total = len(registrations(np.shape(queries)[2:], max_shift, max_scale))
    title = f"{step + ': ' if step else ''}pixel search, {len(queries)} against {len(references)} images"
    with progress_bar(total, title, progress) as bar:
        for q, r in pairs:
            d, i = nearest_neighbours(q, r, block=block)
            closer = d[:, 0] < best_d
            best_d[closer], best_i[closer] = d[closer, 0], i[closer, 0]
            bar.advance()
    return best_d, best_i
