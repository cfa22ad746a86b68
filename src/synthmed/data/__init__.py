"""The data layer: sources -> store -> splits -> benchmark settings.

The functions here mirror ``synthmed data ...`` one to one::

    from synthmed import data
    store = data.prepare_source("br35h", "runs/br35h/store", resolutions=[32, 64])
    print(data.describe(store))
    data.build_settings("br35h", store, "runs/br35h/settings")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synthmed.data.overview import describe, write_grids
from synthmed.data.settings import (
    BenchmarkSetting,
    build_settings,
    load_preset,
    plan_settings,
    preset_names,
)
from synthmed.data.sources import SOURCES, load_source, source_options
from synthmed.data.store import Store, prepare
from synthmed.errors import DataError


def prepare_source(
    source: str, out: str | os.PathLike, root: str | Path | None = None, options: dict[str, Any] | None = None,
    **prepare_options: Any,
) -> Store:
    """Read a source by name (``br35h``, ``chexpert``, ``rsna-ich``, ``medmnist``, ``folder``) into a store."""
    return prepare(load_source(source, root, **(options or {})), out, **prepare_options)


__all__ = [
    "SOURCES", "BenchmarkSetting", "DataError", "Store", "build_settings", "describe", "load_preset",
    "load_source", "plan_settings", "prepare", "prepare_source", "preset_names", "source_options", "write_grids",
]
