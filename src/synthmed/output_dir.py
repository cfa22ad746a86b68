"""The one rule for a command's output folder (``--out``), checked before any work is done.

``check_output_path``: the folder can be made or filled (it is not a file, does not lie under a
file, and its nearest existing folder can be written). ``claim_output_dir``: what an existing
folder may hold: the same result (nothing to do), another result (replaced only with
``--overwrite``; a run is continued with ``--resume`` instead), or nothing else. ``staged_dir``:
a whole folder is written beside ``out`` and swapped in, so ``out`` is never half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from synthmed.errors import DataError, UserError


def is_folder_name(name: str) -> bool:
    """Whether ``name`` names one folder inside another: not empty, '.' or '..', without a separator (so
    nothing outside, nor an absolute path) or a control character (a name no one can type)."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and name.isprintable()


def check_output_path(path: str | os.PathLike, option: str = "--out",
                      error: type[UserError] = DataError, staged: bool = True) -> Path:
    """``path`` as a Path, or a one-line ``error`` naming ``option`` and the path when no folder can go there.
    ``staged``: the result is written beside ``path`` and swapped in (``staged_dir``), so ``path`` needs a name
    and its parent must be writable; a folder written in place (an evaluation, a benchmark) needs neither."""
    path = Path(path)
    where = f"{option} {path}"
    if staged and path.name in ("", ".", ".."):  # Path(".").name is "": the copy beside it would have no name
        raise error(f"names no folder of its own; give one, e.g. {option} {Path(path, 'out')}", file=where)
    if path.exists() and not path.is_dir():
        raise error("is a file, not a folder", file=where)
    # the folder itself is written, and with ``staged`` a copy beside it is renamed onto it
    places = (path, path.parent) if staged else (path,)
    for folder in dict.fromkeys(_nearest_existing(place) for place in places):
        _check_writable(folder, where, error)
    return path


def check_output_file(path: str | os.PathLike, hint: str, option: str = "--out",
                      error: type[UserError] = DataError) -> Path:
    """``path`` as a Path when a file can be written there (``hint`` says what to give instead of a folder)."""
    path = Path(path)
    where = f"{option} {path}"
    if path.is_dir():  # also '' and '.'
        raise error(f"is a folder; {hint}", file=where)
    _check_writable(_nearest_existing(path.parent), where, error)  # the folders not there yet are made
    return path


def _check_writable(folder: Path, where: str, error: type[UserError]) -> None:
    """``folder`` (an existing path) is a folder a file can be made in."""
    if not folder.is_dir():
        raise error(f"lies under {folder}, which is a file, not a folder", file=where)
    try:  # a real test, not os.access: that says yes to root for any folder
        with tempfile.TemporaryFile(dir=folder):  # on Linux an unnamed file: nothing shows up in the folder
            pass
    except OSError as failure:
        raise error(f"cannot be written ({folder}: {failure.strerror or failure})", file=where) from None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def claim_output_dir(path: str | os.PathLike, marker: str, what: str, *, same: Callable[[], bool] | None = None,
                     overwrite: bool = False, if_taken: str = "pass --overwrite to replace it",
                     option: str = "--out", error: type[UserError] = DataError, staged: bool = True) -> bool:
    """Whether ``path`` already holds this very result (True: nothing to do).

    A folder whose ``marker`` file says it holds ``what``: the same result when ``same()``
    says so; another one is refused with ``if_taken`` unless ``overwrite``. A folder with other
    files is always refused: it is not ours to replace.
    """
    path = check_output_path(path, option, error, staged)
    if (path / marker).is_file():
        if same is not None and same():
            return True
        if overwrite:
            return False
        built = " made from other inputs" if same is not None else ""
        raise error(f"already holds {what}{built}; {if_taken}", file=f"{option} {path}")
    if path.exists() and any(path.iterdir()):
        raise error(f"exists, is not empty and is not {what} (no {marker}); choose another {option}", file=f"{option} {path}")
    return False


@contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to write into; on success it replaces ``out``, else it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def move_into_place(partial: Path, out: Path) -> None:
    """Swap a finished folder in; an old folder at ``out`` is removed only after the swap."""
    if out.exists():
        # a fresh hidden name: a fixed one (OUT.old) could be a folder of the user's, deleted unasked
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        try:
            os.replace(out, retired)  # replaces the empty folder just made
        except OSError:
            retired.rmdir()
            raise
        try:
            os.replace(partial, out)
        except OSError:
            os.replace(retired, out)  # the old result back where it was
            raise
        shutil.rmtree(retired)
    else:
        os.replace(partial, out)
