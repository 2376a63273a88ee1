"""Alembic environment: runs migrations on the connection edgewatch hands over.

``agent.storage.migrate`` passes an open connection in ``config.attributes``; the
``alembic`` command line (developers only) falls back to ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from agent.schema import metadata


def _run(connection: Connection) -> None:
    # SQLite can only change most table properties by rebuilding the table:
    # batch mode does that for every ALTER.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url given to Alembic")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("edgewatch migrations run online only")
run_migrations_online()
