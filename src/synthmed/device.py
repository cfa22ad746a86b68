"""Which torch device a process computes on, and in which precision: shared by training (the
generators) and evaluation (the classifier)."""

from __future__ import annotations

import functools
from typing import Literal

import torch

from synthmed.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def usable_device(name: str, what: str) -> torch.device:
    """``resolve_device(name)``, tried with an empty tensor there, so that an unknown or absent device
    fails before anything is written; the error starts with ``what`` (e.g. ``"--device 'cuda'"``)."""
    try:
        device = resolve_device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, TypeError) as error:
        raise ConfigError(f"{what} cannot be used here: {str(error).splitlines()[0]} "
                          "(use auto, cpu, cuda or cuda:N)") from None
    return device


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs faster than float32 on ``device``: a GPU with bfloat16 units
    (compute capability 8.0, Ampere, and later; older ones emulate it), or a CPU with AVX-512 BF16
    or AMX-BF16 for which oneDNN has bfloat16 kernels. There the classifier's DenseNet-121 trained
    1.3x as fast as in float32; a CPU without them emulates bfloat16, 10-20x slower than float32
    (measured with oneDNN held to AVX2, ``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # oneDNN's own check, which also honours ONEDNN_MAX_CPU_ISA
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without the op
        return False
    capabilities = torch.cpu.get_capabilities()
    return onednn_bf16 and bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolve_bf16(choice: bool | Literal["auto"], device: torch.device) -> bool:
    """A ``bf16`` key's value on ``device``: ``auto`` is bfloat16 exactly where it is fast."""
    return bf16_is_fast(device) if choice == "auto" else bool(choice)


def precision_name(bf16: bool) -> str:
    """How logs name a resolved ``bf16``."""
    return "bfloat16" if bf16 else "float32"
