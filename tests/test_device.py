"""Where a process computes and in which precision (``synthmed.device``)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from synthmed.device import bf16_is_fast, resolve_bf16


def test_bf16_auto_is_float32_where_onednn_has_no_bfloat16_kernels():
    """Held to AVX2, oneDNN emulates bfloat16, 10-20x slower than float32 on this machine: auto must not pick it."""
    code = "import torch; from synthmed.device import resolve_bf16; print(resolve_bf16('auto', torch.device('cpu')))"
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_bf16_true_and_false_are_taken_as_given_and_auto_asks_the_device():
    cpu = torch.device("cpu")
    assert resolve_bf16(True, cpu) is True and resolve_bf16(False, cpu) is False
    assert resolve_bf16("auto", cpu) is bf16_is_fast(cpu)
    assert bf16_is_fast(torch.device("meta")) is False
