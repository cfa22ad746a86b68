"""Atomic file writes (a reader sees the old file or the whole new one, never half of it), and the
readers of synthmed's own and the user's JSON, YAML and .npz files, which name a damaged file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from synthmed.errors import DataError, UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, data: Any) -> None:
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_with_atomic(target: str | os.PathLike, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``target``.

    ``suffix`` keeps the extension for libraries that infer the format from it.
    """
    with atomic_path(target, suffix=suffix) as tmp:
        writer(tmp)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """One of synthmed's JSON files (each holds an object); a damaged one is a DataError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise DataError(f"is damaged: not valid JSON ({failure})", file=path) from None
    except OSError as failure:  # a folder where the file should be, no permission to read it
        raise DataError(f"cannot be read ({failure.strerror or failure})", file=path) from None
    if not isinstance(data, dict):
        raise DataError(f"is damaged: it holds a JSON {type(data).__name__}, not an object", file=path)
    return data


@contextmanager
def damaged_json(path: str | os.PathLike, reader: str) -> Iterator[None]:
    """Around code that reads many keys of a JSON file's content (hand-edited, or from another version): a missing
    key or a value of the wrong kind is a DataError naming the file, not a traceback. Keep the block to that
    reading: any KeyError, TypeError, AttributeError or ValueError in it is taken for damage."""
    try:
        yield
    except UserError:
        raise  # already says what and where (a UserError is a ValueError)
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # ValueError: f"{'abc':.2f}"
        raise DataError(f"is damaged: {reader} cannot read it ({type(error).__name__}: {error})", file=path) from None


# what numpy raises for an .npz cut short or damaged: zlib.error from a compressed member
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def open_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    """An .npz archive opened for ``read_npz_member``; a file that is none is a DataError naming it."""
    # numpy reads anything that is not a zip archive as a pickle and would call a text file "pickled data"
    if not zipfile.is_zipfile(path):
        raise DataError("is not a .npz file (a zip archive of arrays, as numpy.savez writes), or is cut short",
                        file=path)
    try:
        return np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as error:
        raise DataError(f"cannot read the .npz file: {error}", file=path) from None


def read_npz_member(archive: np.lib.npyio.NpzFile, key: str, path: str | os.PathLike) -> np.ndarray:
    """One array of an .npz, read now: a member cut short, pickled (objects) or not an array is named."""
    try:
        value = archive[key]
    except _NPZ_ERRORS as error:
        # an object array: numpy refuses to unpickle it, and so do we
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise DataError("holds Python objects (an object array), not numbers", file=path, field=key) from None
        raise DataError(f"cannot be read: {error}", file=path, field=key) from None
    if not isinstance(value, np.ndarray):  # a member that is not a .npy file comes back as its bytes
        raise DataError("is not a numpy array (.npy) inside the .npz", file=path, field=key)
    return value


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as a float as YAML 1.2 does (YAML 1.1 wants ``1.0e-4``,
    so a learning rate written the way every paper writes it would arrive as a string)."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """Every YAML synthmed reads (presets, configs, ``--set`` values) goes through here."""
    return yaml.load(text, Loader=_Yaml12Floats)
