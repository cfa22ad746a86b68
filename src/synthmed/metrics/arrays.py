"""Feature matrices as the metrics take them: numpy arrays or torch tensors of shape (N, D), used as float64."""

from __future__ import annotations

import numpy as np
import torch

Features = np.ndarray | torch.Tensor


def as_matrix(name: str, x: Features) -> np.ndarray:
    """``x`` as a non-empty float64 (N, D) array; a tensor is copied off its device first."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    return x
