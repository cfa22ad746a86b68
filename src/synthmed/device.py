"""Which torch device a process computes on, and in which precision: shared by training (the
generators) and evaluation (the classifier)."""

from __future__ import annotations

from typing import Literal

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs faster than float32 on ``device``.

    A GPU that supports bfloat16; a CPU with AVX-512 BF16 or AMX, whose oneDNN kernels trained
    the classifier's DenseNet-121 1.3x as fast as float32 here. Elsewhere a CPU emulates bfloat16:
    10-20x slower than float32 (measured with oneDNN held to AVX2, ``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # oneDNN's own ISA check
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_bf16(choice: bool | Literal["auto"], device: torch.device) -> bool:
    """A ``bf16`` key's value on ``device``: ``auto`` is bfloat16 exactly where it is fast."""
    return bf16_is_fast(device) if choice == "auto" else bool(choice)
