"""Which torch device a process computes on: shared by training (the generators) and evaluation (the classifier)."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)
