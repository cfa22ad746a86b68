"""Shared fixtures: small stores and settings made on the fly (their helpers are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import array_source, one_setting
from synthmed.data.store import Store, prepare


@pytest.fixture
def tiny_store(tmp_path: Path) -> Store:
    """60 grey images at 8 and 16 px, two labels, two images per patient."""
    return prepare(array_source(), tmp_path / "store", resolutions=[8, 16], workers=1, progress=False,
                   log=lambda message: None)


@pytest.fixture
def tiny_setting(tiny_store: Store, tmp_path: Path) -> Path:
    """Every row of ``tiny_store`` in one 16 px setting."""
    return one_setting(tiny_store, tmp_path / "settings", 16)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): small forward
    passes on a shared 2-core machine stall in OpenMP waits otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
