"""CSV helpers shared by the table-driven sources (CheXpert, folder, RSNA).

Row numbers: a table read by ``read_table`` is indexed by the CSV *line number* of each
row, the header being line 1 (so the first data row is line 2). That is the number a user
sees in an editor or spreadsheet, and the index survives filtering, so every error can
say ``row N`` without any bookkeeping. A row with every cell blank (a blank line, ``,,,``)
names no image and is left out, keeping the numbers of the rows after it. (A quoted cell
that spans several lines shifts the count; medical label tables do not have such cells.)

Cells are read as text, never guessed into numbers, so that a label like ``yes`` or
``2`` is reported as written instead of being silently coerced.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from synthmed.errors import DataError

# Spellings of 0 and 1 found in label tables (pandas writes float columns as "1.0").
BINARY: dict[str, int] = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def read_table(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """All cells as stripped strings (blank = ``""``), indexed by CSV line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError("CSV file not found", file=path)
    # blank lines are read as rows (of blank cells): pandas' skipping them would shift every row number after one
    options = {"dtype": str, "keep_default_na": False, "skip_blank_lines": False}
    try:
        # the header as written: pandas would rename a repeated column B to B.1 and a blank one 'Unnamed: 2'
        header = [str(name).strip() for name in pd.read_csv(path, header=None, nrows=1, **options).iloc[0]]
        table = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataError("CSV file is empty or its line 1 is blank (expected a header line, then rows)",
                        file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"cannot parse the CSV file: {error}", file=path) from None
    if "" in header:
        raise DataError(f"column {header.index('') + 1} of the header has no name; name every column",
                        file=path, row=1)
    if repeat := first_repeat(header):
        name, count = repeat
        raise DataError(f"column {name!r} appears {count} times in the header", file=path, row=1, field=name)
    table.columns = [str(name).strip() for name in table.columns]
    for column in required:
        if column not in table.columns:
            raise DataError(f"missing column {column!r}; the header has {list(table.columns)}", file=path, field=column)
    table.index = pd.RangeIndex(2, len(table) + 2, name="line")
    table = table.apply(lambda column: column.str.strip())
    table = table[(table != "").any(axis=1)]
    if table.empty:
        raise DataError("CSV file has a header but no rows", file=path)
    return table


def first_repeat(names: Sequence[str]) -> tuple[str, int] | None:
    """The first name that ``names`` holds more than once, and how many times; None when each is there once."""
    return next(((name, count) for name, count in Counter(names).items() if count > 1), None)


def parse_labels(
    table: pd.DataFrame,
    column: str,
    file: str | Path,
    *,
    values: Mapping[str, int] = BINARY,
    blank: int | None = None,
) -> np.ndarray:
    """One label column as uint8, strictly: every cell must be a key of ``values``.

    ``blank`` is what an empty cell means; ``None`` (the default) makes it an error.
    The error names the first offending row, the column and the value as written.
    """
    cells = table[column]
    mapping = dict(values)
    if blank is not None:
        mapping[""] = blank
    # Look up each distinct spelling once: a label column has a handful of them and
    # CheXpert has 223k rows.
    codes, spellings = pd.factorize(cells, use_na_sentinel=False)
    parsed = np.array([mapping.get(s, -1) for s in spellings], dtype=np.int64)[codes]
    if (parsed < 0).any():
        position = int(np.argmax(parsed < 0))
        value = cells.iloc[position]
        allowed = ", ".join(repr(v) for v in values)
        what = "blank label" if value == "" else f"label value {value!r}"
        raise DataError(
            f"{what} is not allowed: expected one of {allowed}", file=file, row=int(cells.index[position]), field=column
        )
    return parsed.astype(np.uint8)


def resolve_in_root(root: str | Path, value: str, *, file: str | Path, row: int, column: str) -> tuple[Path, str]:
    """The file that a path cell names, and its path relative to ``root`` (posix).

    Relative paths are taken from ``root``; absolute ones are accepted only inside it (as
    given or with symlinks resolved). The check is on the normalised path, so ``a/../../x``
    is refused even if it exists, while symlinks inside the root are followed as they are
    (data sets often link to shared storage). The relative path is canonical: two cells
    naming the same file (``a.png``, ``./a.png``) give the same one.
    """
    if not value:
        raise DataError("blank image path", file=file, row=row, field=column)
    # Plain string operations: pathlib costs ~100 us a row, too much for CheXpert's 190k.
    base = os.path.abspath(root)
    candidate = os.path.normpath(os.path.join(base, value))  # an absolute value replaces base
    relative = _inside(candidate, base)
    if relative is None:
        relative = _inside(candidate, os.path.realpath(root))
    if relative is None:
        raise DataError(f"path {value!r} points outside the data folder {root}", file=file, row=row, field=column)
    # A missing file is not checked here: like an unreadable one, it is skipped when decoded and
    # counted against max_bad_fraction, so one lost file does not stop a 200,000-image prepare.
    return Path(candidate), relative.replace(os.sep, "/")


def _inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` (both normalised), or None when it is not inside."""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else None


def check_unique(values: pd.Series, *, file: str | Path, column: str, what: str = "value") -> None:
    """Refuse repeated values, naming the rows (index = line number) of the first repeat."""
    repeated = values[values.duplicated(keep="first")]
    if not repeated.empty:
        line = int(repeated.index[0])
        first = int(values[values == repeated.iloc[0]].index[0])
        raise DataError(
            f"duplicate {what} {repeated.iloc[0]!r}: rows {first} and {line} name the same one",
            file=file,
            row=line,
            field=column,
        )
