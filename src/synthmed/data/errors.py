"""The one error type the data layer raises for bad user input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data or configuration.

    The message always names the file, and the row or field where there is one,
    so that the user can fix the input without reading a traceback.
    """

    def __init__(self, message: str, *, file: object = None, row: int | None = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.file = file
        self.row = row
        self.field = field
