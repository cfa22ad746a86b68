"""Where a process computes and in which precision (``synthmed.device``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from synthmed import device as device_module
from synthmed.device import bf16_is_fast, resolve_bf16

CPU, GPU = torch.device("cpu"), torch.device("cuda:0")


def test_bf16_auto_is_float32_where_onednn_has_no_bfloat16_kernels():
    """Held to AVX2, oneDNN emulates bfloat16, 10-20x slower than float32 on this machine: auto must not pick it."""
    code = "import torch; from synthmed.device import resolve_bf16; print(resolve_bf16('auto', torch.device('cpu')))"
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


@pytest.fixture
def fresh_bf16_check():
    bf16_is_fast.cache_clear()
    yield
    bf16_is_fast.cache_clear()


@pytest.mark.parametrize("onednn, capabilities, fast", [
    (True, {"avx512_bf16": True}, True),  # AMD Zen 4, Intel Cooper Lake
    (True, {"amx_bf16": True}, True),  # Intel Sapphire Rapids
    (True, {"avx512_f": True}, False),  # Skylake-X: AVX-512 but no bfloat16 instructions
    (False, {"avx512_bf16": True}, False),  # oneDNN held below them (ONEDNN_MAX_CPU_ISA)
    (None, {"avx512_bf16": True}, False),  # a torch built without oneDNN's op
])
def test_bf16_is_fast_on_a_cpu_exactly_with_onednn_and_bfloat16_instructions(onednn, capabilities, fast, monkeypatch,
                                                                              fresh_bf16_check):
    def onednn_check() -> bool:
        if onednn is None:
            raise AttributeError("_is_mkldnn_bf16_supported")
        return onednn

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", onednn_check, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert bf16_is_fast(CPU) is fast


@pytest.mark.parametrize("capability, fast", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_is_fast_on_a_gpu_from_ampere_on(capability, fast, monkeypatch, fresh_bf16_check):
    """V100 (7.0) and T4 (7.5) emulate bfloat16; A100 (8.0) and H100 (9.0) have its units."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
    assert bf16_is_fast(GPU) is fast
    assert bf16_is_fast(torch.device("meta")) is False


def test_bf16_true_and_false_are_taken_as_given_and_auto_asks_whether_it_is_fast(monkeypatch):
    for fast in (True, False):
        monkeypatch.setattr(device_module, "bf16_is_fast", lambda device, fast=fast: fast)
        assert [resolve_bf16(choice, CPU) for choice in (True, False, "auto")] == [True, False, fast]
