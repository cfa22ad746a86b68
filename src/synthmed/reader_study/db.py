"""The study's private SQLite database: images, the answer key, readers and their answers.

Everything that matters lives here and nowhere in server memory, so a restarted server carries
on where it stopped. The journal is WAL (answers commit while other requests read) with
``synchronous=FULL`` (a committed answer survives a crash of the machine, not only of the
server). Every answer is one ``BEGIN IMMEDIATE`` transaction; the primary key (reader, image)
makes a double submit a no-op instead of a second row. Tokens are kept as SHA-256 hashes only:
a copy of the database hands out no working link. Only this module writes SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from synthmed._io import atomic_path
from synthmed.errors import ReaderStudyError

DB_NAME = "study.sqlite"
LABELS = ("real", "synthetic")
AnswerStatus = Literal["recorded", "duplicate", "conflict", "unknown image"]

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id TEXT PRIMARY KEY, png BLOB NOT NULL);
CREATE TABLE answer_key (
    image_id TEXT PRIMARY KEY REFERENCES images(id),
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    store_index INTEGER NOT NULL,
    combination TEXT NOT NULL
);
CREATE TABLE readers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    order_seed INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE assignments (
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images(id),
    PRIMARY KEY (reader_id, position),
    UNIQUE (reader_id, image_id)
);
CREATE TABLE answers (
    reader_id INTEGER NOT NULL,
    image_id TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('real', 'synthetic')),
    answered_at TEXT NOT NULL,
    PRIMARY KEY (reader_id, image_id),
    FOREIGN KEY (reader_id, image_id) REFERENCES assignments(reader_id, image_id)
);
"""
TABLES = set(re.findall(r"CREATE TABLE (\w+)", SCHEMA))  # what a whole study database holds
# the parameters that the analysis reports and the admin page shows: a study without one of them is damaged
META_KEYS = ("resolution", "fold", "seed", "n_real", "n_synthetic", "label_names", "created", "real_store",
             "synthetic_store")


@dataclass(frozen=True)
class KeyedImage:
    """One study image as created: opaque id, PNG bytes and (private) where it came from."""

    id: str
    png: bytes
    truth: str
    store_index: int
    combination: str


@dataclass(frozen=True)
class Reader:
    id: int
    name: str


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_token() -> str:
    """An unguessable link token (192 bits)."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def study_database(study: str | os.PathLike) -> Path:
    """The database of a study directory; a clear error when there is none."""
    path = Path(study) / DB_NAME
    if not path.is_file():
        raise ReaderStudyError(f"not a reader study (no {DB_NAME}); make one with `synthmed reader-study create`", file=study)
    return path


def open_study(study: str | os.PathLike) -> sqlite3.Connection:
    """A connection to a study's database, checked first (``checked_database``)."""
    return connect(checked_database(study))


def checked_database(study: str | os.PathLike) -> Path:
    """The database of a study directory, checked whole: a damaged file (truncated, emptied) is one error
    naming it, not an SQL error at the first query that reaches the damage."""
    path = study_database(study)
    with open(path, "rb") as file:
        if file.read(16) != b"SQLite format 3\x00":  # an emptied or overwritten file
            raise ReaderStudyError("is damaged (not an SQLite database); restore it from a backup", file=path)
    # With a -wal file beside it, a server may be writing (or was killed mid-checkpoint): read through SQLite's
    # locks and log. Without one, read the file as it lies (immutable), making no -wal or -shm file beside it.
    mode = "ro" if path.with_name(path.name + "-wal").exists() else "ro&immutable=1"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        problems, tables = [str(error)], set()
    if problems != ["ok"]:
        raise _damaged(path, problems[0])
    if not TABLES <= tables:
        raise _damaged(path, f"tables missing: {sorted(TABLES - tables)}")
    return path


def _damaged(path: str | os.PathLike, problem: str) -> ReaderStudyError:
    return ReaderStudyError(f"is damaged ({problem}); restore it from a backup", file=path)


def _damaged_content(conn: sqlite3.Connection, problem: str) -> ReaderStudyError:
    """What the schema cannot guard (a row deleted, a value edited with the CHECKs off) is found only when read,
    where just the connection is at hand: SQLite knows its file."""
    return _damaged(conn.execute("PRAGMA database_list").fetchone()[2], problem)


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit (``transaction``).

    ``check_same_thread`` is off because the server's writing connection is used by whichever
    worker thread runs the current write; it is never used by two threads at once.
    """
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE``: take the write lock up front so that a read-then-write cannot race."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def write_study(path: Path, meta: dict[str, Any], images: Sequence[KeyedImage], admin_token: str) -> None:
    """Create the database in a temporary file and move it into place: a study is all there or absent."""
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # the answer key: readable by the study's owner only
        conn = connect(tmp)
        try:
            conn.executescript(SCHEMA)
            with transaction(conn):
                rows = {**meta, "admin_token_hash": hash_token(admin_token)}
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
                conn.executemany("INSERT INTO images VALUES (?, ?)", [(i.id, i.png) for i in images])
                conn.executemany("INSERT INTO answer_key VALUES (?, ?, ?, ?)",
                                 [(i.id, i.truth, i.store_index, i.combination) for i in images])
            conn.execute("PRAGMA journal_mode = WAL")  # persistent in the file header
        finally:
            conn.close()


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """The study's parameters (without the admin token hash); a missing or unreadable one is a damaged study."""
    rows = dict(conn.execute("SELECT name, value FROM meta WHERE name != 'admin_token_hash'").fetchall())
    if missing := [name for name in META_KEYS if name not in rows]:
        raise _damaged_content(conn, f"meta {missing[0]!r} missing")
    return {name: _meta_value(conn, name, value) for name, value in rows.items()}


def _meta_value(conn: sqlite3.Connection, name: str, value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):  # not JSON, or not even text
        raise _damaged_content(conn, f"meta {name!r} is not JSON: {value!r}") from None


def is_admin(conn: sqlite3.Connection, token: str) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE name = 'admin_token_hash'").fetchone()
    return row is not None and hmac.compare_digest(_meta_value(conn, "admin_token_hash", row[0]), hash_token(token))


def add_reader(conn: sqlite3.Connection, name: str) -> str:
    """Register a reader with their own shuffled order of all images; returns their link token.

    The order is seeded from the study seed and the reader's number, so it can be reproduced;
    it says nothing about the classes because the images are shuffled by their random ids.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise ReaderStudyError("a reader name must have 1 to 100 characters", field="name")
    if not name.isprintable():  # a line break or control character would break the one-line lists and CSV rows
        raise ReaderStudyError(f"a reader name must be printable text, without line breaks, tabs or other control "
                               f"characters: got {name!r}", field="name")
    token = new_token()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM readers WHERE name = ?", (name,)).fetchone():
            raise ReaderStudyError(f"there is already a reader named {name!r}; choose another name", field="name")
        seed = int(read_meta(conn)["seed"])
        number = conn.execute("SELECT COUNT(*) FROM readers").fetchone()[0] + 1
        order_seed = seed * 1_000_003 + number
        cursor = conn.execute("INSERT INTO readers (name, token_hash, order_seed, created) VALUES (?, ?, ?, ?)",
                              (name, hash_token(token), order_seed, now()))
        ids = [row[0] for row in conn.execute("SELECT id FROM images ORDER BY id")]
        random.Random(order_seed).shuffle(ids)
        conn.executemany("INSERT INTO assignments VALUES (?, ?, ?)",
                         [(cursor.lastrowid, position, image_id) for position, image_id in enumerate(ids)])
    return token


def reader_for_token(conn: sqlite3.Connection, token: str) -> Reader | None:
    row = conn.execute("SELECT id, name FROM readers WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return Reader(*row) if row else None


def current_image(conn: sqlite3.Connection, reader_id: int) -> str | None:
    """The first image in the reader's order without an answer: where they resume."""
    row = conn.execute(
        "SELECT a.image_id FROM assignments a LEFT JOIN answers x ON x.reader_id = a.reader_id "
        "AND x.image_id = a.image_id WHERE a.reader_id = ? AND x.image_id IS NULL ORDER BY a.position LIMIT 1",
        (reader_id,)).fetchone()
    return row[0] if row else None


def progress(conn: sqlite3.Connection, reader_id: int) -> tuple[int, int]:
    """(answered, total) for one reader."""
    answered = conn.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM assignments WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    return answered, total


def image_png(conn: sqlite3.Connection, reader_id: int, image_id: str) -> bytes | None:
    """The PNG of an image assigned to this reader (every reader gets every image)."""
    row = conn.execute("SELECT i.png FROM images i JOIN assignments a ON a.image_id = i.id "
                       "WHERE a.reader_id = ? AND i.id = ?", (reader_id, image_id)).fetchone()
    return row[0] if row else None


def record_answer(conn: sqlite3.Connection, reader_id: int, image_id: str, label: str) -> AnswerStatus:
    """Store one answer in its own transaction. Answers are final: a repeat of the same answer is
    a ``duplicate`` (harmless, e.g. a double click), a different one a ``conflict``."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    with transaction(conn):
        if not conn.execute("SELECT 1 FROM assignments WHERE reader_id = ? AND image_id = ?",
                            (reader_id, image_id)).fetchone():
            return "unknown image"
        inserted = conn.execute("INSERT INTO answers VALUES (?, ?, ?, ?) ON CONFLICT (reader_id, image_id) DO NOTHING",
                                (reader_id, image_id, label, now())).rowcount
        if inserted:
            return "recorded"
        existing = conn.execute("SELECT label FROM answers WHERE reader_id = ? AND image_id = ?",
                                (reader_id, image_id)).fetchone()[0]
    return "duplicate" if existing == label else "conflict"


def readers_progress(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per reader: name, answered, total and the time of the last answer (for the admin view)."""
    rows = conn.execute(
        "SELECT r.name, (SELECT COUNT(*) FROM answers x WHERE x.reader_id = r.id), "
        "(SELECT COUNT(*) FROM assignments a WHERE a.reader_id = r.id), "
        "(SELECT MAX(answered_at) FROM answers x WHERE x.reader_id = r.id) FROM readers r ORDER BY r.id").fetchall()
    return [{"name": name, "answered": answered, "total": total, "last_answer": last}
            for name, answered, total, last in rows]


def keyed_answers(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(reader name, truth, label) for every answer: the analysis's input, joined with the key; a truth or label
    other than real or synthetic (written with the CHECKs off) is a damaged study."""
    rows = conn.execute("SELECT r.name, k.truth, x.label FROM answers x JOIN readers r ON r.id = x.reader_id "
                        "JOIN answer_key k ON k.image_id = x.image_id ORDER BY r.id").fetchall()
    for _, truth, label in rows:
        for column, value in (("answer_key truth", truth), ("answers label", label)):
            if value not in LABELS:
                raise _damaged_content(conn, f"{column} {value!r} is not one of {LABELS}")
    return rows
