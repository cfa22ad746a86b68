"""The error types for bad user input, one root for all of them.

Each layer raises its own kind (the data layer a `DataError`, a configuration a `ConfigError`,
the reader study a `ReaderStudyError`); the CLI catches `UserError` and prints one line with
exit status 2. Anything that is not a `UserError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message says what and where, in one line.

    A `ValueError` so that code written against the standard library's convention still
    catches it.
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


class DataError(UserError):
    """Bad input data: a store, image, table or setting; names the file, and the row or field."""


class ConfigError(UserError):
    """A configuration or option that cannot run (training, classifier, benchmark, privacy); names the key."""


class ReaderStudyError(UserError):
    """A reader-study request that cannot be served (unknown study, reader name taken, nothing finished)."""
