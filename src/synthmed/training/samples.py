"""Turning generator output into images: uint8 quantisation and per-label sample grids."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255, rounded, as a saved image would hold them."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 (a store's images) -> float32 in [-1, 1], the range the generators train and sample in."""
    return images.float() / 127.5 - 1.0


@torch.no_grad()
def sample_grid(sampler: torch.nn.Module, labels: torch.Tensor, seed: int, per_row: int = 8) -> Image.Image:
    """One row per label combination (``per_row`` samples each), first channel, grayscale PNG;
    the same seed draws the same noise, so grids of one run show the same samples improving."""
    images = to_uint8(sampler.sample(labels, torch.Generator().manual_seed(seed)))[:, 0].cpu().numpy()
    rows = len(images) // per_row
    size = images.shape[-1]
    tiles = images[: rows * per_row].reshape(rows, per_row, size, size)
    return Image.fromarray(np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(rows * size, per_row * size)))
