"""Opening the SQLite database with the settings every edgewatch process relies on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from agent.errors import StorageError

BUSY_TIMEOUT_MS = 5000


def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets operators read records while the agent writes; NORMAL keeps commits
    # cheap on SD cards and is still durable across application crashes (a power
    # cut can lose the last commits, never corrupt the file).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _query_only(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only=ON")
    finally:
        cursor.close()


def open_engine(path: Path, *, create: bool = True, read_only: bool = False) -> Engine:
    """An Engine on the database file at ``path`` (parent directory created if allowed).

    ``read_only`` engines refuse every write (``PRAGMA query_only``): the operator
    tools read beside a running agent and must never change its records.

    Raises :class:`StorageError` when the file cannot be opened as SQLite.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise StorageError(
                f"database {path} does not exist",
                hint="run `edgewatch db upgrade` or start the agent once",
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data directory {path.parent}: {exc.strerror}",
                hint="set storage.data_dir to a writable directory",
            ) from None
    engine = create_engine(f"sqlite+pysqlite:///{path}", future=True)
    event.listen(engine, "connect", _on_connect)
    if read_only:
        event.listen(engine, "connect", _query_only)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
    except Exception as exc:
        engine.dispose()
        raise _translate(exc, path) from None
    return engine


def _translate(exc: BaseException, path: Path) -> StorageError:
    original = getattr(exc, "orig", exc)
    text = str(original)
    if isinstance(original, sqlite3.DatabaseError) and "not a database" in text:
        return StorageError(
            f"{path} is not an SQLite database (corrupt or another file)",
            hint="restore it from a backup or move it away to start afresh",
        )
    if "unable to open" in text or isinstance(original, PermissionError):
        return StorageError(
            f"cannot open database {path}: {text}",
            hint="check that the directory exists and is writable by this user",
        )
    return StorageError(f"cannot use database {path}: {text}")
